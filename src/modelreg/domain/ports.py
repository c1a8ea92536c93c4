"""The ports: small Protocols the adapters in store/, cache/ and blobs/ implement.

Domain code talks only to these. A mutation runs inside one `Transaction`
(one database transaction, its event row included); reads go through `Reader`,
which a cache may wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from modelreg.domain.errors import RegistryError
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.types import (
    Alias,
    AliasEvent,
    Event,
    Model,
    ModelVersion,
    Namespace,
    VersionState,
)


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


class Transaction(Protocol):
    """Reads under row locks and writes, all committed or rolled back together."""

    async def claim_request(
        self, *, request_id: str, method: str, fingerprint: str
    ) -> PriorRequest | None:
        """Record an idempotency key; return the earlier call if the key was seen before."""

    async def finish_request(self, *, request_id: str, resource: str) -> None:
        """Store the resource name the claimed request produced."""

    async def insert_namespace(self, *, namespace: Namespace) -> Namespace:
        """Insert; AlreadyExists if the id is taken."""

    async def insert_model(self, *, model: Model) -> Model:
        """Insert; AlreadyExists if the name is taken, NotFound if the namespace is missing."""

    async def lock_model(self, *, key: ModelKey) -> Model:
        """Read a model and lock it until commit; NotFound if absent."""

    async def save_model(self, *, model: Model) -> Model:
        """Write a locked model's mutable fields, bumping revision and update_time."""

    async def allocate_version_number(self, *, key: ModelKey) -> int:
        """Take the next dense version number of a locked-or-lockable model."""

    async def insert_version(self, *, version: ModelVersion) -> ModelVersion:
        """Insert a version whose number was allocated in this transaction."""

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        """Read a version and lock it (shared or exclusive) until commit; NotFound if absent."""

    async def save_version(self, *, version: ModelVersion) -> ModelVersion:
        """Write a locked version's mutable fields, bumping revision and update_time."""

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        """Read an alias under lock; None if it does not exist."""

    async def save_alias(self, *, alias: Alias) -> Alias:
        """Insert or move an alias, bumping its revision."""

    async def delete_alias(self, *, key: AliasKey) -> None:
        """Delete an alias."""

    async def aliases_pointing_at(self, *, key: VersionKey) -> list[str]:
        """Ids of the aliases that point at a version."""

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        """Moves of an alias, newest first, with event ids below `before`."""

    async def append_event(self, *, event: Event) -> None:
        """Write one event row in this transaction."""


class Reader(Protocol):
    """Reads outside a transaction: the lookups and the listings."""

    async def get_namespace(self, *, namespace: str) -> Namespace:
        """One namespace; NotFound if absent."""

    async def list_namespaces(self, *, after: str | None, limit: int) -> list[Namespace]:
        """Namespaces in id order after `after`."""

    async def get_model(self, *, key: ModelKey) -> Model:
        """One model, soft-deleted or not; NotFound if absent."""

    async def list_models(self, *, query: ModelQuery, limit: int) -> list[Model]:
        """Models matching `query`, in its order, after its position."""

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

    async def list_aliases(self, *, model: ModelKey) -> list[Alias]:
        """Every alias of a model, by id; NotFound if the model is absent."""

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        """Moves of an alias, newest first, with event ids below `before`."""


class Store(Reader, Protocol):
    """The system of record: reads, plus transactions for mutations."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One database transaction; committed when the block exits cleanly."""
