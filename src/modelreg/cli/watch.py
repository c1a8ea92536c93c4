"""`modelreg watch`: print the registry's changes as they commit, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict, MessageToJson

from modelreg.cli.commands import Commands, report
from modelreg.client import Client, RegistryError
from modelreg.v1 import watch_service_pb2 as ws

FILTER_HELP = (
    "what to follow (any of them; none: everything): NS (a namespace), NS/MODEL,"
    " NS/MODEL@ALIAS, or a resource name"
)


def add_watch(commands: Commands) -> None:
    """`watch`."""
    watch = commands.remote(
        "watch",
        _unused,
        "print changes as they commit, one line per event (with --json, one WatchResponse"
        " per line: a transaction's events); reconnects by itself; Ctrl-C stops",
    )
    watch.set_defaults(func=run_watch)
    watch.add_argument("filters", nargs="*", metavar="FILTER", help=FILTER_HELP)
    watch.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="only events of this kind, e.g. alias.set (repeatable)",
    )
    start = watch.add_mutually_exclusive_group()
    start.add_argument(
        "--from-revision",
        type=int,
        metavar="N",
        help="replay every change after revision N first (default: only new ones)",
    )
    start.add_argument("--from-oldest", action="store_true", help="replay every kept change first")


def _unused(client: Client, args: argparse.Namespace) -> Any:
    raise AssertionError("watch runs through run_watch")


def run_watch(args: argparse.Namespace) -> int:
    """Follow the change log and print it; 0 on Ctrl-C."""
    scopes = split_filters(args.filters)
    signal.signal(signal.SIGINT, _stop)
    try:
        with Client(args.target, timeout=args.timeout) as client:
            changes = client.watch(
                namespaces=scopes["namespaces"],
                models=scopes["models"],
                aliases=scopes["aliases"],
                kinds=args.kind,
                after_revision=args.from_revision,
                from_oldest=args.from_oldest,
            )
            for change in changes:
                _print(change, as_json=args.json)
    except RegistryError as exc:
        return report(exc, args.target)
    return 0


def _stop(signum: int, frame: object) -> None:
    """Ctrl-C: what was printed is flushed and nothing else needs undoing, so leave at
    once. A KeyboardInterrupt unwinding through gRPC's blocking iterator and the channel's
    close now and then left the process running (a CI flake: no exit within 30 s)."""
    try:
        sys.stdout.flush()
    finally:
        os._exit(0)


def split_filters(filters: list[str]) -> dict[str, list[str]]:
    """FILTER arguments by scope: `ns` a namespace, `ns/model` a model, `ns/m@a` an alias
    (resource names by their depth)."""
    scopes: dict[str, list[str]] = {"namespaces": [], "models": [], "aliases": []}
    for item in filters:
        if item.startswith("namespaces/"):
            depth = item.count("/")
            scope = "aliases" if depth >= 5 else "models" if depth >= 3 else "namespaces"
        elif "@" in item:
            scope = "aliases"
        else:
            scope = "models" if "/" in item else "namespaces"
        scopes[scope].append(item)
    return scopes


def _print(change: ws.WatchResponse, *, as_json: bool) -> None:
    if as_json:
        print(MessageToJson(change, indent=None), flush=True)
        return
    for event in change.events:
        summary = describe(event.kind, MessageToDict(event.before), MessageToDict(event.after))
        line = f"{change.revision}  {event.kind:<19} {event.resource}"
        print(f"{line}  {summary}" if summary else line, flush=True)


def describe(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """A few words on what an event changed."""
    if kind == "alias.set":
        moved = f"-> version {_number(after)}"
        return f"{moved} (was {_number(before)})" if before else moved
    if kind == "alias.deleted":
        return f"(was version {_number(before)})"
    if kind == "version.file_added":
        return f"{after.get('path', '')} ({after.get('size', 0):.0f} bytes)"
    if kind.startswith("version."):
        state = after.get("state", "")
        was = before.get("state", "")
        return f"{was} -> {state}" if was and was != state else str(state)
    if kind == "model.updated":
        changed = sorted(
            k for k in after if after.get(k) != before.get(k) and k not in _BOOKKEEPING
        )
        return "changed " + ", ".join(changed) if changed else ""
    return ""


_BOOKKEEPING = frozenset({"revision", "update_time"})


def _number(snapshot: Mapping[str, Any]) -> str:
    number = snapshot.get("version_number")
    return f"{number:.0f}" if isinstance(number, int | float) else "?"
