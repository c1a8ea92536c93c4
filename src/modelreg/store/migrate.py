"""Apply the numbered SQL files in migrations/ once, under a Postgres advisory lock."""

from __future__ import annotations

from importlib import resources

import asyncpg

# Any constant works; it only has to be the same for every modelreg process.
_LOCK_KEY = 0x6D6F64656C726567  # "modelreg"

SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name          text PRIMARY KEY,
    applied_time  timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order; names are file names without `.sql`."""
    folder = resources.files("modelreg.store") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return their names. Safe to run from many processes at once:
    the advisory lock lets one apply them while the others wait, then find nothing to do."""
    applied: list[str] = []
    if not await pending(conn):
        # Up to date: no lock and no DDL, so a runtime role that may not create tables
        # (docs/architecture.md, "Audit log": two database roles) starts a server too.
        return applied
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(SCHEMA_MIGRATIONS)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


async def pending(conn: asyncpg.Connection) -> list[str]:
    """Names of the migrations not yet applied."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = set()
    if exists:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    return [name for name, _ in migration_files() if name not in done]
