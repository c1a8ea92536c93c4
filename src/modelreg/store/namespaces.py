"""Namespaces in PostgreSQL: their reads and writes."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from modelreg.domain.errors import AlreadyExists, NotFound
from modelreg.domain.types import Namespace
from modelreg.store import rows
from modelreg.store.errors import translated

GET_NAMESPACE = f"SELECT {rows.NAMESPACE_COLUMNS} FROM namespaces WHERE ns = $1"
# `only` (the namespaces the caller may read; NULL: all) filters in the query, so a page
# is never short for rows the caller may not see.
LIST_NAMESPACES = f"""
SELECT {rows.NAMESPACE_COLUMNS} FROM namespaces
WHERE ns > $1 AND ($3::text[] IS NULL OR ns = ANY($3::text[])) ORDER BY ns LIMIT $2
"""
INSERT_NAMESPACE = (
    f"INSERT INTO namespaces (ns, description) VALUES ($1, $2) RETURNING {rows.NAMESPACE_COLUMNS}"
)


class PostgresNamespaceReads:
    """The NamespaceReads port, on the reader's pool."""

    _pool: asyncpg.Pool

    async def get_namespace(self, *, namespace: str) -> Namespace:
        async with translated():
            row = await self._pool.fetchrow(GET_NAMESPACE, namespace)
        if row is None:
            raise NotFound(f"namespaces/{namespace}")
        return rows.namespace(row)

    async def list_namespaces(
        self, *, after: str | None, limit: int, only: Collection[str] | None = None
    ) -> list[Namespace]:
        listed = None if only is None else sorted(only)
        async with translated():
            found = await self._pool.fetch(LIST_NAMESPACES, after or "", limit, listed)
        return [rows.namespace(r) for r in found]


class PostgresNamespaceWrites:
    """The NamespaceWrites port, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def insert_namespace(self, *, namespace: Namespace) -> Namespace:
        try:
            row = await self._conn.fetchrow(INSERT_NAMESPACE, namespace.id, namespace.description)
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(namespace.name) from exc
        return rows.namespace(row)
