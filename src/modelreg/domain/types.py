"""The registry's resources as immutable values."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from modelreg.domain.names import AliasKey, ModelKey, VersionKey

if TYPE_CHECKING:
    from modelreg.domain.filters import Filter

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
    # a move applied by an approved change request: its name and who approved it
    change_request: str = ""
    approvers: tuple[str, ...] = ()


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
    filter: str = ""  # AIP-160 over a model's fields (filters.MODEL_FIELDS)
    tree: Filter | None = None  # the parsed filter (what the store compiles)


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


# --- artifacts and uploads (domain/artifacts.py, domain/uploads.py) -------------------------


@dataclass(frozen=True, slots=True)
class VersionFile:
    """One file of a version: its path inside the version, size, and the sha256 of its blob."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Part:
    """One part of an S3 multipart upload, as a stream recorded it: a completion may use
    it only if S3 still holds these bytes (its ETag and ChecksumSHA256 say so)."""

    number: int
    size: int
    etag: str
    checksum: str  # base64 SHA-256 of the part


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """What the blob store holds durably of an upload, as the database records it: enough
    for any server process to resume it, and all a completion may use."""

    committed_size: int = 0
    staging: str = ""  # the staging file (filesystem) or multipart upload id (S3); "" = none
    hash_state: bytes | None = None  # SHA-256 state after committed_size bytes (blobs/sha256.py)
    parts: tuple[Part, ...] = ()  # S3: parts 1..n in order


@dataclass(frozen=True, slots=True)
class UploadSession:
    """An upload of one file: what it is for and how far it got."""

    upload_id: str
    version: VersionKey
    file: VersionFile
    progress: UploadProgress = UploadProgress()
    complete: bool = False
