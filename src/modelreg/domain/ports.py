"""The ports: small Protocols the adapters in store/, cache/ and blobs/ implement.

Domain code talks only to these. A mutation runs inside one `Transaction` (one
database transaction, its event row included); reads go through `Reader`, which a
cache may wrap. Both are compositions of one small Protocol per aggregate
(`ModelWrites`, `AliasReads`, ...). Each aggregate of the domain declares, beside its
code, the view of the store it uses (`domain/models.py: ModelStore` is `ModelReads` plus
transactions of `Idempotency`, `EventLog` and `ModelWrites`): a new aggregate adds its
Protocols here and its view there, and touches no other aggregate's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from modelreg.domain.errors import RegistryError
from modelreg.domain.events import Event
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.types import (
    Alias,
    AliasEvent,
    Model,
    ModelQuery,
    ModelVersion,
    Namespace,
    PriorRequest,
    VersionQuery,
)

Tx_co = TypeVar("Tx_co", covariant=True)

# --- inside a transaction: one Protocol per aggregate ----------------------------------------


class Idempotency(Protocol):
    """The request_ids a create claims, so a retry returns the first call's result."""

    async def claim_request(
        self, *, request_id: str, method: str, fingerprint: str
    ) -> PriorRequest | None:
        """Record an idempotency key; return the earlier call if the key was seen before
        (a concurrent claim of the same key waits until the first transaction ends)."""

    async def finish_request(self, *, request_id: str, resource: str) -> None:
        """Store the resource name the claimed request produced."""


class EventLog(Protocol):
    """The outbox: one event row per change, in the change's transaction."""

    async def append_event(self, *, event: Event) -> None:
        """Write one event row in this transaction."""


class NamespaceWrites(Protocol):
    """Writes of namespaces."""

    async def insert_namespace(self, *, namespace: Namespace) -> Namespace:
        """Insert; AlreadyExists if the id is taken."""


class ModelWrites(Protocol):
    """Locked reads and writes of models (the model row lock serialises a model's changes)."""

    async def insert_model(self, *, model: Model) -> Model:
        """Insert; AlreadyExists if the name is taken, NotFound if the namespace is missing."""

    async def lock_model(self, *, key: ModelKey) -> Model:
        """Read a model and lock it until commit; NotFound if absent."""

    async def save_model(self, *, model: Model) -> Model:
        """Write a locked model's mutable fields, bumping revision and update_time."""


class VersionWrites(Protocol):
    """Locked reads and writes of versions, and their dense numbering."""

    async def allocate_version_number(self, *, key: ModelKey) -> int:
        """Take the next dense version number of a locked-or-lockable model."""

    async def insert_version(self, *, version: ModelVersion) -> ModelVersion:
        """Insert a version whose number was allocated in this transaction."""

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        """Read a version and lock it (shared or exclusive) until commit; NotFound if absent."""

    async def save_version(self, *, version: ModelVersion) -> ModelVersion:
        """Write a locked version's mutable fields, bumping revision and update_time."""


class AliasHistory(Protocol):
    """The recorded moves of an alias (read in a transaction or outside one)."""

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        """Moves of an alias, newest first, with event ids below `before`."""


class AliasTargets(Protocol):
    """Which aliases point at a version (archiving one asks)."""

    async def aliases_pointing_at(self, *, key: VersionKey) -> list[str]:
        """Ids of the aliases that point at a version."""


class AliasWrites(AliasHistory, AliasTargets, Protocol):
    """Locked reads and writes of aliases."""

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        """Read an alias under lock; None if it does not exist."""

    async def save_alias(self, *, alias: Alias) -> Alias:
        """Insert or move an alias, bumping its revision."""

    async def delete_alias(self, *, key: AliasKey) -> None:
        """Delete an alias."""


# --- outside a transaction: one Protocol per aggregate ---------------------------------------


class NamespaceReads(Protocol):
    """Reads of namespaces."""

    async def get_namespace(self, *, namespace: str) -> Namespace:
        """One namespace; NotFound if absent."""

    async def list_namespaces(self, *, after: str | None, limit: int) -> list[Namespace]:
        """Namespaces in id order after `after`."""


class ModelReads(Protocol):
    """Reads of models."""

    async def get_model(self, *, key: ModelKey) -> Model:
        """One model, soft-deleted or not; NotFound if absent."""

    async def list_models(self, *, query: ModelQuery, limit: int) -> list[Model]:
        """Models matching `query`, in its order, after its position."""


