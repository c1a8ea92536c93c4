"""An in-memory registry store: the Store and Transaction ports of domain/ports.py.

It keeps the promises the domain relies on from PostgreSQL, and no more:

- A transaction works on a copy of the committed state. A clean exit from the block
  commits it (the copy becomes the state, the commit listener hears its events); an
  exception discards it, so nothing a failed transaction wrote is ever seen.
- Transactions run one at a time, the strictest schedule the row locks allow: a version
  number taken in a transaction that rolls back is free again (numbers stay dense), and
  a claim of a request_id waits for the transaction that claimed it first.
- Reads outside a transaction see the committed state only. `now()` is fixed for a
  transaction, as PostgreSQL's is; the clock ticks one millisecond per transaction, so
  times are distinct and ordered without reading the wall clock.
- Event ids come from a counter that a rollback does not give back (a sequence).

Faults and pauses come through `before(method, hook)`: the hook runs (and may raise, or
wait for an event the test sets) at the start of every call of that Transaction method.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from modelreg.domain.errors import AlreadyExists, FailedPrecondition, NotFound, RegistryError
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.ports import CommitListener, Store
from modelreg.domain.types import (
    Alias,
    AliasEvent,
    Model,
    ModelQuery,
    ModelVersion,
    Namespace,
    PriorRequest,
    VersionQuery,
    VersionState,
)

Hook = Callable[[], Awaitable[None]]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event row as the log holds it: its id and time beside what was appended."""

    event_id: int
    time: datetime
    event: Event


@dataclasses.dataclass(slots=True)
class _State:
    """Every table; values are frozen dataclasses, so a copy of the dicts is a snapshot."""

    namespaces: dict[str, Namespace] = dataclasses.field(default_factory=dict)
    models: dict[ModelKey, Model] = dataclasses.field(default_factory=dict)
    versions: dict[VersionKey, ModelVersion] = dataclasses.field(default_factory=dict)
    aliases: dict[AliasKey, Alias] = dataclasses.field(default_factory=dict)
    requests: dict[str, PriorRequest] = dataclasses.field(default_factory=dict)
    log: list[LoggedEvent] = dataclasses.field(default_factory=list)
    # protected aliases: (namespace, model or "") -> (aliases, approvals needed)
    policies: dict[tuple[str, str], tuple[tuple[str, ...], int]] = dataclasses.field(
        default_factory=dict
    )

    def copy(self) -> _State:
        return _State(
            dict(self.namespaces),
            dict(self.models),
            dict(self.versions),
            dict(self.aliases),
            dict(self.requests),
            list(self.log),
            dict(self.policies),
        )


