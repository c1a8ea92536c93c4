"""The audit log in PostgreSQL (migrations/0013_audit.sql): ListEvents' keyset reads of
the events table, the chain as the verifier reads it, and the denials table (the
DenialLog port and its reads).

Queries are assembled from fixed fragments, one per filter given; every value is a
parameter.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from modelreg.domain.audit import (
    AuditEvent,
    ChainLink,
    DenialQuery,
    EventQuery,
    Position,
    RecordedDenial,
)
from modelreg.domain.principals import Denial
from modelreg.store import changelog
from modelreg.store.errors import translated

log = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    "event_id, revision, ns, kind, resource, actor, time, before, after, latest_moved,"
    " prev_hash, hash"
)
# Each link's hash recomputed by the stamp's own function: the first from the hash the
# caller expects before it, every other from the stored hash of the link before it (the
# verifier stops at the first mismatch, so up to there stored and recomputed agree).
_CHAIN = """
SELECT event_id, revision, resource, prev_hash, hash,
    modelreg_event_hash(
        CASE WHEN row_number() OVER w = 1 THEN $3::bytea ELSE lag(hash) OVER w END, e
    ) AS recomputed
FROM events e
WHERE revision IS NOT NULL AND (revision, event_id) > ($1, $2)
WINDOW w AS (ORDER BY revision, event_id)
ORDER BY revision, event_id
LIMIT $4
"""
_INSERT_DENIAL = """
INSERT INTO denials (actor, method, resource, permission, reason) VALUES ($1, $2, $3, $4, $5)
"""
# Bounded batches, so a sweep after a long pause never holds a long lock.
_SWEEP = """
DELETE FROM denials WHERE denial_id IN (
    SELECT denial_id FROM denials WHERE time < now() - $1::interval LIMIT $2)
"""
SWEEP_BATCH = 10_000


class _Where:
    """Conditions and their parameters, numbered as they are added."""

    def __init__(self, *fixed: str) -> None:
        self.conditions, self.params = list(fixed), list[Any]()

    def add(self, condition: str, *values: Any) -> None:
        """`condition` with `{}` for each value's parameter."""
        first = len(self.params) + 1
        self.params.extend(values)
        self.conditions.append(condition.format(*(f"${first + i}" for i in range(len(values)))))

    def next(self) -> str:
        """The parameter a value added next would get (for LIMIT)."""
        return f"${len(self.params) + 1}"

    def sql(self) -> str:
        return " AND ".join(self.conditions) or "true"


def _times(where: _Where, start: datetime | None, end: datetime | None) -> None:
    if start is not None:
        where.add("time >= {}", start)
    if end is not None:
        where.add("time < {}", end)


class PostgresAuditStore:
    """The AuditStore port on a pool (the primary's: a replica may lag behind the chain's
    head)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_events(
        self, *, query: EventQuery, after: Position | None, limit: int
    ) -> list[AuditEvent]:
        where = _Where("revision IS NOT NULL")
        if query.model is not None:
            where.add(
                "model_id = (SELECT model_id FROM models WHERE ns = {} AND name = {})",
                query.model.namespace,
                query.model.model,
            )
        if query.namespace:
            where.add("ns = {}", query.namespace)
        if query.actor:
            where.add("actor = {}", query.actor)
        if query.kinds:
            where.add("kind = ANY({}::text[])", list(query.kinds))
        _times(where, query.start_time, query.end_time)
        compare, order = ("<", "DESC") if query.newest_first else (">", "ASC")
        if after is not None:
            where.add(
                f"(revision, event_id) {compare} ({{}}, {{}})", after.revision, after.event_id
            )
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where.sql()}"
            f" ORDER BY revision {order}, event_id {order} LIMIT {where.next()}"
        )
        async with translated():
            rows = await self._pool.fetch(sql, *where.params, limit)
        return [_event(row) for row in rows]

    async def chain(self, *, after: Position, previous: bytes, limit: int) -> list[ChainLink]:
        async with translated():
            rows = await self._pool.fetch(_CHAIN, after.revision, after.event_id, previous, limit)
        return [
            ChainLink(
                row["event_id"],
                row["revision"],
                row["resource"],
                row["prev_hash"],
                row["hash"],
                row["recomputed"],
            )
            for row in rows
        ]

    async def head(self) -> int:
        async with translated():
            head: int = await self._pool.fetchval(changelog.HEAD)
        return head

    async def list_denials(
        self, *, query: DenialQuery, after: int | None, limit: int
    ) -> list[RecordedDenial]:
        where = _Where()
        if query.actor:
            where.add("actor = {}", query.actor)
        if query.method:
            where.add("method = {}", query.method)
        _times(where, query.start_time, query.end_time)
        compare, order = ("<", "DESC") if query.newest_first else (">", "ASC")
        if after is not None:
            where.add(f"denial_id {compare} {{}}", after)
        sql = (
            "SELECT denial_id, time, actor, method, resource, permission, reason FROM denials"
            f" WHERE {where.sql()} ORDER BY denial_id {order} LIMIT {where.next()}"
        )
        async with translated():
            rows = await self._pool.fetch(sql, *where.params, limit)
        return [_denial(row) for row in rows]


class PostgresDenialLog:
    """The DenialLog port: one INSERT per refused call, given at most `timeout` seconds.
    A failure or a slow database is logged and the record dropped: a refusal must never
    turn into UNAVAILABLE because the audit store is slow. `dropped` counts them."""

    def __init__(self, pool: asyncpg.Pool, *, timeout: float = 1.0) -> None:
        self._pool, self._timeout = pool, timeout
        self.dropped = 0

    async def record(self, denial: Denial) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._pool.execute(
                    _INSERT_DENIAL,
                    denial.actor,
                    denial.method,
                    denial.resource,
                    denial.permission,
                    denial.reason,
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self.dropped += 1
            log.warning(
                "denials: could not record %s refused to %r (%s: %s); dropped",
                denial.method,
                denial.actor,
                type(exc).__name__,
                exc,
            )

    async def sweep(self, *, keep_days: float) -> int:
        """Delete denials older than `keep_days`; returns how many."""
        deleted = 0
        while True:
            async with translated():
                status = await self._pool.execute(_SWEEP, timedelta(days=keep_days), SWEEP_BATCH)
            count = int(status.rsplit(" ", 1)[-1])
            deleted += count
            if count < SWEEP_BATCH:
                return deleted


def _event(row: asyncpg.Record) -> AuditEvent:
    return AuditEvent(
        event_id=row["event_id"],
        revision=row["revision"],
        namespace=row["ns"],
        kind=row["kind"],
        resource=row["resource"],
        actor=row["actor"],
        time=row["time"],
        before=row["before"],
        after=row["after"],
        latest_moved=bool(row["latest_moved"]),
        previous_hash=row["prev_hash"] or b"",
        hash=row["hash"] or b"",
    )


def _denial(row: asyncpg.Record) -> RecordedDenial:
    denial = Denial(
        actor=row["actor"],
        method=row["method"],
        resource=row["resource"],
        permission=row["permission"],
        reason=row["reason"],
    )
    return RecordedDenial(row["denial_id"], row["time"], denial)