class VersionReads(Protocol):
    """Reads of versions: by key, by reference (the lookups) and listings."""

    async def get_version(self, *, key: VersionKey) -> ModelVersion:
        """One version; NotFound if absent."""

    async def resolve(self, *, ref: Reference) -> ModelVersion:
        """The version a reference points to; NotFound / FailedPrecondition otherwise."""

    async def resolve_many(
        self, *, refs: Sequence[Reference]
    ) -> list[ModelVersion | RegistryError]:
        """Resolve each reference; a failed one yields its error in its place."""

    async def list_versions(self, *, query: VersionQuery, limit: int) -> list[ModelVersion]:
        """Versions matching `query`, in its order, after its position."""


class AliasReads(AliasHistory, Protocol):
    """Reads of aliases."""

    async def list_aliases(self, *, model: ModelKey) -> list[Alias]:
        """Every alias of a model, by id; NotFound if the model is absent."""


# --- the whole store: what an adapter implements ---------------------------------------------


class Transaction(
    Idempotency, EventLog, NamespaceWrites, ModelWrites, VersionWrites, AliasWrites, Protocol
):
    """Reads under row locks and writes, all committed or rolled back together."""


class Reader(NamespaceReads, ModelReads, VersionReads, AliasReads, Protocol):
    """Reads outside a transaction: the lookups and the listings."""


class Transactions(Protocol[Tx_co]):
    """Opens transactions of one kind."""

    def transaction(self) -> AbstractAsyncContextManager[Tx_co]:
        """One database transaction; committed when the block exits cleanly, rolled back
        (nothing of it visible) when it raises."""


class Store(Reader, Transactions[Transaction], Protocol):
    """The system of record: reads, plus transactions for mutations."""


class Encoder(Protocol):
    """Turns resources into the bytes the transport sends (the domain never looks inside)."""

    def version(self, version: ModelVersion) -> bytes:
        """The encoded version."""

    def model(self, model: Model) -> bytes:
        """The encoded model."""


class EncodedReader(Protocol):
    """The hot lookups, answered with encoded bytes so a cache hit does no decoding work."""

    async def resolve_encoded(self, *, refs: Sequence[Reference]) -> list[bytes | RegistryError]:
        """Each reference's encoded version, or its error, in order."""

    async def model_encoded(self, *, key: ModelKey) -> bytes:
        """The encoded model; NotFound if absent."""


class CommitListener(Protocol):
    """Told about a transaction's events once it has committed (cache invalidation, Watch)."""

    async def __call__(self, events: Sequence[Event]) -> None:
        """React to committed events; must not raise for a backend outage."""


# --- artifacts (domain/artifacts.py) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionFile:
    """One file of a version: its path inside the version, size, and the sha256 of its blob."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class UploadSession:
    """An upload of one file: what it is for and how far it got."""

    upload_id: str
    version: VersionKey
    file: VersionFile
    committed_size: int = 0
    complete: bool = False


class ArtifactTransaction(Transaction, Protocol):
    """The Transaction, plus the writes of a version's files and uploads."""

    async def save_upload(self, *, session: UploadSession) -> UploadSession:
        """Insert an upload, or return (locked) the one already under its id."""

    async def set_upload_progress(
        self,
        *,
        version: VersionKey,
        upload_id: str,
        committed_size: int,
        complete: bool,
        owner: str,
    ) -> None:
        """Record how far an upload got, if `owner` still holds its lease and it is not
        complete (a stream that lost its upload records nothing)."""

    async def claim_upload(
        self, *, version: VersionKey, upload_id: str, owner: str, seconds: float
    ) -> bool:
        """Take the upload's lease for `seconds`; False if another owner holds it."""

    async def renew_upload(
        self, *, version: VersionKey, upload_id: str, owner: str, seconds: float
    ) -> bool:
        """Extend `owner`'s lease; False if anyone else claimed the upload since, or it is
        complete or gone (a lease once lost is never taken back by a renewal)."""

    async def release_upload(self, *, version: VersionKey, upload_id: str, owner: str) -> None:
        """End the upload's lease now, if `owner` holds it (the owner is kept, so a late
        renewal of an earlier owner still fails)."""

    async def live_uploads(self, *, version: VersionKey) -> list[str]:
        """Ids of the version's uploads whose lease is held now (a stream is running)."""

    async def drop_uploads(self, *, version: VersionKey) -> list[str]:
        """Delete every upload of a version; return their ids."""

    async def version_files(self, *, version: VersionKey) -> list[VersionFile]:
        """The files of a version, by path (byte order)."""

    async def find_file(self, *, version: VersionKey, path: str) -> VersionFile | None:
        """The file at `path` of a version, if any."""

    async def count_files(self, *, version: VersionKey) -> int:
        """How many files a version has."""

    async def add_file(self, *, version: VersionKey, file: VersionFile) -> None:
        """Add a file to a version (replacing an equal one is a no-op)."""

    async def reserve_blob(self, *, model: ModelKey, sha256: str, size: int) -> None:
        """Record that `model` stores or links the blob, refreshing its last use."""

    async def forget_blob(self, *, sha256: str, grace_seconds: float) -> bool:
        """Lock the digest exclusively (`lock_blob`), then delete the blob's records if it
        is still orphaned; True if it was (the caller deletes the bytes before commit)."""

    async def lock_blob(self, *, sha256: str) -> None:
        """Hold the digest against collection until the transaction ends (`forget_blob`
        takes the same lock exclusively and keeps it while the bytes are deleted)."""


