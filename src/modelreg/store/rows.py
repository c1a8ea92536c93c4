"""asyncpg records -> domain values, and the column lists (and the model subquery) that
produce them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelreg.domain.names import AliasKey, ModelKey, VersionKey
from modelreg.domain.types import (
    Alias,
    AliasEvent,
    Model,
    ModelVersion,
    Namespace,
    VersionSource,
    VersionState,
)

Row = Mapping[str, Any]

NAMESPACE_COLUMNS = "ns, description, revision, create_time, update_time"
MODEL_COLUMNS = (
    "m.ns, m.name, m.description, m.tags, m.labels, m.last_version, m.revision,"
    " m.create_time, m.update_time, m.delete_time"
)
VERSION_COLUMNS = (
    "v.number, v.state, v.description, v.tags, v.labels, v.metrics, v.params, v.run_id,"
    " v.code_commit, v.framework, v.framework_version, v.digest, v.total_size, v.creator,"
    " v.revision, v.create_time, v.update_time"
)
ALIAS_COLUMNS = "a.alias, a.number, a.revision, a.updater, a.update_time"
# The model_id of the model named by $1 (namespace) and $2 (model id), as a subquery.
MODEL_ID_OF = "(SELECT model_id FROM models WHERE ns = $1 AND name = $2)"


def namespace(row: Row) -> Namespace:
    return Namespace(
        id=row["ns"],
        description=row["description"],
        revision=row["revision"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def model(row: Row) -> Model:
    return Model(
        key=ModelKey(row["ns"], row["name"]),
        description=row["description"],
        tags=tuple(row["tags"]),
        labels=row["labels"],
        revision=row["revision"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        delete_time=row["delete_time"],
        latest_version_number=row["last_version"],
    )


def version(key: ModelKey, row: Row) -> ModelVersion:
    return ModelVersion(
        key=VersionKey(key, row["number"]),
        state=VersionState(row["state"]),
        description=row["description"],
        tags=tuple(row["tags"]),
        labels=row["labels"],
        metrics=row["metrics"],
        params=row["params"],
        source=VersionSource(
            run_id=row["run_id"],
            code_commit=row["code_commit"],
            framework=row["framework"],
            framework_version=row["framework_version"],
        ),
        digest=row["digest"],
        total_size=row["total_size"],
        creator=row["creator"],
        revision=row["revision"],
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def alias(key: ModelKey, row: Row) -> Alias:
    return Alias(
        key=AliasKey(key, row["alias"]),
        number=row["number"],
        revision=row["revision"],
        updater=row["updater"],
        update_time=row["update_time"],
    )


def alias_event(key: AliasKey, row: Row) -> AliasEvent:
    before, after = row["before"] or {}, row["after"] or {}
    return AliasEvent(
        key=key,
        previous_number=before.get("version_number", 0),
        number=after.get("version_number", 0),
        actor=row["actor"],
        time=row["time"],
        event_id=row["event_id"],
        change_request=after.get("change_request", ""),
        approvers=tuple(after.get("approvers", ())),
    )
