"""The embedded PostgreSQL is supervised, and health follows the database.

Real `modelreg serve` processes on the embedded default, each in a home of its own:
its postmaster is SIGKILLed, health goes NOT_SERVING and comes back SERVING by
itself, and a write then succeeds on the same server processes. Health changes are
read from Watch streams, each read bounded by a deadline."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg.app import LIVENESS, start_server
from modelreg.config import Settings
from modelreg.health import DatabaseUnreachable, PostgresProbe
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import authed_channel, free_port, reason_of, rich_status
from tests.integration.serverproc import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_NAMES = ("", "modelreg.v1.RegistryService")
DEADLINE = 120.0  # bound on each wait; under load a restart takes seconds, not minutes
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # else channels share one
FAST_PROBES = {"MODELREG_POSTGRES_PROBE_SECONDS": "0.2"}
# what read() returns once a stream has ended; grpc-stubs 1.53 declares no grpc.aio.EOF
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


@pytest.fixture
def home() -> Iterator[Path]:
    """A MODELREG_HOME outside pytest's tmp_path, whose base pytest makes 0700: the
    embedded server runs as its own user and must reach its data directory."""
    path = Path(tempfile.mkdtemp(prefix="modelreg-test-home-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def postmaster_pid(home: Path) -> int:
    """The pid the data directory's lock file names (the latest start's)."""
    return int((home / "postgres" / "postmaster.pid").read_text().split()[0])


class Watch:
    """A Health Watch stream of one service on one channel."""

    def __init__(self, channel: grpc.aio.Channel, service: str) -> None:
        self.service = service
        stub = health_pb2_grpc.HealthStub(channel)
        self._call = stub.Watch(health_pb2.HealthCheckRequest(service=service))

    async def until(self, status: int, server: ServerProcess | None = None) -> None:
        """Read the stream until it reports `status`, within DEADLINE seconds."""
        output = server.output if server is not None else lambda: "(in-process server)"

        async def read() -> None:
            while True:
                reply = await self._call.read()
                assert reply is not EOF, f"stream ended:\n{output()}"
                if reply.status == status:
                    return

        try:
            await asyncio.wait_for(read(), DEADLINE)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            raise AssertionError(f"{self.service!r} not {name}:\n{output()}") from exc

    def cancel(self) -> None:
        self._call.cancel()


async def watches(channel: grpc.aio.Channel, server: ServerProcess) -> list[Watch]:
    """Watch streams of both health names, each past its first answer, SERVING."""
    started = [Watch(channel, name) for name in HEALTH_NAMES]
    for watch in started:
        await watch.until(SERVING, server)
    return started


async def logged(server: ServerProcess, text: str) -> None:
    """Wait until the server's log shows `text`, within DEADLINE seconds: the keeper
    logs a restart when the wheel's start returns, which can be after health, fed by
    its own probe, already says SERVING."""
    async with asyncio.timeout(DEADLINE):
        while True:
            if text in server.output():
                return
            await asyncio.sleep(0.05)  # a poll of the log file, which has no event to await


async def create_namespace(channel: grpc.aio.Channel, namespace: str) -> None:
    stub = rs_grpc.RegistryServiceStub(channel)
    request = rs.CreateNamespaceRequest(namespace_id=namespace)
    reply = await stub.CreateNamespace(request, timeout=30)
    assert reply.namespace.name == f"namespaces/{namespace}"


async def worker_channels(target: str, want: int, token: str) -> dict[int, grpc.aio.Channel]:
    """One open channel per worker (by pid), once `want` workers answer: a channel
    stays on the worker its connection landed on, and each new one lands on one of
    those listening."""
    found: dict[int, grpc.aio.Channel] = {}
    async with asyncio.timeout(DEADLINE):
        while len(found) < want:
            chan = authed_channel(target, token=token, options=OWN_CONNECTION)
            pid = await pid_of(chan)
            if pid in found:
                await chan.close(grace=None)
                await asyncio.sleep(0.05)  # a poll: the other worker may still be starting
            else:
                found[pid] = chan
    return found


async def pid_of(channel: grpc.aio.Channel) -> int:
    stats = admin_grpc.AdminServiceStub(channel)
    return (await stats.GetServerStats(admin.GetServerStatsRequest(), timeout=10)).pid


@pytest.mark.slow
async def test_a_killed_embedded_postgres_is_restarted_and_health_follows(home: Path) -> None:
    server = ServerProcess(home / "server.log", MODELREG_HOME=str(home), **FAST_PROBES)
    try:
        await asyncio.to_thread(server.wait_serving)
        async with authed_channel(server.target, token=server.token) as chan:
            await create_namespace(chan, "before")  # the pool holds live connections now
            streams = await watches(chan, server)
            served_by = await pid_of(chan)
            killed = postmaster_pid(home)

            os.kill(killed, signal.SIGKILL)
            for watch in streams:
                await watch.until(NOT_SERVING, server)
            liveness = await health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=LIVENESS)
            )
            assert liveness.status == SERVING  # a liveness probe does not restart the pod
            for watch in streams:
                await watch.until(SERVING, server)

            await create_namespace(chan, "after")  # the first call after SERVING succeeds
            assert await pid_of(chan) == served_by, "the same server process answers"
            assert postmaster_pid(home) != killed
            for watch in streams:
                watch.cancel()
            await logged(server, "embedded PostgreSQL running again")
    finally:
        code = server.stop()
    log = server.output()
    assert code == 0, log
    assert f"embedded PostgreSQL (pid {killed}) has exited; starting it again" in log, log
    assert "database unreachable" in log, log


@pytest.mark.slow
async def test_the_supervisor_restarts_the_embedded_postgres_of_its_workers(home: Path) -> None:
    server = ServerProcess(
        home / "server.log", MODELREG_HOME=str(home), MODELREG_WORKERS="2", **FAST_PROBES
    )
    try:
        await asyncio.to_thread(server.wait_serving)
        channels = await worker_channels(server.target, 2, server.token)
        try:
            streams = {pid: await watches(chan, server) for pid, chan in channels.items()}
            killed = postmaster_pid(home)

            os.kill(killed, signal.SIGKILL)
            for each in streams.values():
                for watch in each:
                    await watch.until(NOT_SERVING, server)
            for each in streams.values():
                for watch in each:
                    await watch.until(SERVING, server)

            for pid, chan in channels.items():
                await create_namespace(chan, f"after-{pid}")  # every worker writes again
                assert await pid_of(chan) == pid, "no worker was replaced"
                for watch in streams[pid]:
                    watch.cancel()
            await logged(server, "embedded PostgreSQL running again")
        finally:
            for chan in channels.values():
                await chan.close(grace=None)
    finally:
        code = server.stop()
    assert code == 0, server.output()
    log = server.output()
    assert log.count("embedded PostgreSQL running again") == 1, log  # by the supervisor
    assert log.count(f"run by the supervisor (pid {server.proc.pid})") == 2, log
    assert "(MODELREG_POSTGRES_URL)" not in log  # nobody set it


@pytest.mark.slow
async def test_a_postgres_that_cannot_start_again_stops_the_server(home: Path) -> None:
    server = ServerProcess(
        home / "server.log",
        MODELREG_HOME=str(home),
        MODELREG_POSTGRES_RESTARTS="2",
        **FAST_PROBES,
    )
    try:
        await asyncio.to_thread(server.wait_serving)
        async with authed_channel(server.target, token=server.token) as chan:
            streams = await watches(chan, server)
            with (home / "postgres" / "postgresql.conf").open("a") as conf:
                conf.write("\nthis line is not a setting\n")  # every later start fails
            os.kill(postmaster_pid(home), signal.SIGKILL)
            for watch in streams:
                await watch.until(NOT_SERVING, server)
                watch.cancel()
        code = await asyncio.to_thread(server.proc.wait, DEADLINE)
    finally:
        server.stop()
    log = server.output()
    assert code == 1, log
    assert log.count("embedded PostgreSQL did not start") == 2, log
    assert "MODELREG_POSTGRES_RESTARTS=2) and is still down; giving up" in log
    assert "syntax error" in log  # the reason, from PostgreSQL's own log


async def test_the_probe_notices_a_dropped_connection_and_connects_again(
    new_database: DatabaseFactory,
) -> None:
    url = await new_database()
    probe = PostgresProbe(url, timeout=10)
    lost = asyncio.Event()
    probe.when_lost(lost.set)
    try:
        await probe()
        async with asyncio.timeout(DEADLINE):
            admin_conn = await asyncpg.connect(url)
            try:
                await admin_conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin_conn.close()
            await lost.wait()
        await probe()  # a new connection
    finally:
        await probe.close()


async def test_the_probe_reports_a_database_that_is_not_there() -> None:
    probe = PostgresProbe(f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout=10)
    with pytest.raises(DatabaseUnreachable):
        await probe()


async def test_health_watch_streams_through_the_interceptor(channel: grpc.aio.Channel) -> None:
    """Health.Watch writes with context.write; the error interceptor once turned that
    into INTERNAL."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in HEALTH_NAMES:
        call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
        reply = await asyncio.wait_for(call.read(), DEADLINE)
        assert reply is not EOF
        assert reply.status == SERVING
        call.cancel()


