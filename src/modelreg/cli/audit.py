"""`modelreg events list` and `modelreg audit verify|denials`: the audit log."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from modelreg.cli.commands import EXIT_FAILED, Commands, add_limit, limited, page_size
from modelreg.cli.output import Column, Listing, Output, Summary
from modelreg.cli.progress import progress_bar
from modelreg.client import Client
from modelreg.v1 import audit_service_pb2 as au

AUDIT_EVENT_COLUMNS = (
    Column("REVISION", "revision"),
    Column("EVENT", "event_id"),
    Column("KIND", "kind"),
    Column("RESOURCE", "resource", 60),
    Column("ACTOR", "actor", 30),
    Column("TIME", "time"),
)
DENIAL_COLUMNS = (
    Column("TIME", "time"),
    Column("ACTOR", "actor", 30),
    Column("METHOD", "method", 50),
    Column("RESOURCE", "resource", 50),
    Column("PERMISSION", "permission"),
    Column("REASON", "reason", 50),
)
VERIFY_PAGE = 1000  # events per VerifyAuditLog call: one step of the progress bar
_WHAT = {
    au.AUDIT_MISMATCH_KIND_CHANGED: "its content no longer gives its stored hash (the row"
    " was changed)",
    au.AUDIT_MISMATCH_KIND_UNLINKED: "its previous hash is not the hash of the event before"
    " it (an event before it was removed, or moved)",
}


def when(text: str) -> datetime:
    """argparse type of an ISO 8601 time; one without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-12-03T16:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _events(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_events(
        namespace=args.namespace,
        model=args.model,
        actor=args.actor,
        kinds=args.kind,
        since=args.since,
        until=args.until,
        newest_first=args.newest_first,
        page_size=page_size(args),
    )
    return Listing(AUDIT_EVENT_COLUMNS, limited(items, args.limit))


def _denials(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_denials(
        actor=args.actor,
        method=args.method,
        since=args.since,
        until=args.until,
        newest_first=args.newest_first,
        page_size=page_size(args),
    )
    return Listing(DENIAL_COLUMNS, limited(items, args.limit))


def _verify(client: Client, args: argparse.Namespace) -> Output:
    checked = 0
    answer = au.VerifyAuditLogResponse()
    with progress_bar(args.json, units=_count) as bar:
        while True:
            answer = client.verify_audit_log(
                after_revision=answer.last_revision,
                after_event_id=answer.last_event_id,
                expected_previous_hash=answer.last_hash,
                max_events=args.page,
            )
            checked += answer.checked
            if bar is not None:
                head = max(answer.head_revision, answer.last_revision)
                bar("verify", head if answer.done else answer.last_revision, head)
            if answer.done:
                break
    answer.checked = checked
    if answer.HasField("mismatch"):
        return Summary(answer, _mismatch_text(answer), exit_code=EXIT_FAILED)
    return Summary(
        answer,
        f"verified {checked} events: the chain is intact\n"
        f"head: revision {answer.last_revision}, event {answer.last_event_id},"
        f" hash {answer.last_hash.hex() or '(empty log)'}\n"
        "(record the head hash elsewhere: a later verify that no longer reaches it shows"
        " events were cut off the end)",
    )


def _mismatch_text(answer: au.VerifyAuditLogResponse) -> str:
    found = answer.mismatch
    return (
        f"event {found.event_id} (revision {found.revision}, {found.resource}) does not"
        f" match: {_WHAT.get(found.kind, 'unknown mismatch')}\n"
        f"  stored hash:            {found.stored_hash.hex()}\n"
        f"  recomputed hash:        {found.recomputed_hash.hex()}\n"
        f"  stored previous hash:   {found.stored_previous_hash.hex()}\n"
        f"  expected previous hash: {found.expected_previous_hash.hex()}\n"
        f"{answer.checked} events before it matched (up to revision {answer.last_revision},"
        f" event {answer.last_event_id})"
    )


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _add_time_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=when, metavar="TIME", help="at or after (ISO 8601)")
    parser.add_argument("--until", type=when, metavar="TIME", help="before (ISO 8601)")
    parser.add_argument("--newest-first", action="store_true", help="newest first")


def add_audit(commands: Commands) -> None:
    events = commands.group("events", "the audit log's events")
    listing = events.remote("list", _events, "events matching the filters, oldest first")
    listing.add_argument("--namespace", metavar="NS")
    listing.add_argument("--model", metavar="MODEL", help="ns/model")
    listing.add_argument("--actor", metavar="PRINCIPAL")
    listing.add_argument("--kind", action="append", default=[], metavar="KIND", help="repeatable")
    _add_time_range(listing)
    add_limit(listing)
    audit = commands.group("audit", "verify the audit log; refused calls")
    verify = audit.remote(
        "verify",
        _verify,
        "recompute the hash chain; exit 1 naming the first event that does not match",
    )
    verify.add_argument(
        "--page", type=int, default=VERIFY_PAGE, help="events per call (default: %(default)s)"
    )
    denials = audit.remote("denials", _denials, "refused calls, oldest first")
    denials.add_argument("--actor", metavar="PRINCIPAL")
    denials.add_argument("--method", metavar="METHOD", help="/modelreg.v1.Service/Method")
    _add_time_range(denials)
    add_limit(denials)