class FakeStore:
    """The Store port in memory (reads of the committed state, transactions on a copy)."""

    def __init__(self, *, on_commit: CommitListener | None = None) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()
        self._hooks: dict[str, list[Hook]] = {}
        self._on_commit = on_commit
        self._ticks = 0
        self._event_ids = 0
        self.commits = 0
        self.rollbacks = 0

    # --- test controls -------------------------------------------------------------------

    def before(self, method: str, hook: Hook) -> None:
        """Run `hook` at the start of every call of the Transaction method `method`."""
        if not callable(getattr(FakeTransaction, method, None)):
            raise AttributeError(f"FakeTransaction has no method {method!r}")
        self._hooks.setdefault(method, []).append(hook)

    def fail(self, method: str, error: Exception, *, times: int = 1) -> None:
        """Make the next `times` calls of the Transaction method `method` raise `error`."""
        left = [times]

        async def hook() -> None:
            if left[0] > 0:
                left[0] -= 1
                raise error

        self.before(method, hook)

    @property
    def events(self) -> list[LoggedEvent]:
        """The committed event log, oldest first."""
        return list(self._state.log)

    def events_of(self, resource: str) -> list[Event]:
        """The committed events about one resource, oldest first."""
        return [e.event for e in self._state.log if e.event.resource == resource]

    # --- the Store port ------------------------------------------------------------------

    def protect(self, namespace: str, model: str, aliases: tuple[str, ...], approvals: int) -> None:
        """Seed an alias policy (model "" = the namespace default); the fake stands in for
        the AliasProtection port only, ApprovalService's own writes are tested on
        PostgreSQL (tests/integration/test_approvals.py)."""
        self._state.policies[(namespace, model)] = (aliases, approvals)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTransaction]:
        async with self._lock:
            self._ticks += 1
            tx = FakeTransaction(
                self, self._state.copy(), EPOCH + timedelta(milliseconds=self._ticks)
            )
            try:
                yield tx
            except BaseException:
                self.rollbacks += 1
                raise
            finally:
                tx.closed = True
            self._state = tx.state
            self.commits += 1
        if tx.events and self._on_commit is not None:
            await self._on_commit(tx.events)

    async def get_namespace(self, *, namespace: str) -> Namespace:
        found = self._state.namespaces.get(namespace)
        if found is None:
            raise NotFound(f"namespaces/{namespace}")
        return found

    async def list_namespaces(
        self, *, after: str | None, limit: int, only: Collection[str] | None = None
    ) -> list[Namespace]:
        ids = sorted(
            i for i in self._state.namespaces if i > (after or "") and (only is None or i in only)
        )
        return [self._state.namespaces[i] for i in ids[:limit]]

    async def get_model(self, *, key: ModelKey) -> Model:
        return _model(self._state, key)

    async def list_models(self, *, query: ModelQuery, limit: int) -> list[Model]:
        if query.tree is not None:  # filters are compiled to SQL: test them on PostgreSQL
            raise NotImplementedError("the fake store does not evaluate filters")
        found = [m for m in self._state.models.values() if _matches(m, query)]
        if query.order_by == "name":
            found.sort(key=lambda m: m.key.model)
            if query.after:
                found = [m for m in found if m.key.model > query.after[0]]
        else:
            descending = query.order_by.endswith("desc")
            found.sort(key=_created, reverse=descending)
            if query.after:
                at = (datetime.fromisoformat(query.after[0]), query.after[1])
                found = [m for m in found if (_created(m) < at if descending else _created(m) > at)]
        return found[:limit]

    async def get_version(self, *, key: VersionKey) -> ModelVersion:
        return await self.resolve(ref=Reference(key.model, number=key.number))

    async def resolve(self, *, ref: Reference) -> ModelVersion:
        (found,) = await self.resolve_many(refs=[ref])
        if isinstance(found, RegistryError):
            raise found
        return found

    async def resolve_many(
        self, *, refs: Sequence[Reference]
    ) -> list[ModelVersion | RegistryError]:
        return [_resolved(self._state, ref) for ref in refs]

    async def list_versions(self, *, query: VersionQuery, limit: int) -> list[ModelVersion]:
        _model(self._state, query.model)
        states = set(query.states) or set(VersionState)
        found = [v for v in _versions_of(self._state, query.model) if v.state in states]
        if query.newest_first:
            found.reverse()
        if query.after is not None:
            found = [v for v in found if _beyond(v.key.number, query.after, query.newest_first)]
        return found[:limit]

    async def list_aliases(self, *, model: ModelKey) -> list[Alias]:
        _model(self._state, model)
        found = [a for k, a in self._state.aliases.items() if k.model == model]
        return sorted(found, key=lambda a: a.key.alias)

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return _history(self._state, key, before, limit)

    # --- for FakeTransaction -------------------------------------------------------------

    def _next_event_id(self) -> int:
        self._event_ids += 1
        return self._event_ids

    async def _run_hooks(self, method: str) -> None:
        for hook in self._hooks.get(method, ()):
            await hook()


