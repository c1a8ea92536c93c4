"""Real servers for the tests: PostgreSQL (embedded unless MODELREG_TEST_POSTGRES_URL is
set) and the modelreg grpc.aio server on a free port, called through the generated stubs."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.embedded import start_postgres
from modelreg.v1 import registry_service_pb2_grpc

TABLES = "namespaces, models, model_versions, aliases, events, request_ids"


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: the one named by MODELREG_TEST_POSTGRES_URL, else an embedded one."""
    given = os.environ.get("MODELREG_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    embedded = start_postgres(tmp_path_factory.mktemp("pg") / "data", delete_on_stop=True)
    try:
        yield embedded.url
    finally:
        embedded.stop()


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

    async def __call__(self) -> str:
        name = f"modelreg_test_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self._made.append(name)
        return _with_database(self.server_url, name)

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
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    """The modelreg server under test, on a free port."""
    settings = Settings(address="127.0.0.1:0", postgres_url=database_url, grace_seconds=1)
    async with AsyncExitStack() as stack:
        yield await start_server(settings, stack)


@pytest.fixture(scope="session")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target) as chan:
        yield chan


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> registry_service_pb2_grpc.RegistryServiceStub:
    return registry_service_pb2_grpc.RegistryServiceStub(channel)


@pytest.fixture(scope="session")
async def db(database_url: str, server: RunningServer) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the server's database, for seeding and for checking state."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def clean(db: asyncpg.Connection) -> None:
    """Empty every table and restore the `default` namespace, as a fresh registry has it."""
    await db.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await db.execute("INSERT INTO namespaces (ns, description) VALUES ('default', '')")


def _with_database(url: str, name: str) -> str:
    head, sep, tail = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{tail}"


ROOT = Path(__file__).resolve().parent.parent
