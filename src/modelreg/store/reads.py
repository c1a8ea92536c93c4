"""Reads outside transactions: point lookups on primary keys and keyset listings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from modelreg.domain.errors import FailedPrecondition, NotFound, RegistryError
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.ports import ModelQuery, VersionQuery
from modelreg.domain.types import Alias, AliasEvent, Model, ModelVersion, Namespace, VersionState
from modelreg.store import rows
from modelreg.store.artifacts import ArtifactReads
from modelreg.store.errors import translated
from modelreg.store.uploads import UploadReads

# Every hot lookup is this one statement (prepared once per connection by
# asyncpg): references unnested with their position, joined on primary keys.
RESOLVE = f"""
SELECT r.i, r.ns, r.name, r.number AS wanted, r.alias, m.model_id, m.delete_time,
       a.number AS alias_target, {rows.VERSION_COLUMNS}
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
     WITH ORDINALITY AS r(ns, name, number, alias, i)
LEFT JOIN models m ON m.ns = r.ns AND m.name = r.name
LEFT JOIN aliases a ON a.model_id = m.model_id AND a.alias = r.alias
LEFT JOIN model_versions v ON v.model_id = m.model_id AND v.number = CASE
    WHEN r.number IS NOT NULL THEN r.number
    WHEN r.alias IS NOT NULL THEN a.number
    ELSE (SELECT l.number FROM model_versions l
          WHERE l.model_id = m.model_id AND l.state = {VersionState.READY.value}
          ORDER BY l.number DESC LIMIT 1)