# A PostgreSQL that is not the server's, started and stopped by short helper processes:
# the wheel runs pg_ctl as another user when root, which takes fork() (not vfork), and a
# fork of this process, with gRPC's threads running, has crashed (SIGSEGV) before exec.
START_PG = (
    "import sys, pathlib, embedded_postgres;"
    "server = embedded_postgres.get_server(pathlib.Path(sys.argv[1]), cleanup_mode=None);"
    "print(server.get_uri())"
)
STOP_PG = (
    "import os, sys, embedded_postgres;"
    "user = 'embedded_postgres' if os.geteuid() == 0 else None;"
    "embedded_postgres.pg_ctl(['-w', '-m', 'fast', 'stop'], pgdata=sys.argv[1], user=user)"
)


async def run_python(code: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, f"{code} exited {proc.returncode}"
    return out.decode().strip()


@pytest.mark.slow
async def test_health_follows_a_postgres_it_does_not_own(home: Path) -> None:
    """MODELREG_POSTGRES_URL: nothing to restart, but health and the pool follow it."""
    data_dir = str(home / "pg")
    url = await run_python(START_PG, data_dir)
    settings = Settings(
        address="127.0.0.1:0", postgres_url=url, home=home, postgres_probe_seconds=0.2
    )
    try:
        async with AsyncExitStack() as stack:
            running = await start_server(settings, stack)
            key = (home / "admin.key").read_text().strip()  # its first start's: a fresh database
            target = f"127.0.0.1:{running.port}"
            chan = await stack.enter_async_context(authed_channel(target, token=key))
            streams = [Watch(chan, name) for name in HEALTH_NAMES]
            for watch in streams:
                await watch.until(SERVING)

            await run_python(STOP_PG, data_dir)  # as an operator's `pg_ctl stop`
            for watch in streams:
                await watch.until(NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create_namespace(chan, "during")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert reason_of(rich_status(caught.value)) == "DATABASE_UNAVAILABLE"

            assert await run_python(START_PG, data_dir) == url
            for watch in streams:
                await watch.until(SERVING)
            await create_namespace(chan, "after")  # on a pool whose connections all died
            for watch in streams:
                watch.cancel()
    finally:
        await run_python(STOP_PG, data_dir)
