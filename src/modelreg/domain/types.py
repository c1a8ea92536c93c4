"""The registry's resources as immutable values."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from modelreg.domain.names import AliasKey, ModelKey, VersionKey

T = TypeVar("T")


class VersionState(enum.IntEnum):
    """Lifecycle of a version (numbers match the protobuf enum)."""

    PENDING = 1
    READY = 2
    FAILED = 3
    ARCHIVED = 4


def etag_of(revision: int) -> str:
    """The opaque etag a resource at `revision` shows to callers."""
    return f'W/"{revision}"'


@dataclass(frozen=True, slots=True)
class Namespace:
    """A team's space of models: the access-control boundary."""

    id: str
    description: str = ""
    revision: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"namespaces/{self.id}"


@dataclass(frozen=True, slots=True)
class Model:
    """A registered model: a named series of versions."""

    key: ModelKey
    description: str = ""
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    revision: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None
    delete_time: datetime | None = None
    latest_version_number: int = 0


@dataclass(frozen=True, slots=True)
class VersionSource:
    """Where a version came from."""

    run_id: str = ""
    code_commit: str = ""
    framework: str = ""
    framework_version: str = ""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One numbered version of a model."""

    key: VersionKey
    state: VersionState = VersionState.PENDING
    description: str = ""
    tags: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    source: VersionSource = VersionSource()
    digest: str = ""
    total_size: int = 0
    creator: str = ""
    revision: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Alias:
    """A movable pointer from a model to one of its versions."""

    key: AliasKey
    number: int
    revision: int = 1
    updater: str = ""
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One recorded move of an alias (0 = no version: created or deleted)."""

    key: AliasKey
    previous_number: int
    number: int
    actor: str
    time: datetime
    event_id: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_token` is empty on the last page."""

    items: list[T]
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class ModelQuery:
    """Filters and order of a model listing, and the keyset position to continue after."""

    namespace: str
    name_prefix: str = ""
    tags: tuple[str, ...] = ()
    order_by: str = "name"  # name | create_time | create_time desc
    show_deleted: bool = False
    after: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class VersionQuery:
    """Filters and order of a version listing, and the number to continue after."""

    model: ModelKey
    newest_first: bool = True
    states: tuple[VersionState, ...] = ()
    after: int | None = None


@dataclass(frozen=True, slots=True)
class PriorRequest:
    """What an earlier call with the same request_id asked for and produced."""

    method: str
    fingerprint: str
    resource: str
