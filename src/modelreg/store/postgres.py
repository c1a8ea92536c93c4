"""PostgresStore: the Store port on an asyncpg pool (writes) and a reader (lookups).

Each aggregate's SQL lives in its own module (namespaces, models, versions, aliases,
events, idempotency, artifacts), as a reads half on the reader's pool and a writes half
on a transaction's connection; the reader and the transaction here are their sum.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from modelreg.domain import consistency
from modelreg.domain.coalesce import Coalescer, Count
from modelreg.domain.consistency import current_plan
from modelreg.domain.errors import RegistryError
from modelreg.domain.events import Event
from modelreg.domain.names import Reference
from modelreg.domain.ports import CommitListener
from modelreg.domain.types import ModelVersion
from modelreg.store import changelog
from modelreg.store.aliases import PostgresAliasReads, PostgresAliasWrites
from modelreg.store.approvals import PostgresApprovalReads, PostgresApprovalWrites
from modelreg.store.artifacts import ArtifactReads, ArtifactWrites
from modelreg.store.errors import translated
from modelreg.store.events import PostgresEventLog
from modelreg.store.idempotency import PostgresIdempotency
from modelreg.store.models import PostgresModelReads, PostgresModelWrites
from modelreg.store.namespaces import PostgresNamespaceReads, PostgresNamespaceWrites
from modelreg.store.search import PostgresSearch
from modelreg.store.uploads import PostgresUploadLeases, UploadReads, UploadWrites
from modelreg.store.versions import PostgresVersionReads, PostgresVersionWrites


class PostgresReader(
    PostgresNamespaceReads,
    PostgresModelReads,
    PostgresVersionReads,
    PostgresSearch,
    PostgresAliasReads,
    PostgresApprovalReads,
    ArtifactReads,
    UploadReads,
):
    """The Reader port on a pool, or on a read replica's pool with the primary's for the
    lookups whose consistency token the replica has not replayed yet."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        primary: asyncpg.Pool | None = None,
        *,
        count: Count | None = None,
    ) -> None:
        self._reads = pool
        self._primary_reads = primary or pool
        self._resolvers = {  # concurrent lookups share a statement, per pool they read
            primary: Coalescer[Reference, ModelVersion | RegistryError](
                functools.partial(self._resolve_on, primary=primary), count=count
            )
            for primary in (False, True)
        }

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._primary_reads if current_plan().primary else self._reads

    @_pool.setter
    def _pool(self, pool: asyncpg.Pool) -> None:
        self._reads = pool

    def _resolver(self) -> Coalescer[Reference, ModelVersion | RegistryError]:
        return self._resolvers[current_plan().primary]

    async def _resolve_on(
        self, refs: Sequence[Reference], *, primary: bool
    ) -> list[ModelVersion | RegistryError]:
        return await self._resolve_rows(refs, self._primary_reads if primary else self._reads)


class PostgresReplicaHead:
    """The ReplicaHead port: the highest revision the replica has replayed, re-read only
    when a token is above the last one seen (a standby's replay only moves forward).
    Known limit (docs/architecture.md): the value is read on any pooled connection and
    cached, so the read URL must name one standby, whose replay never goes back."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._seen = 0

    async def reached(self, *, revision: int) -> bool:
        if revision > self._seen:
            async with translated():
                self._seen = max(self._seen, await self._pool.fetchval(changelog.HEAD))
        return revision <= self._seen


class PostgresTransaction(
    PostgresIdempotency,
    PostgresEventLog,
    PostgresNamespaceWrites,
    PostgresModelWrites,
    PostgresVersionWrites,
    PostgresAliasWrites,
    PostgresApprovalWrites,
    ArtifactWrites,
    UploadWrites,
):
    """The Transaction port: one open transaction on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.events: list[Event] = []  # what commit listeners hear about

    @property
    def connection(self) -> asyncpg.Connection:
        """The transaction's connection, for store modules whose writes join it."""
        return self._conn


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
        count: Count | None = None,
    ) -> None:
        super().__init__(read_pool or pool, pool, count=count)
        self._primary = pool
        self._on_commit = on_commit

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with translated(), self._primary.acquire() as conn, conn.transaction():
            tx = PostgresTransaction(conn)
            yield tx
            revision = 0
            if tx.events:  # the change log's revision, in commit order: last before COMMIT
                revision = await changelog.stamp(conn, tx.events)
        if revision:
            consistency.committed(revision)  # the call's consistency token
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
