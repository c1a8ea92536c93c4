"""Event kinds of the outbox and the JSON snapshots stored as before/after."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modelreg.domain.names import AliasKey, ModelKey, VersionKey
from modelreg.domain.types import Event

NAMESPACE_CREATED = "namespace.created"
MODEL_CREATED = "model.created"
MODEL_UPDATED = "model.updated"
MODEL_DELETED = "model.deleted"
MODEL_UNDELETED = "model.undeleted"
VERSION_CREATED = "version.created"
VERSION_UPDATED = "version.updated"
VERSION_ARCHIVED = "version.archived"
VERSION_RESTORED = "version.restored"
ALIAS_SET = "alias.set"
ALIAS_DELETED = "alias.deleted"

ALIAS_KINDS = (ALIAS_SET, ALIAS_DELETED)


def change(
    kind: str, resource: str, model: ModelKey, actor: str, *, before: Any = None, after: Any = None
) -> Event:
    """An event about a resource of `model`, with snapshots of its state before and after."""
    return Event(
        kind,
        resource,
        actor,
        model.namespace,
        model=model,
        before=None if before is None else snapshot(before),
        after=None if after is None else snapshot(after),
    )


def snapshot(value: Any) -> dict[str, Any]:
    """A JSON-ready dict of a resource dataclass, for an event's before/after."""
    result = _plain(value)
    if not isinstance(result, dict):
        raise TypeError(f"cannot snapshot {type(value).__name__}")
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, ModelKey | VersionKey | AliasKey):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    return value
