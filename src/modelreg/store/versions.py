"""Versions in PostgreSQL: the hot lookup, listings, dense numbering and locked writes."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from modelreg.domain.coalesce import Coalescer
from modelreg.domain.errors import FailedPrecondition, NotFound, RegistryError
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.types import ModelVersion, VersionQuery, VersionState
from modelreg.store import rows
from modelreg.store.errors import translated
from modelreg.store.models import lock_model

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
ALLOCATE_NUMBER = """
UPDATE models SET last_version = last_version + 1 WHERE ns = $1 AND name = $2
RETURNING last_version
"""
LOCK_VERSION = f"""
SELECT {rows.VERSION_COLUMNS} FROM model_versions v
WHERE v.model_id = {rows.MODEL_ID_OF} AND v.number = $3 FOR {{mode}}
"""
INSERT_VERSION = f"""
INSERT INTO model_versions AS v (model_id, number, state, description, tags, labels, metrics,
    params, run_id, code_commit, framework, framework_version, creator, create_time,
    update_time)
VALUES ({rows.MODEL_ID_OF}, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
        COALESCE($15::timestamptz, now()), COALESCE($16::timestamptz, now()))
RETURNING {rows.VERSION_COLUMNS}
"""
SAVE_VERSION = f"""
UPDATE model_versions v SET state = $4, description = $5, tags = $6, labels = $7, metrics = $8,
       params = $9, run_id = $10, code_commit = $11, framework = $12, framework_version = $13,
       digest = $14, total_size = $15, revision = revision + 1, update_time = now()
WHERE v.model_id = {rows.MODEL_ID_OF} AND v.number = $3 RETURNING {rows.VERSION_COLUMNS}
"""
_ALL_STATES = [s.value for s in VersionState]
_NO_NUMBER_ABOVE = 2**63 - 1


class PostgresVersionReads:
    """The VersionReads port, on the reader's pool."""

    _pool: asyncpg.Pool

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
        return await self._resolver().load(refs)

    def _resolver(self) -> Coalescer[Reference, ModelVersion | RegistryError]:
        raise NotImplementedError  # the reader's: one per pool (store/postgres.py)

    async def _resolve_rows(
        self, refs: Sequence[Reference], pool: asyncpg.Pool
    ) -> list[ModelVersion | RegistryError]:
        """One statement for every reference (concurrent callers share it: coalesce.py)."""
        columns = (
            [r.model.namespace for r in refs],
            [r.model.model for r in refs],
            [r.number for r in refs],
            [r.alias for r in refs],
        )
        async with translated():
            found = await pool.fetch(RESOLVE, *columns)
        return [_resolved(ref, row) for ref, row in zip(refs, found, strict=True)]

    async def list_versions(self, *, query: VersionQuery, limit: int) -> list[ModelVersion]:
        states = [s.value for s in query.states] or _ALL_STATES
        async with translated():
            model_id = await self._pool.fetchval(MODEL_ID, query.model.namespace, query.model.model)
            if model_id is None:
                raise NotFound(query.model.name)
            if query.newest_first:
                bound = _NO_NUMBER_ABOVE if query.after is None else query.after
                found = await self._pool.fetch(VERSIONS_DESC, model_id, states, bound, limit)
            else:
                found = await self._pool.fetch(
                    VERSIONS_ASC, model_id, states, query.after or 0, limit
                )
        return [rows.version(query.model, r) for r in found]


class PostgresVersionWrites:
    """The VersionWrites port, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def allocate_version_number(self, *, key: ModelKey) -> int:
        number: int = await self._conn.fetchval(ALLOCATE_NUMBER, key.namespace, key.model)
        return number

    async def insert_version(self, *, version: ModelVersion) -> ModelVersion:
        row = await self._conn.fetchrow(
            INSERT_VERSION, *_version_args(version), version.creator,
            version.create_time, version.update_time,  # None: now (imports keep theirs)
        )  # fmt: skip
        return rows.version(version.key.model, row)

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        sql = LOCK_VERSION.format(mode="SHARE" if shared else "UPDATE")
        row = await self._conn.fetchrow(sql, key.model.namespace, key.model.model, key.number)
        if row is None:
            await lock_model(self._conn, key.model)  # NotFound names the model if it is missing
            raise NotFound(key.name)
        return rows.version(key.model, row)

    async def save_version(self, *, version: ModelVersion) -> ModelVersion:
        row = await self._conn.fetchrow(
            SAVE_VERSION, *_version_args(version), version.digest, version.total_size
        )
        return rows.version(version.key.model, row)


def _version_args(version: ModelVersion) -> tuple[object, ...]:
    """$1..$13 of INSERT_VERSION and SAVE_VERSION: the key, then the metadata."""
    key, src = version.key, version.source
    return (
        key.model.namespace,
        key.model.model,
        key.number,
        version.state.value,
        version.description,
        list(version.tags),
        dict(version.labels),
        dict(version.metrics),
        dict(version.params),
        src.run_id,
        src.code_commit,
        src.framework,
        src.framework_version,
    )


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