class FakeTransaction:
    """The Transaction port over a private copy of the store's state."""

    def __init__(self, store: FakeStore, state: _State, now: datetime) -> None:
        self._store = store
        self.state = state
        self.now = now
        self.events: list[Event] = []
        self.closed = False

    async def _enter(self, method: str) -> _State:
        if self.closed:
            raise RuntimeError(f"{method} on a transaction that has ended")
        await self._store._run_hooks(method)
        return self.state

    async def claim_request(
        self, *, request_id: str, method: str, fingerprint: str
    ) -> PriorRequest | None:
        state = await self._enter("claim_request")
        prior = state.requests.get(request_id)
        if prior is None:
            state.requests[request_id] = PriorRequest(method, fingerprint, "")
        return prior

    async def finish_request(self, *, request_id: str, resource: str) -> None:
        state = await self._enter("finish_request")
        claimed = state.requests[request_id]
        state.requests[request_id] = dataclasses.replace(claimed, resource=resource)

    async def insert_namespace(self, *, namespace: Namespace) -> Namespace:
        state = await self._enter("insert_namespace")
        if namespace.id in state.namespaces:
            raise AlreadyExists(namespace.name)
        stored = Namespace(namespace.id, namespace.description, 1, self.now, self.now)
        state.namespaces[namespace.id] = stored
        return stored

    async def insert_model(self, *, model: Model) -> Model:
        state = await self._enter("insert_model")
        key = model.key
        if key in state.models:
            raise AlreadyExists(key.name)
        if key.namespace not in state.namespaces:
            raise NotFound(f"namespaces/{key.namespace}")
        stored = Model(
            key,
            model.description,
            tuple(model.tags),
            dict(model.labels),
            create_time=self.now,
            update_time=self.now,
        )
        state.models[key] = stored
        return stored

    async def lock_model(self, *, key: ModelKey) -> Model:
        return _model(await self._enter("lock_model"), key)

    async def save_model(self, *, model: Model) -> Model:
        state = await self._enter("save_model")
        current = state.models[model.key]
        saved = dataclasses.replace(
            current,
            description=model.description,
            tags=tuple(model.tags),
            labels=dict(model.labels),
            delete_time=model.delete_time,
            revision=current.revision + 1,
            update_time=self.now,
        )
        state.models[model.key] = saved
        return saved

    async def allocate_version_number(self, *, key: ModelKey) -> int:
        state = await self._enter("allocate_version_number")
        current = state.models[key]
        number = current.latest_version_number + 1
        state.models[key] = dataclasses.replace(current, latest_version_number=number)
        return number

    async def insert_version(self, *, version: ModelVersion) -> ModelVersion:
        state = await self._enter("insert_version")
        key = version.key
        if key.number > state.models[key.model].latest_version_number or key in state.versions:
            raise AssertionError(f"{key.name} was not allocated in this transaction")
        stored = dataclasses.replace(
            version, digest="", total_size=0, revision=1,
            create_time=version.create_time or self.now,
            update_time=version.update_time or self.now,
        )  # fmt: skip
        state.versions[key] = stored
        return stored

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        state = await self._enter("lock_version")
        found = state.versions.get(key)
        if found is None:
            _model(state, key.model)  # NotFound names the model if it is missing
            raise NotFound(key.name)
        return found

    async def save_version(self, *, version: ModelVersion) -> ModelVersion:
        state = await self._enter("save_version")
        current = state.versions[version.key]
        saved = dataclasses.replace(
            version,
            creator=current.creator,
            create_time=current.create_time,
            revision=current.revision + 1,
            update_time=self.now,
        )
        state.versions[version.key] = saved
        return saved

    async def lock_alias(self, *, key: AliasKey) -> Alias | None:
        return (await self._enter("lock_alias")).aliases.get(key)

    async def save_alias(self, *, alias: Alias) -> Alias:
        state = await self._enter("save_alias")
        current = state.aliases.get(alias.key)
        revision = 1 if current is None else current.revision + 1
        saved = Alias(alias.key, alias.number, revision, alias.updater, self.now)
        state.aliases[alias.key] = saved
        return saved

    async def delete_alias(self, *, key: AliasKey) -> None:
        (await self._enter("delete_alias")).aliases.pop(key, None)

    async def aliases_pointing_at(self, *, key: VersionKey) -> list[str]:
        state = await self._enter("aliases_pointing_at")
        return sorted(
            k.alias
            for k, a in state.aliases.items()
            if k.model == key.model and a.number == key.number
        )

    async def alias_history(
        self, *, key: AliasKey, before: int | None, limit: int
    ) -> list[AliasEvent]:
        return _history(await self._enter("alias_history"), key, before, limit)

    async def alias_approvals_needed(self, *, key: AliasKey) -> int:
        state = await self._enter("alias_approvals_needed")
        ns, model = key.model.namespace, key.model.model
        policy = state.policies.get((ns, model)) or state.policies.get((ns, ""))
        return policy[1] if policy is not None and key.alias in policy[0] else 0

    async def append_event(self, *, event: Event) -> None:
        state = await self._enter("append_event")
        state.log.append(LoggedEvent(self._store._next_event_id(), self.now, event))
        self.events.append(event)