END
ORDER BY r.i
"""
MODEL_ID = "SELECT model_id FROM models WHERE ns = $1 AND name = $2"
VERSIONS_DESC = f"""
SELECT {rows.VERSION_COLUMNS} FROM model_versions v
WHERE v.model_id = $1 AND v.state = ANY($2::smallint[]) AND v.number < $3
ORDER BY v.number DESC LIMIT $4
"""
VERSIONS_ASC = f"""
SELECT {rows.VERSION_COLUMNS} FROM model_versions v
WHERE v.model_id = $1 AND v.state = ANY($2::smallint[]) AND v.number > $3
ORDER BY v.number LIMIT $4
"""
_MODEL_FILTER = """m.ns = $1 AND starts_with(m.name, $2) AND m.tags @> $3::text[]
  AND ($4 OR m.delete_time IS NULL)"""
MODELS_BY_NAME = f"""
SELECT {rows.MODEL_COLUMNS} FROM models m
WHERE {_MODEL_FILTER} AND m.name > $5 AND m.name >= $2
ORDER BY m.name LIMIT $6
"""
MODELS_BY_CREATE = f"""
SELECT {rows.MODEL_COLUMNS} FROM models m
WHERE {_MODEL_FILTER} AND (m.create_time, m.name) > ($5::timestamptz, $6)
ORDER BY m.create_time, m.name LIMIT $7
"""
MODELS_BY_CREATE_DESC = f"""
SELECT {rows.MODEL_COLUMNS} FROM models m
WHERE {_MODEL_FILTER} AND (m.create_time, m.name) < ($5::timestamptz, $6)
ORDER BY m.create_time DESC, m.name DESC LIMIT $7
"""
ALIASES = f"""
SELECT m.model_id, {rows.ALIAS_COLUMNS} FROM models m
LEFT JOIN aliases a ON a.model_id = m.model_id
WHERE m.ns = $1 AND m.name = $2 ORDER BY a.alias
"""
ALIAS_HISTORY = """
SELECT event_id, actor, time, before, after FROM events
WHERE resource = $1 AND event_id < $2 ORDER BY event_id DESC LIMIT $3
"""
_ALL_STATES = [s.value for s in VersionState]
_NO_EVENT_ABOVE = 2**63 - 1


class PostgresReader(ArtifactReads, UploadReads):
    """The Reader port on a pool (or a read replica's pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_namespace(self, *, namespace: str) -> Namespace:
        async with translated():
            row = await self._pool.fetchrow(
                f"SELECT {rows.NAMESPACE_COLUMNS} FROM namespaces WHERE ns = $1", namespace
            )
        if row is None:
            raise NotFound(f"namespaces/{namespace}")
        return rows.namespace(row)

    async def list_namespaces(self, *, after: str | None, limit: int) -> list[Namespace]:
        async with translated():
            found = await self._pool.fetch(
                f"SELECT {rows.NAMESPACE_COLUMNS} FROM namespaces"
                " WHERE ns > $1 ORDER BY ns LIMIT $2",
                after or "",
                limit,
            )
        return [rows.namespace(r) for r in found]

    async def get_model(self, *, key: ModelKey) -> Model:
        async with translated():
            row = await self._pool.fetchrow(
                f"SELECT {rows.MODEL_COLUMNS} FROM models m WHERE m.ns = $1 AND m.name = $2",
                key.namespace,
                key.model,
            )
        if row is None:
            raise NotFound(key.name)
        return rows.model(row)

    async def list_models(self, *, query: ModelQuery, limit: int) -> list[Model]:
        filters = (query.namespace, query.name_prefix, list(query.tags), query.show_deleted)
        args: tuple[object, ...]
        if query.order_by == "name":
            after = query.after[0] if query.after else ""
            sql, args = MODELS_BY_NAME, (*filters, after, limit)
        else:
            descending = query.order_by.endswith("desc")
            time, name = _time_position(query.after, descending)
            sql = MODELS_BY_CREATE_DESC if descending else MODELS_BY_CREATE
            args = (*filters, time, name, limit)
        async with translated():
            found = await self._pool.fetch(sql, *args)
        return [rows.model(r) for r in found]

    async def get_version(self, *, key: VersionKey) -> ModelVersion:
        return await self.resolve(ref=Reference(key.model, number=key.number))

    async def resolve(self, *, ref: Reference) -> ModelVersion:
        (result,) = await self.resolve_many(refs=[ref])
        if isinstance(result, RegistryError):
            raise result
        return result

    async def resolve_many(
        self, *, refs: Sequence[Reference]
    ) -> list[ModelVersion | RegistryError]:
        columns = (
            [r.model.namespace for r in refs],
            [r.model.model for r in refs],
            [r.number for r in refs],
            [r.alias for r in refs],
        )
        async with translated():
            found = await self._pool.fetch(RESOLVE, *columns)
        return [_resolved(ref, row) for ref, row in zip(refs, found, strict=True)]

    async def list_versions(self, *, query: VersionQuery, limit: int) -> list[ModelVersion]:
        states = [s.value for s in query.states] or _ALL_STATES
        async with translated():
            model_id = await self._pool.fetchval(MODEL_ID, query.model.namespace, query.model.model)
            if model_id is None:
                raise NotFound(query.model.name)
            if query.newest_first:
                bound = _NO_EVENT_ABOVE if query.after is None else query.after
                found = await self._pool.fetch(VERSIONS_DESC, model_id, states, bound, limit)
            else:
                found = await self._pool.fetch(
                    VERSIONS_ASC, model_id, states, query.after or 0, limit
                )
        return [rows.version(query.model, r) for r in found]

    async def list_aliases(self, *, model: ModelKey) -> list[Alias]:
        async with translated():
            found = await self._pool.fetch(ALIASES, model.namespace, model.model)
        if not found:
            raise NotFound(model.name)
        return [rows.alias(model, r) for r in found if r["alias"] is not None]

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return await alias_history(self._pool, key=key, before=before, limit=limit)


async def alias_history(
    conn: asyncpg.Pool | asyncpg.Connection, *, key: AliasKey, before: int | None, limit: int
) -> list[AliasEvent]:
    """Moves of an alias from the event log, newest first."""
    bound = _NO_EVENT_ABOVE if before is None else before
    async with translated():
        found = await conn.fetch(ALIAS_HISTORY, key.name, bound, limit)
    return [rows.alias_event(key, r) for r in found]


def _time_position(after: tuple[str, ...] | None, descending: bool) -> tuple[datetime, str]:
    if after is None:
        edge = datetime.max if descending else datetime.min
        return edge.replace(tzinfo=UTC), "\uffff" if descending else ""
    return datetime.fromisoformat(after[0]), after[1]


def _resolved(ref: Reference, row: rows.Row) -> ModelVersion | RegistryError:
    if row["model_id"] is None:
        return NotFound(ref.model.name)
    if row["delete_time"] is not None:
        return FailedPrecondition(
            f"{ref.model.name} is deleted",
            reason="MODEL_DELETED",
            metadata={"resource": ref.model.name},
        )
    if row["number"] is not None:
        return rows.version(ref.model, row)
    if ref.number is not None:
        return NotFound(VersionKey(ref.model, ref.number).name)
    if ref.alias is not None:
        return NotFound(AliasKey(ref.model, ref.alias).name)
    return NotFound(
        ref.model.name, reason="NO_READY_VERSION", message=f"{ref.model.name} has no READY version"
    )
