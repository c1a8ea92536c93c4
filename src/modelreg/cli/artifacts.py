"""`push` and `pull`: a version's files to and from the registry, with a progress bar."""

from __future__ import annotations

import argparse

from modelreg.cli.commands import Commands
from modelreg.cli.output import Output, Summary
from modelreg.cli.progress import format_bytes, progress_bar
from modelreg.client import Client


def _push(client: Client, args: argparse.Namespace) -> Output:
    with progress_bar(args.quiet) as bar:
        pushed = client.push_report(
            args.model,
            args.path,
            concurrency=args.concurrency,
            progress=bar,
            fail_on_error=args.fail_on_error,
            if_changed=args.if_changed,
        )
    version = pushed.version
    if not pushed.created and args.if_changed:
        text = f"{version.name}  {version.digest}  unchanged: no new version"
        # --json prints the version alone: say on stderr that it is the existing one
        return Summary(version, text, [f"note: {text}"] if args.json else [])
    notes = []
    if pushed.repeats_previous and pushed.previous is not None:
        notes.append(
            f"note: {version.name} holds the same files as {pushed.previous.name};"
            " with --if-changed, push makes no new version then"
        )
    return Summary(version, f"{version.name}  {version.digest}", notes)


def _pull(client: Client, args: argparse.Namespace) -> Output:
    with progress_bar(args.quiet) as bar:
        manifest = client.pull(
            args.reference, args.dest, concurrency=args.concurrency, progress=bar
        )
    count, size = len(manifest.files), format_bytes(manifest.total_size)
    text = f"{manifest.version}  {manifest.digest}  ({count} files, {size}) -> {args.dest}"
    return Summary(manifest, text)


def add_artifacts(commands: Commands) -> None:
    """`push` and `pull`."""
    push = commands.remote(
        "push",
        _push,
        "upload a file or directory as a new version and finalize it (the same files"
        " again make another, identical version unless --if-changed)",
    )
    push.add_argument(
        "model", metavar="REF", help="ns/model (a new version) or ns/model:N (a PENDING one)"
    )
    push.add_argument("path", metavar="PATH", help="a file, or a directory (all files below)")
    push.add_argument(
        "--if-changed",
        action="store_true",
        help="make no version if the model's latest READY one holds exactly these files"
        " (same manifest digest); it is printed, marked `unchanged` (default: push anyway)",
    )
    push.add_argument(
        "--fail-on-error",
        action="store_true",
        help="mark the version FAILED if the push fails (default: leave it PENDING)",
    )
    pull = commands.remote("pull", _pull, "download a READY version's files into a directory")
    pull.add_argument("reference", metavar="REF", help="ns/model@alias, ns/model:N or ns/model")
    pull.add_argument("dest", metavar="DEST", help="directory to write into (created if needed)")
    for parser in (push, pull):
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        parser.add_argument(
            "--concurrency",
            type=int,
            default=4,
            metavar="N",
            help="files at once (default: %(default)s)",
        )
