"""The Transaction port: locked reads and writes inside one database transaction."""

from __future__ import annotations

import asyncpg

from modelreg.domain.errors import AlreadyExists, NotFound
from modelreg.domain.names import AliasKey, ModelKey, VersionKey
from modelreg.domain.ports import PriorRequest
from modelreg.domain.types import Alias, AliasEvent, Event, Model, ModelVersion, Namespace
from modelreg.store import reads, rows
from modelreg.store.artifacts import ArtifactWrites
from modelreg.store.uploads import UploadWrites

_MODEL = "(SELECT model_id FROM models WHERE ns = $1 AND name = $2)"
LOCK_MODEL = f"SELECT {rows.MODEL_COLUMNS} FROM models m WHERE m.ns = $1 AND m.name = $2 FOR UPDATE"
LOCK_VERSION = f"""
SELECT {rows.VERSION_COLUMNS} FROM model_versions v
WHERE v.model_id = {_MODEL} AND v.number = $3 FOR {{mode}}
"""
SAVE_MODEL = f"""
UPDATE models m SET description = $3, tags = $4, labels = $5, delete_time = $6,
       revision = revision + 1, update_time = now()
WHERE m.ns = $1 AND m.name = $2 RETURNING {rows.MODEL_COLUMNS}
"""
INSERT_MODEL = f"""
INSERT INTO models AS m (ns, name, description, tags, labels) VALUES ($1, $2, $3, $4, $5)
RETURNING {rows.MODEL_COLUMNS}
"""
INSERT_VERSION = f"""
INSERT INTO model_versions AS v (model_id, number, state, description, tags, labels, metrics,
    params, run_id, code_commit, framework, framework_version, creator)
VALUES ({_MODEL}, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING {rows.VERSION_COLUMNS}
"""
SAVE_VERSION = f"""
UPDATE model_versions v SET state = $4, description = $5, tags = $6, labels = $7, metrics = $8,
       params = $9, run_id = $10, code_commit = $11, framework = $12, framework_version = $13,
       digest = $14, total_size = $15, revision = revision + 1, update_time = now()
WHERE v.model_id = {_MODEL} AND v.number = $3 RETURNING {rows.VERSION_COLUMNS}
"""
SAVE_ALIAS = f"""
INSERT INTO aliases AS a (model_id, alias, number, updater) VALUES ({_MODEL}, $3, $4, $5)
ON CONFLICT (model_id, alias) DO UPDATE
SET number = EXCLUDED.number, updater = EXCLUDED.updater,
    revision = a.revision + 1, update_time = now()
RETURNING {rows.ALIAS_COLUMNS}
"""
LOCK_ALIAS = f"""
SELECT {rows.ALIAS_COLUMNS} FROM aliases a WHERE a.model_id = {_MODEL} AND a.alias = $3 FOR UPDATE
"""
INSERT_EVENT = """
INSERT INTO events (model_id, ns, resource, kind, actor, before, after)
VALUES ((SELECT model_id FROM models WHERE ns = $1 AND name = $2), $1, $3, $4, $5, $6, $7)
"""


class PostgresTransaction(ArtifactWrites, UploadWrites):
    """One open transaction on one connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.events: list[Event] = []  # what commit listeners hear about

    async def claim_request(
        self, *, request_id: str, method: str, fingerprint: str
    ) -> PriorRequest | None:
        # ON CONFLICT waits for a concurrent claim of the same id to commit or roll back.
        claimed = await self._conn.fetchval(
            "INSERT INTO request_ids (request_id, method, fingerprint) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            request_id,
            method,
            fingerprint,
        )
        if claimed:
            return None
        row = await self._conn.fetchrow(
            "SELECT method, fingerprint, resource FROM request_ids WHERE request_id = $1",
            request_id,
        )
        return PriorRequest(row["method"], row["fingerprint"], row["resource"])

    async def finish_request(self, *, request_id: str, resource: str) -> None:
        await self._conn.execute(
            "UPDATE request_ids SET resource = $2 WHERE request_id = $1", request_id, resource
        )

    async def insert_namespace(self, *, namespace: Namespace) -> Namespace:
        try:
            row = await self._conn.fetchrow(
                f"INSERT INTO namespaces (ns, description) VALUES ($1, $2)"
                f" RETURNING {rows.NAMESPACE_COLUMNS}",
                namespace.id,
                namespace.description,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(namespace.name) from exc
        return rows.namespace(row)

    async def insert_model(self, *, model: Model) -> Model:
        key = model.key
        try:
            row = await self._conn.fetchrow(
                INSERT_MODEL,
                key.namespace,
                key.model,
                model.description,
                list(model.tags),
                dict(model.labels),
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(key.name) from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound(f"namespaces/{key.namespace}") from exc
        return rows.model(row)

    async def lock_model(self, *, key: ModelKey) -> Model:
        row = await self._conn.fetchrow(LOCK_MODEL, key.namespace, key.model)
        if row is None:
            raise NotFound(key.name)
        return rows.model(row)

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

    async def allocate_version_number(self, *, key: ModelKey) -> int:
        number: int = await self._conn.fetchval(
            "UPDATE models SET last_version = last_version + 1 WHERE ns = $1 AND name = $2"
            " RETURNING last_version",
            key.namespace,
            key.model,
        )
        return number

    async def insert_version(self, *, version: ModelVersion) -> ModelVersion:
        row = await self._conn.fetchrow(INSERT_VERSION, *_version_args(version), version.creator)
        return rows.version(version.key.model, row)

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        sql = LOCK_VERSION.format(mode="SHARE" if shared else "UPDATE")
        row = await self._conn.fetchrow(sql, key.model.namespace, key.model.model, key.number)
        if row is None:
            await self.lock_model(key=key.model)  # NotFound names the model if it is missing
            raise NotFound(key.name)
        return rows.version(key.model, row)

    async def save_version(self, *, version: ModelVersion) -> ModelVersion:
        row = await self._conn.fetchrow(
            SAVE_VERSION, *_version_args(version), version.digest, version.total_size
        )
        return rows.version(version.key.model, row)

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        row = await self._conn.fetchrow(LOCK_ALIAS, key.model.namespace, key.model.model, key.alias)
        return None if row is None else rows.alias(key.model, row)

    async def save_alias(self, *, alias: Alias) -> Alias:
        key = alias.key
        row = await self._conn.fetchrow(
            SAVE_ALIAS, key.model.namespace, key.model.model, key.alias, alias.number, alias.updater
        )
        return rows.alias(key.model, row)

    async def delete_alias(self, *, key: AliasKey) -> None:
        await self._conn.execute(
            f"DELETE FROM aliases WHERE model_id = {_MODEL} AND alias = $3",
            key.model.namespace,
            key.model.model,
            key.alias,
        )

    async def aliases_pointing_at(self, *, key: VersionKey) -> list[str]:
        found = await self._conn.fetch(
            f"SELECT alias FROM aliases WHERE model_id = {_MODEL} AND number = $3 ORDER BY alias",
            key.model.namespace,
            key.model.model,
            key.number,
        )
        return [r["alias"] for r in found]

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return await reads.alias_history(self._conn, key=key, before=before, limit=limit)

    async def append_event(self, *, event: Event) -> None:
        self.events.append(event)
        model = event.model.model if event.model else ""
        await self._conn.execute(
            INSERT_EVENT,
            event.namespace,
            model,
            event.resource,
            event.kind,
            event.actor,
            event.before,
            event.after,
        )


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
