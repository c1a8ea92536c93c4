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

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
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
    UploadProgress,
    UploadSession,
    VersionFile,
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


class AliasProtection(Protocol):
    """Whether an alias is protected (domain/approvals.py)."""

    async def alias_approvals_needed(self, *, key: AliasKey) -> int:
        """Approvals a move of `key` needs: the model's policy, else the namespace
        default; 0 when the alias is not protected."""


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

    async def list_namespaces(
        self, *, after: str | None, limit: int, only: Collection[str] | None = None
    ) -> list[Namespace]:
        """Namespaces in id order after `after`; only those in `only`, unless None."""


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
    Idempotency,
    EventLog,
    NamespaceWrites,
    ModelWrites,
    VersionWrites,
    AliasWrites,
    AliasProtection,
    Protocol,
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


# --- artifacts (domain/artifacts.py, domain/uploads.py, domain/leases.py) ------------------


class Clock(Protocol):
    """Time as the upload lease sees it (the system's, or one a test moves by hand)."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[None]:
        """A block that raises TimeoutError once it has run for `seconds`."""


class UploadLeases(Protocol):
    """One stream at a time per upload: a lease with a fencing token (domain/leases.py)."""

    async def claim(self, *, version: VersionKey, upload_id: str, seconds: float) -> int | None:
        """Take the lease for `seconds` if nobody holds it: its token, larger than every
        token the upload had before; None if another stream holds it."""

    async def renew(
        self, *, version: VersionKey, upload_id: str, token: int, seconds: float
    ) -> bool:
        """Extend the lease of `token` and mark its blob used; False if the upload has
        another token now (or is complete, released or gone)."""

    async def release(self, *, version: VersionKey, upload_id: str, token: int) -> None:
        """End the lease of `token` now, if it is still the upload's."""

    async def live(self, *, version: VersionKey) -> list[str]:
        """Ids of the version's uploads whose lease is held now (a stream is running)."""


class UploadTransaction(UploadLeases, Protocol):
    """Writes of upload sessions: the row, its lease, its progress."""

    async def save_upload(self, *, session: UploadSession) -> UploadSession:
        """Insert an upload, or return (locked) the one already under its id."""

    async def record_progress(
        self,
        *,
        version: VersionKey,
        upload_id: str,
        token: int,
        progress: UploadProgress,
        complete: bool = False,
    ) -> bool:
        """The fence: write the upload's progress only if `token` is still its lease's and
        it is not complete; False, and nothing written, otherwise."""

    async def drop_uploads(self, *, version: VersionKey) -> list[UploadSession]:
        """Delete every upload of a version; return them (what they staged goes next)."""


class ArtifactTransaction(UploadTransaction, Transaction, Protocol):
    """The Transaction, plus the writes of a version's files, uploads and blob records."""

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
    """One stream's bytes on their way into the blob store, hashed as they arrive.

    What it holds durably is reported to `on_progress` (see BlobStore.open_upload) for
    the stream to record; it publishes only what the database recorded."""

    @property
    def progress(self) -> UploadProgress:
        """What this stream holds durably now: where a resume would continue."""

    async def write(self, data: bytes) -> None:
        """Append bytes (buffered; the store may apply back-pressure)."""

    async def finish(self) -> tuple[str, UploadProgress]:
        """Land every byte written: the hex SHA-256 of the whole file, and the progress
        that holds all of it (for the stream to record before it publishes)."""

    async def publish(self, progress: UploadProgress) -> None:
        """Make the blob named at open from exactly what `progress` records; refused
        (UNAVAILABLE UPLOAD_EXPIRED, start again) if the store no longer holds those bytes."""

    async def pause(self) -> UploadProgress:
        """Stop writing; what is durable, for a resume (nothing is written after this)."""

    async def discard(self) -> None:
        """Drop the staged bytes, for an upload that starts again from 0."""


class BlobStore(Protocol):
    """Content-addressed bytes: blobs named by their sha256, staged uploads, ranged reads."""

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        """Sizes of the blobs present, by digest; absent ones are left out."""

    async def open_upload(
        self,
        *,
        key: str,
        sha256: str,
        size: int,
        token: int,
        resume: UploadProgress,
        on_progress: Callable[[UploadProgress], None],
    ) -> StagedBlob:
        """Stage the upload `key` for the stream holding lease `token`, continuing from
        `resume` (as the database recorded it) if the store can still use it, else from 0
        (its `progress` says which); `on_progress` hears each growth of the durable prefix."""

    async def discard_upload(self, *, key: str, sha256: str, staged: UploadProgress) -> None:
        """Drop everything staged for the upload `key` of the blob `sha256` (recorded as
        `staged`), by any stream."""

    def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
        """`limit` bytes of a blob from `offset`, a chunk at a time; NotFound if absent."""

    async def delete(self, *, sha256: str) -> None:
        """Delete a blob (absent is fine)."""
