"""PostgresStore: the Store port on an asyncpg pool (writes) and a reader (lookups).

Each aggregate's SQL lives in its own module (namespaces, models, versions, aliases,
events, idempotency, artifacts), as a reads half on the reader's pool and a writes half
on a transaction's connection; the reader and the transaction here are their sum.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from modelreg.domain.events import Event
from modelreg.domain.ports import CommitListener
from modelreg.store import changelog
from modelreg.store.aliases import PostgresAliasReads, PostgresAliasWrites
from modelreg.store.artifacts import ArtifactReads, ArtifactWrites
from modelreg.store.errors import translated
from modelreg.store.events import PostgresEventLog
from modelreg.store.idempotency import PostgresIdempotency
from modelreg.store.models import PostgresModelReads, PostgresModelWrites
from modelreg.store.namespaces import PostgresNamespaceReads, PostgresNamespaceWrites
from modelreg.store.uploads import PostgresUploadLeases, UploadReads, UploadWrites
from modelreg.store.versions import PostgresVersionReads, PostgresVersionWrites


class PostgresReader(
    PostgresNamespaceReads,
    PostgresModelReads,
    PostgresVersionReads,
    PostgresAliasReads,
    ArtifactReads,
    UploadReads,
):
    """The Reader port on a pool (or a read replica's pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool


class PostgresTransaction(
    PostgresIdempotency,
    PostgresEventLog,
    PostgresNamespaceWrites,
    PostgresModelWrites,
    PostgresVersionWrites,
    PostgresAliasWrites,
    ArtifactWrites,
    UploadWrites,
):
    """The Transaction port: one open transaction on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.events: list[Event] = []  # what commit listeners hear about


class PostgresStore(PostgresReader, PostgresUploadLeases):
    """Reads from `read_pool` (a replica's, or the primary's); transactions (and the
    upload leases) on `pool`.

    After a transaction commits, `on_commit` hears its events (cache invalidation)
    before the caller does, so an acknowledged write is never hidden by a cache.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        read_pool: asyncpg.Pool | None = None,
        *,
        on_commit: CommitListener | None = None,
    ) -> None:
        super().__init__(read_pool or pool)
        self._primary = pool
        self._on_commit = on_commit

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with translated(), self._primary.acquire() as conn, conn.transaction():
            tx = PostgresTransaction(conn)
            yield tx
            if tx.events:  # the change log's revision, in commit order: last before COMMIT
                await changelog.stamp(conn, tx.events)
        if tx.events and self._on_commit is not None:
            # Shielded: a caller cancelled after the commit must not skip the invalidation.
            await asyncio.shield(self._on_commit(tx.events))


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON codecs for jsonb."""
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=_dumps, decoder=json.loads, schema="pg_catalog")


async def reset_connection(conn: asyncpg.Connection) -> None:
    """Release hook: cheaper than asyncpg's full reset, which caps pool throughput
    (DESIGN.md §9); we use no session state, so only an open transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool with our codecs and release hook."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=init_connection, reset=reset_connection
    )
    return pool


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
