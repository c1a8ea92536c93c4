"""The `modelreg` command: run the server, migrate its database, and call it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from modelreg.cli.access import add_access
from modelreg.cli.artifacts import add_artifacts
from modelreg.cli.audit import add_audit
from modelreg.cli.commands import (
    DEFAULT_TARGET,
    EXIT_FAILED,
    EXIT_PARTIAL,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Commands,
    remote_options,
)
from modelreg.cli.importer import add_import
from modelreg.cli.keys import add_keys
from modelreg.cli.lineage import add_lineage, shorthand
from modelreg.cli.models import add_models, add_namespaces
from modelreg.cli.sync import add_sync
from modelreg.cli.versions import add_aliases, add_lookups, add_search, add_versions
from modelreg.cli.watch import add_watch
from modelreg.cli.webhooks import add_webhooks

if TYPE_CHECKING:  # imported when a local command runs: the client commands stay light
    from modelreg.config import Settings

EXIT_INTERRUPTED = 130  # ^C, as shells report SIGINT

EPILOG = f"""\
exit status:
  0  success
  {EXIT_FAILED}  the registry refused the request (`error: CODE: message` on stderr),
     or push/pull could not read or write a file
  {EXIT_USAGE}  bad command line
  {EXIT_UNREACHABLE}  no registry answered at --target
     (env MODELREG_TARGET, default {DEFAULT_TARGET})
  {EXIT_PARTIAL}  batch-get answered, but some references failed: every result is printed,
     each failed one also as `error: REF: CODE: message` on stderr
  {EXIT_INTERRUPTED}  interrupted (^C); run pull again to resume it
"""


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from MODELREG_* variables and the flags given; exit 2 if one is bad."""
    from modelreg.config import ConfigError, Settings

    flags = {"address": None, "home": None, "workers": None} | {
        key: value for key, value in vars(args).items() if key in ("address", "home", "workers")
    }
    try:
        return Settings.from_env(**flags)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _serve(args: argparse.Namespace) -> int:
    from modelreg.server import run

    run(_settings(args))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from modelreg.app import migrate_main

    applied = migrate_main(_settings(args))
    print("\n".join(f"applied {name}" for name in applied) or "up to date")
    return 0


def _settings_help() -> str | None:
    """The variables config.py documents, with their defaults (none under `python -OO`)."""
    from modelreg import config

    variables = (config.__doc__ or "").partition("\n\n")[2]
    return (
        f"settings (environment variables, defaults in brackets):\n{variables}"
        if variables
        else None
    )


def _add_local(commands: Commands) -> None:
    # The defaults shown are Settings' own; the flags default to None so that a variable
    # set in the environment still applies when the flag is not given.
    from modelreg.config import DEFAULT_ADDRESS, Settings, default_home

    where = str(default_home()).replace("%", "%%")  # argparse %-formats help texts
    home = (
        "data directory: the embedded PostgreSQL and the blobs; delete it (server stopped)"
        f" to start from an empty registry (env MODELREG_HOME, default: {where})"
    )
    serve = commands.local(
        "serve",
        _serve,
        "run the registry server until Ctrl-C (SIGINT) or SIGTERM",
        _settings_help(),
    )
    serve.add_argument(
        "--address",
        help=f"HOST:PORT to listen on (env MODELREG_ADDRESS, default: {DEFAULT_ADDRESS})",
    )
    serve.add_argument("--home", help=home)
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port"
        f" (env MODELREG_WORKERS, default: one per core, {Settings().workers} here)",
    )
    migrate = commands.local("migrate", _migrate, "apply pending database migrations")
    migrate.add_argument("--home", help=home)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="modelreg",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = Commands(parser, "command", [remote_options()])
    _add_local(commands)
    for add in (add_namespaces, add_models, add_versions, add_search, add_aliases, add_lookups,
                add_artifacts):  # fmt: skip
        add(commands)
    add_webhooks(commands)
    add_audit(commands)
    add_access(commands)
    add_watch(commands)
    add_sync(commands)
    add_keys(commands)
    add_lineage(commands)
    add_import(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the `modelreg` command line; exits non-zero on failure (see `--help`)."""
    args = build_parser().parse_args(shorthand(sys.argv[1:] if argv is None else argv))
    try:
        status: int = args.func(args)
    except BrokenPipeError:  # `modelreg ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except KeyboardInterrupt:  # a push or pull stopped by ^C: pull resumes, push starts over
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if status:
        raise SystemExit(status)
