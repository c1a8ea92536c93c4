"""The chain follows commit order, not id order, under writers held open and committed
out of order; and with two database roles the server's runtime role cannot edit events
at all."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from modelreg.app import start_server
from modelreg.config import Settings
from modelreg.domain.audit import GENESIS, START, Audit
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import ModelKey, NamespaceKey
from modelreg.domain.paging import PageTokens
from modelreg.domain.principals import Denial
from modelreg.store.audit import PostgresAuditStore, PostgresDenialLog
from modelreg.store.migrate import SCHEMA_MIGRATIONS, migrate, migration_files
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.v1 import audit_service_pb2 as au
from modelreg.v1 import audit_service_pb2_grpc as au_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import authed_channel, make_model
from tests.integration.writers import Writer, write

if TYPE_CHECKING:
    from modelreg.v1.audit_service_pb2_grpc import AuditServiceAsyncStub
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

MODEL = ModelKey("team", "resnet")
WRITERS = 12


@pytest.fixture
async def migrated(new_database: DatabaseFactory) -> str:
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def test_the_chain_follows_commit_order_under_out_of_order_commits(migrated: str) -> None:
    pool = await create_pool(migrated, min_size=WRITERS + 2, max_size=WRITERS + 2)
    try:
        store, clock, rng = PostgresStore(pool), itertools.count(), random.Random(11)
        writers = [Writer(i, events=rng.randint(1, 3), rollback=i % 5 == 4) for i in range(WRITERS)]
        tasks = []
        for writer in writers:  # one after the other: event ids follow the index
            tasks.append(asyncio.create_task(write(store, writer, clock, MODEL)))
            await writer.ready.wait()
        order = writers[:]
        rng.shuffle(order)
        # the first half one at a time (a known commit order), the rest all at once
        half = len(order) // 2
        for writer in order[:half]:
            writer.go.set()
            await tasks[writer.index]
        for writer in order[half:]:
            writer.go.set()
        await asyncio.gather(*tasks)

        rows = await pool.fetch(
            "SELECT event_id, revision, after, prev_hash, hash FROM events"
            " ORDER BY revision, event_id"
        )
        committed = [w.index for w in order[:half] if not w.rollback]
        in_chain = list(dict.fromkeys(row["after"]["writer"] for row in rows))
        assert in_chain[: len(committed)] == committed  # chain order is commit order
        ids = [row["event_id"] for row in rows]
        assert ids != sorted(ids)  # ... which is not id order
        broken = sum(
            1
            for before, row in zip([None, *rows], rows, strict=False)
            if row["prev_hash"] != (before["hash"] if before else GENESIS)
        )
        assert broken == 0
        audit = Audit(store=PostgresAuditStore(pool), tokens=PageTokens.ephemeral())
        result = await audit.verify(after=START, previous=GENESIS, limit=1000)
        assert result.mismatch is None
        assert result.checked == len(rows) == sum(w.events for w in writers if not w.rollback)
        assert result.last_hash == rows[-1]["hash"]
    finally:
        await pool.close()


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def runtime_role(migrated: str) -> AsyncIterator[str]:
    """A login role granted what the server needs by modelreg_grant_runtime."""
    role = f"modelreg_rt_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(migrated)
    try:
        await owner.execute(f'CREATE ROLE "{role}" LOGIN')
        await owner.execute("SELECT modelreg_grant_runtime($1::regrole)", role)
        yield role
    finally:
        await owner.execute(f'DROP OWNED BY "{role}"')  # its grants, in the only database
        await owner.execute(f'DROP ROLE "{role}"')  # it has any in
        await owner.close()


async def test_the_runtime_role_serves_but_cannot_edit_events(
    migrated: str, runtime_role: str, tmp_path: Path
) -> None:
    url = _as_role(migrated, runtime_role)
    settings = Settings(address="127.0.0.1:0", postgres_url=url, home=tmp_path, grace_seconds=1)
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        # the database is seeded with the session's admin (tests/helpers.py seed_admin)
        channel = await stack.enter_async_context(authed_channel(f"127.0.0.1:{running.port}"))
        stub: RegistryServiceAsyncStub = rs_grpc.RegistryServiceStub(channel)
        audit: AuditServiceAsyncStub = au_grpc.AuditServiceStub(channel)
        await make_model(stub, "m")
        await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="team"))
        await stub.DeleteModel(rs.DeleteModelRequest(name="namespaces/default/models/m"))
        verified = await audit.VerifyAuditLog(au.VerifyAuditLogRequest())
        assert verified.checked == 3
        assert not verified.HasField("mismatch")
        assert verified.done

        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_user") == runtime_role
            for sql in (
                "UPDATE events SET actor = 'mallory'",
                "DELETE FROM events",
                "TRUNCATE events",
                "INSERT INTO events (ns, resource, kind, actor, revision)"
                " VALUES ('', 'registry', 'model.created', 'x', 1)",
                "SELECT setval('event_revisions', 1)",
                "DELETE FROM schema_migrations",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
        finally:
            await conn.close()
    owner = await asyncpg.connect(migrated)
    try:
        assert await owner.fetchval("SELECT count(*) FROM events WHERE actor = 'mallory'") == 0
    finally:
        await owner.close()


async def test_the_migration_chains_the_events_written_before_it(
    new_database: DatabaseFactory,
) -> None:
    url = await new_database(seeded=False)  # empty: the migrations below are run by hand
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA_MIGRATIONS)
        for name, sql in migration_files():  # the schema as the release before had it
            if name >= "0013":
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        for n in range(5):  # transactions of one and of two events, stamped by 0007
            async with conn.transaction():
                for _ in range(1 + n % 2):
                    await conn.execute(
                        "INSERT INTO events (ns, resource, kind, actor, after)"
                        " VALUES ('default', 'namespaces/default', 'namespace.created', 'old',"
                        " $1::jsonb)",
                        f'{{"n": {n}}}',
                    )
                await conn.fetchval(
                    "SELECT modelreg_stamp_revision($1::boolean[])", [False] * (1 + n % 2)
                )
        assert await migrate(conn) == [name for name, _ in migration_files() if name >= "0013"]
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            async with PostgresStore(pool).transaction() as tx:  # and one stamped by 0013
                await tx.append_event(
                    event=Event(
                        EventKind.NAMESPACE_CREATED,
                        NamespaceKey("team"),
                        "new",
                        after={"name": "team"},
                        latest_moved=False,
                    )
                )
            audit = Audit(store=PostgresAuditStore(pool), tokens=PageTokens.ephemeral())
            result = await audit.verify(after=START, previous=GENESIS, limit=100)
        finally:
            await pool.close()
        assert result.mismatch is None
        assert result.checked == 8
        assert result.done
    finally:
        await conn.close()


async def test_a_denial_the_database_is_too_slow_for_is_dropped_not_raised(
    migrated: str,
) -> None:
    pool = await create_pool(migrated, min_size=1, max_size=2)
    blocker = await asyncpg.connect(migrated)
    try:
        denials = PostgresDenialLog(pool, timeout=0.2)  # the lock below never lets go
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE denials IN ACCESS EXCLUSIVE MODE")
        await denials.record(Denial("eve", "/m.S/M", "", "editor", "no"))
        assert denials.dropped == 1
        await transaction.rollback()
        await denials.record(Denial("eve", "/m.S/M", "", "editor", "no"))
        assert denials.dropped == 1
        assert await pool.fetchval("SELECT count(*) FROM denials") == 1
    finally:
        await blocker.close()
        await pool.close()
