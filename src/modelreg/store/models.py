"""Models in PostgreSQL: lookups and keyset listings, and the locked writes."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from modelreg.domain.errors import AlreadyExists, NotFound
from modelreg.domain.names import ModelKey
from modelreg.domain.types import Model, ModelQuery
from modelreg.store import rows
from modelreg.store.errors import translated
from modelreg.store.filters import Params, compile_filter

GET_MODEL = f"SELECT {rows.MODEL_COLUMNS} FROM models m WHERE m.ns = $1 AND m.name = $2"
_MODEL_FILTER = """m.ns = $1 AND starts_with(m.name, $2) AND m.tags @> $3::text[]
  AND ($4 OR m.delete_time IS NULL) AND {filter}"""  # {filter}: the compiled `filter`
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
LOCK_MODEL = f"{GET_MODEL} FOR UPDATE"
INSERT_MODEL = f"""
INSERT INTO models AS m (ns, name, description, tags, labels) VALUES ($1, $2, $3, $4, $5)
RETURNING {rows.MODEL_COLUMNS}
"""
SAVE_MODEL = f"""
UPDATE models m SET description = $3, tags = $4, labels = $5, delete_time = $6,
       revision = revision + 1, update_time = now()
WHERE m.ns = $1 AND m.name = $2 RETURNING {rows.MODEL_COLUMNS}
"""


class PostgresModelReads:
    """The ModelReads port, on the reader's pool."""

    _pool: asyncpg.Pool

    async def get_model(self, *, key: ModelKey) -> Model:
        async with translated():
            row = await self._pool.fetchrow(GET_MODEL, key.namespace, key.model)
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
        params = Params(args)  # the filter's values are numbered after the statement's
        sql = sql.replace("{filter}", compile_filter(query.tree, params, row="m"))
        async with translated():
            found = await self._pool.fetch(sql, *params.values)
        return [rows.model(r) for r in found]


class PostgresModelWrites:
    """The ModelWrites port, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def insert_model(self, *, model: Model) -> Model:
        key = model.key
        args = (key.namespace, key.model, model.description, list(model.tags), dict(model.labels))
        try:
            row = await self._conn.fetchrow(INSERT_MODEL, *args)
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(key.name) from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"namespaces/{key.namespace}") from exc
        return rows.model(row)

    async def lock_model(self, *, key: ModelKey) -> Model:
        return await lock_model(self._conn, key)

    async def save_model(self, *, model: Model) -> Model:
        key = model.key
        row = await self._conn.fetchrow(
            SAVE_MODEL,
            key.namespace,
            key.model,
            model.description,
            list(model.tags),
            dict(model.labels),
            model.delete_time,
        )
        return rows.model(row)


async def lock_model(conn: asyncpg.Connection, key: ModelKey) -> Model:
    """Read a model under its row lock; NotFound if absent."""
    row = await conn.fetchrow(LOCK_MODEL, key.namespace, key.model)
    if row is None:
        raise NotFound(key.name)
    return rows.model(row)


def _time_position(after: tuple[str, ...] | None, descending: bool) -> tuple[datetime, str]:
    if after is None:
        edge = datetime.max if descending else datetime.min
        return edge.replace(tzinfo=UTC), "\uffff" if descending else ""
    return datetime.fromisoformat(after[0]), after[1]
