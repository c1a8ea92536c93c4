"""The composition root: the only place that builds pools, servers and services."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelreg.api.interceptors import ErrorInterceptor
from modelreg.api.registry import RegistryServicer
from modelreg.config import Settings
from modelreg.domain.registry import Registry
from modelreg.embedded import start_postgres
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.v1 import registry_service_pb2, registry_service_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
# Keep messages small and streams chunked instead of raising the limit (DESIGN.md §5).
SERVER_OPTIONS = [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 4 * 1024 * 1024)]


@dataclass
class RunningServer:
    """A started server: its bound port and the handles shutdown needs."""

    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (the stubs lack .aio)
    port: int

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, stop accepting calls, let in-flight calls finish for `grace` s."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def database_url(settings: Settings, stack: AsyncExitStack) -> str:
    """The configured PostgreSQL, or the embedded one in MODELREG_HOME (started here)."""
    if settings.postgres_url:
        log.info("postgres: %s (MODELREG_POSTGRES_URL)", _without_password(settings.postgres_url))
        return settings.postgres_url
    data_dir = settings.home / "postgres"
    log.info("postgres: embedded, data in %s (set MODELREG_POSTGRES_URL to use a server)", data_dir)
    embedded = await asyncio.to_thread(start_postgres, data_dir)
    stack.callback(embedded.stop)
    return embedded.url


async def apply_migrations(url: str) -> list[str]:
    """Bring the schema up to date (safe while other processes do the same)."""
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    log.info("migrations: %s", ", ".join(applied) if applied else "schema up to date")
    return applied


async def build_registry(settings: Settings, stack: AsyncExitStack) -> Registry:
    """Database, migrations, pools, store: the registry's use cases ready to serve."""
    url = await database_url(settings, stack)
    await apply_migrations(url)
    pool = await create_pool(url, max_size=settings.postgres_pool_size)
    stack.push_async_callback(pool.close)
    read_pool = None
    if settings.postgres_read_url:
        read_pool = await create_pool(
            settings.postgres_read_url, max_size=settings.postgres_pool_size
        )
        stack.push_async_callback(read_pool.close)
    return Registry.on(PostgresStore(pool, read_pool))


async def start_server(settings: Settings, stack: AsyncExitStack) -> RunningServer:
    """Build everything and start serving on settings.address (port 0 picks a free one)."""
    registry = await build_registry(settings, stack)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=SERVER_OPTIONS)
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(registry), server
    )
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    port = server.add_insecure_port(settings.address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.address} (MODELREG_ADDRESS / --address)")
    await server.start()
    running = RunningServer(server, health_servicer, port)
    stack.push_async_callback(running.stop, settings.grace_seconds)
    for name in ("", SERVICE_NAMES[0]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return running


def migrate_main(settings: Settings) -> list[str]:
    """`modelreg migrate`: apply pending migrations and return their names."""

    async def run() -> list[str]:
        async with AsyncExitStack() as stack:
            return await apply_migrations(await database_url(settings, stack))

    return asyncio.run(run())


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{parts.username or ''}@{host}:{parts.port or 5432}{parts.path}"