def _model(state: _State, key: ModelKey) -> Model:
    found = state.models.get(key)
    if found is None:
        raise NotFound(key.name)
    return found


def _matches(model: Model, query: ModelQuery) -> bool:
    return (
        model.key.namespace == query.namespace
        and model.key.model.startswith(query.name_prefix)
        and set(query.tags) <= set(model.tags)
        and (query.show_deleted or model.delete_time is None)
    )


def _created(model: Model) -> tuple[datetime, str]:
    assert model.create_time is not None
    return model.create_time, model.key.model


def _resolved(state: _State, ref: Reference) -> ModelVersion | RegistryError:
    model = state.models.get(ref.model)
    if model is None:
        return NotFound(ref.model.name)
    if model.delete_time is not None:
        return FailedPrecondition(
            f"{ref.model.name} is deleted",
            reason="MODEL_DELETED",
            metadata={"resource": ref.model.name},
        )
    return _pointed_at(state, ref)


def _pointed_at(state: _State, ref: Reference) -> ModelVersion | NotFound:
    if ref.number is not None:
        key = VersionKey(ref.model, ref.number)
        return state.versions.get(key) or NotFound(key.name)
    if ref.alias is not None:
        alias = state.aliases.get(AliasKey(ref.model, ref.alias))
        if alias is None:
            return NotFound(AliasKey(ref.model, ref.alias).name)
        return state.versions[VersionKey(ref.model, alias.number)]
    ready = [v for v in _versions_of(state, ref.model) if v.state == VersionState.READY]
    if not ready:
        return NotFound(
            ref.model.name,
            reason="NO_READY_VERSION",
            message=f"{ref.model.name} has no READY version",
        )
    return ready[-1]


def _beyond(number: int, after: int, newest_first: bool) -> bool:
    return number < after if newest_first else number > after


def _versions_of(state: _State, model: ModelKey) -> list[ModelVersion]:
    """A model's versions by number."""
    found = [v for k, v in state.versions.items() if k.model == model]
    return sorted(found, key=lambda v: v.key.number)


def _history(state: _State, key: AliasKey, before: int | None, limit: int) -> list[AliasEvent]:
    moves = [
        e
        for e in reversed(state.log)
        if e.event.resource == key.name
        and e.event.kind in (EventKind.ALIAS_SET, EventKind.ALIAS_DELETED)
        and (before is None or e.event_id < before)
    ]
    return [_alias_event(key, e) for e in moves[:limit]]


def _alias_event(key: AliasKey, logged: LoggedEvent) -> AliasEvent:
    before: Any = logged.event.before or {}
    after: Any = logged.event.after or {}
    return AliasEvent(
        key=key,
        previous_number=before.get("version_number", 0),
        number=after.get("version_number", 0),
        actor=logged.event.actor,
        time=logged.time,
        event_id=logged.event_id,
        change_request=after.get("change_request", ""),
        approvers=tuple(after.get("approvers", ())),
    )


if TYPE_CHECKING:  # mypy holds the fake to the port it stands in for
    _PORT: type[Store] = FakeStore