class ArtifactReader(Protocol):
    """Reads of files, uploads and blob records."""

    async def get_upload(self, *, version: VersionKey, upload_id: str) -> UploadSession:
        """One upload; NotFound if absent."""

    async def get_file(self, *, version: VersionKey, path: str) -> VersionFile:
        """One file of a version; NotFound if absent."""

    async def list_files(self, *, version: VersionKey) -> list[VersionFile]:
        """The files of a version, by path (byte order)."""

    async def known_blobs(self, *, digests: Sequence[str]) -> set[str]:
        """The digests among `digests` that some model stores or links."""

    async def orphaned_blobs(self, *, grace_seconds: float, limit: int) -> list[str]:
        """Blobs unused for `grace_seconds` that no live (not FAILED) version holds."""


class ArtifactStore(Store, ArtifactReader, Protocol):
    """The Store whose transactions also write files and uploads."""

    def transaction(self) -> AbstractAsyncContextManager[ArtifactTransaction]:
        """One database transaction; committed when the block exits cleanly."""


Pieces = Sequence[bytes | memoryview]
"""One chunk of a blob being read: its bytes in one or more pieces, valid until the next
chunk is asked for (the reader copies them once, into the message that carries them)."""


class StagedBlob(Protocol):
    """An upload's bytes on their way into the blob store, hashed as they arrive."""

    @property
    def committed_size(self) -> int:
        """Bytes held durably: the offset a resumed upload continues from."""

    async def write(self, data: bytes) -> None:
        """Append bytes (buffered; the store may apply back-pressure)."""

    async def sha256(self) -> str:
        """Hex SHA-256 of every byte written since offset 0, once all writes have landed."""

    async def commit(self) -> None:
        """Publish the bytes as the blob named at open; nothing is visible before this."""

    async def close(self) -> int:
        """Stop writing and keep what is durable for a resume; return the committed size."""

    async def discard(self) -> None:
        """Drop the staged bytes."""

    async def abandon(self) -> None:
        """Stop without writing anything more or touching what is staged: another stream
        owns the upload now."""


class BlobStore(Protocol):
    """Content-addressed bytes: blobs named by their sha256, staged uploads, ranged reads."""

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        """Sizes of the blobs present, by digest; absent ones are left out."""

    async def open_upload(
        self, *, key: str, sha256: str, size: int, held: Callable[[], bool]
    ) -> StagedBlob:
        """The staged upload `key`, resumed where it left off, or new; each write it
        starts first asks `held` whether this stream may still write (UNAVAILABLE
        UPLOAD_LEASE_LOST if not)."""

    async def staged_size(self, *, key: str) -> int:
        """Bytes committed to the staged upload `key` (0 if none)."""

    async def discard_upload(self, *, key: str) -> None:
        """Drop a staged upload, if any."""

    def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
        """`limit` bytes of a blob from `offset`, a chunk at a time; NotFound if absent."""

    async def delete(self, *, sha256: str) -> None:
        """Delete a blob (absent is fine)."""
