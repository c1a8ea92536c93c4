"""What every client command shares: its options, how it runs against `--target`, how
its errors are reported, and the argument types and option groups commands reuse."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from modelreg.cli.output import Listing, Output, Summary, render
from modelreg.client import Client, RegistryError, TlsSettingError, UnavailableError

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_FAILED = 1  # the registry refused the request, or a local file of push or pull could
# not be read or written
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_UNREACHABLE = 3  # no server answered at --target
EXIT_PARTIAL = 4  # batch-get answered, but some of its references failed (printed with the
# rest): a script can tell "some missing" from "nothing answered" (1 or 3)


T = TypeVar("T")
Handler = Callable[[Client, argparse.Namespace], Output]


def key_value(text: str) -> tuple[str, str]:
    """argparse type of `k=v`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def metric(text: str) -> tuple[str, float]:
    """argparse type of `name=0.91`."""
    key, value = key_value(text)
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"metric {key!r} needs a number, got {value!r}") from None


def pairs(items: list[tuple[str, T]] | None) -> dict[str, T] | None:
    return None if items is None else dict(items)


def limited(items: Iterator[T], limit: int | None) -> list[T]:
    return list(islice(items, limit))


def page_size(args: argparse.Namespace) -> int | None:
    return None if args.limit is None else min(args.limit, 1000)


def run_remote(handler: Handler, args: argparse.Namespace) -> int:
    """Run a client command against `--target`; print its output or its error."""
    try:
        with Client(args.target, timeout=args.timeout) as client:
            output = handler(client, args)
    except RegistryError as exc:
        return report(exc, args.target)
    except (OSError, TlsSettingError) as exc:  # a local file of push or pull, or TLS's
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(render(output, as_json=args.json))
    if isinstance(output, Listing | Summary):
        for note in output.notes:
            print(note, file=sys.stderr)
    return output.exit_code if isinstance(output, Listing | Summary) else 0


def report(exc: RegistryError, target: str) -> int:
    """Print an error to stderr; return the exit status."""
    if isinstance(exc, UnavailableError) and not exc.reason:
        print(
            f"error: UNAVAILABLE: no registry answered at {target}; is it running? "
            "Set --target or MODELREG_TARGET to reach another (a server with TLS needs"
            " MODELREG_TLS_CA_FILE, or MODELREG_TLS=on for a certificate from a public CA).\n"
            f"  detail: {exc.message}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
    for field, description in exc.field_violations:
        print(f"  {field}: {description}", file=sys.stderr)
    if exc.reason:
        print(f"  reason: {exc.reason}", file=sys.stderr)
    return EXIT_FAILED


def remote_options() -> argparse.ArgumentParser:
    """Options every client command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default=os.environ.get("MODELREG_TARGET", DEFAULT_TARGET),
        help="registry address HOST:PORT (env MODELREG_TARGET, default: %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print the proto3 JSON mapping")
    common.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per call (default: %(default)s)"
    )
    return common


class Commands:
    """Adds subcommands to one group, each with the shared client options."""

    def __init__(self, parent: argparse.ArgumentParser, title: str, common: Sequence[Any]) -> None:
        self._group = parent.add_subparsers(dest=title, required=True, metavar="COMMAND")
        self._common = list(common)

    def remote(self, name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        """A command that calls the registry through `handler`."""
        parser = self._group.add_parser(
            name, help=summary, description=summary, parents=self._common
        )
        parser.set_defaults(func=lambda args: run_remote(handler, args))
        return parser

    def local(
        self,
        name: str,
        func: Callable[[argparse.Namespace], int],
        summary: str,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        """A command that runs in this process; `epilog` is printed as written."""
        parser = self._group.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=func)
        return parser

    def group(self, name: str, summary: str) -> Commands:
        """A nested group of commands (`models create`)."""
        parser = self._group.add_parser(name, help=summary, description=summary)
        return Commands(parser, f"{name}_command", self._common)


def add_metadata(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    """--description, --tag, --label; on updates, only what is given changes."""
    default = None if update else ""
    parser.add_argument("--description", default=default)
    replaces = " (replaces all tags)" if update else ""
    parser.add_argument(
        "--tag",
        action="append",
        default=None if update else [],
        metavar="TAG",
        help=f"repeatable{replaces}",
    )
    parser.add_argument(
        "--label",
        action="append",
        type=key_value,
        metavar="K=V",
        help="repeatable" + (" (replaces all labels)" if update else ""),
    )


def add_etag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etag", help="act only if the resource is still at this etag")


def add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, metavar="N", help="print at most N")


def add_guarded(
    group: Commands, target: tuple[str, str], *commands: tuple[str, Handler, str]
) -> list[argparse.ArgumentParser]:
    """Commands on one resource (`target`: dest and metavar) that take --etag."""
    parsers = []
    for name, handler, summary in commands:
        parser = group.remote(name, handler, summary)
        parser.add_argument(target[0], metavar=target[1])
        add_etag(parser)
        parsers.append(parser)
    return parsers
