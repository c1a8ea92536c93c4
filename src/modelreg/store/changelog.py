"""The change log in PostgreSQL: the stamp every mutating transaction ends with, and the
ChangeLog port read by keyset on the events table (migrations/0007_revisions.sql)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import groupby

import asyncpg

from modelreg.domain.changelog import Change, parse_subject
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.events import Event, EventKind
from modelreg.store.errors import translated

log = logging.getLogger(__name__)

# The channel the stamp notifies with each committed revision (the function in 0007).
CHANNEL = "modelreg_changes"
STAMP = "SELECT modelreg_stamp_revision($1::boolean[])"
# Whole transactions above the cursor: up to the revision of the `limit`-th event after it
# (or all of them when fewer remain), so a page never ends inside a transaction.
CHANGES_AFTER = """
SELECT revision, kind, resource, actor, time, before, after, latest_moved FROM events
WHERE revision > $1 AND revision <= coalesce(
    (SELECT revision FROM events WHERE revision > $1
     ORDER BY revision, event_id OFFSET $2 - 1 LIMIT 1),
    9223372036854775807)
ORDER BY revision, event_id
"""
HEAD = "SELECT coalesce(max(revision), 0) FROM events WHERE revision IS NOT NULL"
OLDEST = "SELECT coalesce(min(revision), 0) FROM events WHERE revision IS NOT NULL"


async def stamp(conn: asyncpg.Connection, events: Sequence[Event]) -> int:
    """Give this transaction's events its commit-ordered revision; the last statement
    before COMMIT (it takes the lock that serializes commits). Returns the revision."""
    revision: int = await conn.fetchval(STAMP, [event.latest_moved for event in events])
    return revision


class PostgresChangeLog:
    """The ChangeLog port on the primary's pool (a replica may lag behind the
    notifications, which come from the primary)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def changes_after(self, *, revision: int, limit: int) -> list[Change]:
        async with translated():
            rows = await self._pool.fetch(CHANGES_AFTER, revision, max(limit, 1))
        return [
            _change(rev, list(group)) for rev, group in groupby(rows, key=lambda r: r["revision"])
        ]

    async def head(self) -> int:
        async with translated():
            head: int = await self._pool.fetchval(HEAD)
        return head

    async def oldest(self) -> int:
        """The lowest kept revision (0 for an empty log); events are never deleted today,
        so it is the first revision ever stamped (see "The change log" in
        docs/architecture.md)."""
        async with translated():
            oldest: int = await self._pool.fetchval(OLDEST)
        return oldest


def _change(revision: int, rows: list[asyncpg.Record]) -> Change:
    events: list[Event] = []
    positions: list[int] = []
    for position, row in enumerate(rows):  # rows are in event_id order
        event = _event(row)
        if event is not None:
            events.append(event)
            positions.append(position)
    undecodable = len(rows) - len(events)
    return Change(
        revision,
        tuple(events),
        undecodable=undecodable,
        time=rows[0]["time"],
        positions=tuple(positions) if undecodable else (),
    )


def _event(row: asyncpg.Record) -> Event | None:
    try:
        kind = EventKind(row["kind"])
        subject = parse_subject(kind, row["resource"])
    except (ValueError, InvalidArgument):
        log.warning("change log: cannot read a %r event about %r", row["kind"], row["resource"])
        return None
    return Event(
        kind,
        subject,
        row["actor"],
        before=row["before"],
        after=row["after"],
        latest_moved=bool(row["latest_moved"]),
    )
