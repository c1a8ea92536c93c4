"""Aliases in PostgreSQL: their rows, their locked writes, and their history (read from
the event log, where every move is recorded)."""

from __future__ import annotations

import asyncpg

from modelreg.domain.errors import NotFound
from modelreg.domain.names import AliasKey, ModelKey, VersionKey
from modelreg.domain.types import Alias, AliasEvent
from modelreg.store import rows
from modelreg.store.errors import translated

ALIASES = f"""
SELECT m.model_id, {rows.ALIAS_COLUMNS} FROM models m
LEFT JOIN aliases a ON a.model_id = m.model_id
WHERE m.ns = $1 AND m.name = $2 ORDER BY a.alias
"""
ALIAS_HISTORY = """
SELECT event_id, actor, time, before, after FROM events
WHERE resource = $1 AND event_id < $2 AND kind IN ('alias.set', 'alias.deleted')
ORDER BY event_id DESC LIMIT $3
"""
LOCK_ALIAS = f"""
SELECT {rows.ALIAS_COLUMNS} FROM aliases a
WHERE a.model_id = {rows.MODEL_ID_OF} AND a.alias = $3 FOR UPDATE
"""
SAVE_ALIAS = f"""
INSERT INTO aliases AS a (model_id, alias, number, updater) VALUES ({rows.MODEL_ID_OF}, $3, $4, $5)
ON CONFLICT (model_id, alias) DO UPDATE
SET number = EXCLUDED.number, updater = EXCLUDED.updater,
    revision = a.revision + 1, update_time = now()
RETURNING {rows.ALIAS_COLUMNS}
"""
DELETE_ALIAS = f"DELETE FROM aliases WHERE model_id = {rows.MODEL_ID_OF} AND alias = $3"
ALIASES_POINTING_AT = f"""
SELECT alias FROM aliases WHERE model_id = {rows.MODEL_ID_OF} AND number = $3 ORDER BY alias
"""
_NO_EVENT_ABOVE = 2**63 - 1


class PostgresAliasReads:
    """The AliasReads port, on the reader's pool."""

    _pool: asyncpg.Pool

    async def list_aliases(self, *, model: ModelKey) -> list[Alias]:
        async with translated():
            found = await self._pool.fetch(ALIASES, model.namespace, model.model)
        if not found:
            raise NotFound(model.name)
        return [rows.alias(model, r) for r in found if r["alias"] is not None]

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return await _history(self._pool, key=key, before=before, limit=limit)


class PostgresAliasWrites:
    """The AliasWrites port, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        row = await self._conn.fetchrow(LOCK_ALIAS, *_alias_args(key))
        return None if row is None else rows.alias(key.model, row)

    async def save_alias(self, *, alias: Alias) -> Alias:
        args = (*_alias_args(alias.key), alias.number, alias.updater)
        row = await self._conn.fetchrow(SAVE_ALIAS, *args)
        return rows.alias(alias.key.model, row)

    async def delete_alias(self, *, key: AliasKey) -> None:
        await self._conn.execute(DELETE_ALIAS, *_alias_args(key))

    async def aliases_pointing_at(self, *, key: VersionKey) -> list[str]:
        args = (key.model.namespace, key.model.model, key.number)
        return [r["alias"] for r in await self._conn.fetch(ALIASES_POINTING_AT, *args)]

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return await _history(self._conn, key=key, before=before, limit=limit)


async def _history(
    conn: asyncpg.Pool | asyncpg.Connection, *, key: AliasKey, before: int | None, limit: int
) -> list[AliasEvent]:
    """Moves of an alias from the event log, newest first."""
    bound = _NO_EVENT_ABOVE if before is None else before
    async with translated():
        found = await conn.fetch(ALIAS_HISTORY, key.name, bound, limit)
    return [rows.alias_event(key, r) for r in found]


def _alias_args(key: AliasKey) -> tuple[str, str, str]:
    return key.model.namespace, key.model.model, key.alias
