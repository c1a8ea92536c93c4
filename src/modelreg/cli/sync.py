"""`modelreg sync REF DIR`: keep DIR/current on the files of whatever REF resolves to."""

from __future__ import annotations

import argparse
import asyncio
import sys

from modelreg.cli.commands import EXIT_FAILED, Commands, report
from modelreg.client import AsyncClient, RegistryError
from modelreg.client.sync import DEFAULT_KEEP, Synced, Syncer, SyncError, follow

EPILOG = """\
layout: DIR/current -> versions/N (swapped atomically), DIR/versions/N/ (complete,
verified), DIR/.modelreg-sync/ (manifests, state, staging for resumed pulls, the lock).

hook (--exec CMD): run as `/bin/sh -c CMD modelreg-sync NEW_PATH` after `current` moved,
so $1 is the new version's directory; also in its environment: MODELREG_SYNC_PATH,
MODELREG_SYNC_VERSION (resource name), MODELREG_SYNC_NUMBER, MODELREG_SYNC_DIGEST,
MODELREG_SYNC_REFERENCE, MODELREG_SYNC_PREVIOUS (the directory before, or empty).
If the hook exits non-zero, `current` is swapped back to where it was.
A failed pull never moves `current`; the next attempt resumes it.

exit status with --once: 0 synced, 1 the pull or the hook failed (current unchanged),
3 no registry answered. Without --once it runs until ^C or SIGTERM, reporting each sync
and each failure on stderr, and trying a failed pull again with backoff.
"""


def _print(outcome: Synced | BaseException) -> None:
    if isinstance(outcome, Synced):
        note = "pulled" if outcome.pulled else "already here"
        reused = f", {outcome.reused_files} files reused" if outcome.reused_files else ""
        print(f"synced {outcome.version} -> {outcome.path} ({note}{reused})", flush=True)
    else:
        print(f"error: {outcome}; current stays where it was", file=sys.stderr, flush=True)


async def _sync(args: argparse.Namespace) -> int:
    async with AsyncClient(args.target, timeout=args.timeout) as client:
        with Syncer(client, args.reference, args.dir, hook=args.exec, keep=args.keep) as syncer:
            if not args.once:
                await follow(client, syncer, report=_print)
            version = await client.resolve(args.reference, strong=True)
            _print(await syncer.sync(version))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_sync(args))
    except RegistryError as exc:
        return report(exc, args.target)
    except (SyncError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_sync(commands: Commands) -> None:
    """`sync`."""
    parser = commands.remote(
        "sync",
        lambda client, args: NotImplemented,  # runs its own loop: see _run
        "keep DIR/current pointing at the files of whatever REF resolves to, following"
        " each move (pull, swap atomically, run a hook)",
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(func=_run)
    parser.add_argument("reference", metavar="REF", help="ns/model@alias (or ns/model, ns/model:N)")
    parser.add_argument("dir", metavar="DIR", help="directory holding current and versions/")
    parser.add_argument("--exec", metavar="CMD", help="shell command run after each swap")
    parser.add_argument(
        "--keep",
        type=_at_least_one,
        default=DEFAULT_KEEP,
        metavar="N",
        help="version directories kept, current included (default: %(default)s)",
    )
    parser.add_argument("--once", action="store_true", help="sync once and exit")
