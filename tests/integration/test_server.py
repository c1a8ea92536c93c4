"""The server as a process: health, reflection, deadlines, graceful shutdown, start-up races."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelreg.store.migrate import migration_files
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import authed_channel, make_model
from tests.integration.serverproc import ServerProcess

M = "namespaces/default/models/m"


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    names = (
        "",
        "RegistryService",
        "ArtifactService",
        "WebhookService",
        "WatchService",
        "AuditService",
    )
    for service in (name and f"modelreg.v1.{name}" for name in names):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_registry(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in reply.list_services_response.service}
        assert {
            f"modelreg.v1.{name}Service"
            for name in ("Registry", "Artifact", "Webhook", "Watch", "Audit")
        } <= names
        break


@pytest.mark.usefixtures("clean")
async def test_call_past_its_deadline_is_cut_and_changes_nothing(
    stub: rs_grpc.RegistryServiceAsyncStub, db: asyncpg.Connection, database_url: str
) -> None:
    await make_model(stub)
    blocker = await asyncpg.connect(database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM models WHERE name = 'm' FOR UPDATE")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await waiting_behind(db, blocker, 0)  # the cut call's statement was cancelled
        after = asyncio.ensure_future(
            stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M))
        )
        await waiting_behind(db, blocker, 1)  # the next create waits on the row
        await transaction.rollback()
        reply = await after
    finally:
        await blocker.close()
    assert reply.version.number == 1
    assert await db.fetchval("SELECT count(*) FROM model_versions") == 1


async def waiting_behind(db: asyncpg.Connection, holder: asyncpg.Connection, count: int) -> None:
    """Return once exactly `count` sessions wait for a lock `holder` holds."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
    for _ in range(3000):
        if await db.fetchval(query, holder.get_server_pid()) == count:
            return
        await asyncio.sleep(0.01)  # polls PostgreSQL's lock queue; the interval orders nothing
    raise AssertionError(f"never {count} sessions waiting on the locked row")


@pytest.mark.slow
async def test_two_servers_started_together_migrate_once(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database(seeded=False)
    servers = [ServerProcess(tmp_path / f"s{i}.log", MODELREG_POSTGRES_URL=url) for i in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(s.wait_serving) for s in servers))
        # the first start of the deployment made one admin key, in one of the two homes
        (key,) = [s.token for s in servers if (s.home / "admin.key").exists()]
        for server in servers:
            async with authed_channel(server.target, token=key) as chan:
                stub = rs_grpc.RegistryServiceStub(chan)
                reply = await stub.GetNamespace(rs.GetNamespaceRequest(name="namespaces/default"))
                assert reply.namespace.name == "namespaces/default"
    finally:
        codes = [s.stop() for s in servers]
    assert codes == [0, 0]
    logs = [s.output() for s in servers]
    assert sum("migrations: 0001_init" in log for log in logs) == 1
    assert sum("schema up to date" in log for log in logs) == 1
    conn = await asyncpg.connect(url)
    try:
        applied = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
    finally:
        await conn.close()
    assert [r["name"] for r in applied] == [name for name, _ in migration_files()]


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_calls_then_exits(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database()
    server = ServerProcess(tmp_path / "server.log", MODELREG_POSTGRES_URL=url)
    await asyncio.to_thread(server.wait_serving)
    blocker = await asyncpg.connect(url)
    try:
        async with authed_channel(server.target) as chan:
            stub = rs_grpc.RegistryServiceStub(chan)
            await make_model(stub)
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("SELECT 1 FROM models WHERE name = 'm' FOR UPDATE")
            in_flight = asyncio.ensure_future(
                stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M), timeout=20)
            )
            await waiting_behind(blocker, blocker, 1)  # the call waits on the row, at the server
            await _terminated(chan, server)
            assert server.proc.poll() is None, "the server must wait for the in-flight call"
            await transaction.rollback()
            reply = await in_flight  # answered after SIGTERM: the server waited for it
            assert reply.version.number == 1
        code = await asyncio.to_thread(server.proc.wait, 30)
    finally:
        await blocker.close()
        server.stop()
    assert code == 0, server.output()
    assert "stopped" in server.output()


async def _terminated(chan: grpc.aio.Channel, server: ServerProcess) -> None:
    """SIGTERM the server; return once it has begun its graceful shutdown (health no longer
    SERVING, or new calls refused)."""
    health = health_pb2_grpc.HealthStub(chan)
    server.proc.send_signal(signal.SIGTERM)
    for _ in range(3000):
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.01)  # polls the server's state; the interval orders nothing
    raise AssertionError("the server never began shutting down")


@pytest.mark.slow
async def test_workers_share_one_port_and_stop_together(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database()
    server = ServerProcess(tmp_path / "server.log", MODELREG_POSTGRES_URL=url, MODELREG_WORKERS="2")
    try:
        await asyncio.to_thread(server.wait_serving)
        pids = await worker_pids(server.target, 2)
        assert len(pids) == 2, server.output()
        assert server.proc.pid not in pids  # the supervisor only supervises
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert server.output().count("stopped") == 3  # both workers, then the supervisor


async def worker_pids(target: str, want: int, tries: int = 200) -> set[int]:
    """The pids of the workers answering on `target`, once `want` distinct ones have."""
    pids: set[int] = set()
    for _ in range(tries):  # each new connection lands on one of the workers
        try:
            async with authed_channel(target) as chan:
                stats = admin_grpc.AdminServiceStub(chan)
                reply = await stats.GetServerStats(admin.GetServerStatsRequest(), timeout=5)
                pids.add(reply.pid)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)  # the dead worker's connection, or none yet: polls again
        if len(pids) >= want:
            break
    return pids


@pytest.mark.slow
async def test_a_worker_that_dies_is_replaced(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database()
    server = ServerProcess(tmp_path / "server.log", MODELREG_POSTGRES_URL=url, MODELREG_WORKERS="2")
    try:
        await asyncio.to_thread(server.wait_serving)
        first = await worker_pids(server.target, 2)
        assert len(first) == 2, server.output()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)  # as a SIGBUS or the OOM killer would

        for _ in range(100):
            now = await worker_pids(server.target, 2, tries=40)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.1)  # polls until the supervisor's replacement answers
        else:
            raise AssertionError(f"no replacement worker:\n{server.output()}")
        assert now - first, "a new worker answers"
        assert f"worker {victim} exited" in server.output()
    finally:
        code = server.stop()
    assert code == 0, server.output()


@pytest.mark.slow
async def test_workers_that_keep_dying_stop_the_server(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database()
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the blob store wants a directory")
    server = ServerProcess(
        tmp_path / "server.log",
        MODELREG_POSTGRES_URL=url,
        MODELREG_WORKERS="2",
        MODELREG_BLOB_URL=(blocked / "blobs").as_uri(),  # every worker fails at start
    )
    code = await asyncio.to_thread(server.proc.wait, 120)
    assert code == 1, server.output()
    assert "workers died within" in server.output()


async def test_health_watch_streams_the_serving_status(channel: grpc.aio.Channel) -> None:
    """Health.Watch writes with context.write; the interceptor must await it, not iterate it
    (it answered INTERNAL on every call before)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=10
    )
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
