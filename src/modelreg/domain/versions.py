"""Model versions: dense numbering, lifecycle and metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelreg.domain import events
from modelreg.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from modelreg.domain.events import EventKind
from modelreg.domain.idempotency import replayed
from modelreg.domain.models import ensure_active
from modelreg.domain.names import ModelKey, VersionKey, parse_version_name
from modelreg.domain.paging import PageTokens, number_position, page_of, page_size
from modelreg.domain.ports import (
    AliasTargets,
    EventLog,
    Idempotency,
    ModelWrites,
    Transactions,
    VersionReads,
    VersionWrites,
)
from modelreg.domain.rules import (
    check_description,
    check_etag,
    check_mask,
    check_metrics,
    check_source,
    check_string_map,
    check_tags,
)
from modelreg.domain.types import ModelVersion, Page, VersionQuery, VersionState

UPDATABLE = frozenset({"description", "tags", "labels", "metrics", "params", "source"})
_CHECKS: Mapping[str, Callable[[Any, str], Any]] = {
    "description": check_description,
    "tags": check_tags,
    "labels": check_string_map,
    "metrics": check_metrics,
    "params": check_string_map,
    "source": check_source,
}
CREATABLE_STATES = (VersionState.PENDING, VersionState.READY)
IMPORTABLE_STATES = (VersionState.PENDING, VersionState.READY, VersionState.FAILED)
_CLOCK_SKEW = timedelta(minutes=5)  # an imported time this far ahead of ours is refused
ORDERS = {"": True, "number desc": True, "number": False, "number asc": False}


class VersionTransaction(Idempotency, EventLog, ModelWrites, VersionWrites, AliasTargets, Protocol):
    """A transaction as the version aggregate uses it (it locks the model to number a
    version, and asks which aliases point at one before archiving it)."""


class VersionStore(VersionReads, Transactions[VersionTransaction], Protocol):
    """The store as the version aggregate uses it."""


def check_version_fields(version: ModelVersion, fields: Iterable[str]) -> ModelVersion:
    """Validate the named metadata fields of a version, returning it normalised."""
    changes = {f: _CHECKS[f](getattr(version, f), f"version.{f}") for f in fields}
    return dataclasses.replace(version, **changes)


class Versions:
    """The version aggregate."""

    def __init__(self, store: VersionStore, *, tokens: PageTokens | None = None) -> None:
        self._store = store
        self._tokens = tokens or PageTokens.ephemeral()

    async def create(
        self, *, draft: ModelVersion, actor: str, request_id: str = ""
    ) -> ModelVersion:
        """Create the next version of an active model; the number is allocated here."""
        draft = _creatable(check_version_fields(draft, UPDATABLE), actor)
        model = draft.key.model
        payload = events.snapshot(dataclasses.replace(draft, creator=""))
        async with self._store.transaction() as tx:
            prior = await replayed(
                tx, request_id=request_id, method="CreateModelVersion", payload=payload
            )
            if prior is None:
                ensure_active(await tx.lock_model(key=model))
                number = await tx.allocate_version_number(key=model)
                key = VersionKey(model, number)
                created = await tx.insert_version(version=dataclasses.replace(draft, key=key))
                await record(tx, EventKind.VERSION_CREATED, created, actor, after=created)
                if request_id:
                    await tx.finish_request(request_id=request_id, resource=key.name)
                return created
        return await self._store.get_version(key=parse_version_name(prior))

    async def import_version(self, *, draft: ModelVersion, actor: str) -> ModelVersion:
        """Record a version made in another registry under its own number and times: the
        number must be the model's next (so numbers stay dense), the times are kept."""
        if draft.state not in IMPORTABLE_STATES:
            raise InvalidArgument.field(
                "version.state", "an imported version is PENDING, READY or FAILED"
            )
        created, updated = _imported_times(draft)
        checked = check_version_fields(draft, UPDATABLE)
        version = dataclasses.replace(
            checked, state=draft.state, creator=actor, digest="", total_size=0,
            create_time=created, update_time=updated,
        )  # fmt: skip
        model = draft.key.model
        async with self._store.transaction() as tx:
            ensure_active(await tx.lock_model(key=model))
            number = await tx.allocate_version_number(key=model)
            if draft.key.number != number:  # the transaction rolls the allocation back
                if draft.key.number < number:
                    raise AlreadyExists(draft.key.name)
                raise FailedPrecondition(
                    f"the next version of {model.name} is {number}, not {draft.key.number}:"
                    " import versions in order",
                    reason="VERSION_NUMBER_NOT_NEXT",
                    metadata={"resource": model.name, "next_number": str(number)},
                )
            imported = await tx.insert_version(version=version)
            await record(tx, EventKind.VERSION_CREATED, imported, actor, after=imported)
            return imported

    async def get(self, *, key: VersionKey) -> ModelVersion:
        """One version by key, from the system of record."""
        return await self._store.get_version(key=key)

    async def list(
        self,
        *,
        model: ModelKey,
        order_by: str,
        states: Iterable[VersionState],
        size: int,
        token: str,
    ) -> Page[ModelVersion]:
        """Versions of a model, newest first by default, a page at a time."""
        newest_first = ORDERS.get(" ".join(order_by.split()).lower())
        if newest_first is None:
            raise InvalidArgument.field("order_by", "must be 'number desc' (default) or 'number'")
        query = VersionQuery(model, newest_first, tuple(sorted(set(states))))
        limit = page_size(size)
        fingerprint = events.snapshot(query)
        after = self._tokens.decode(token, fingerprint, number_position)
        query = dataclasses.replace(query, after=after)
        items = await self._store.list_versions(query=query, limit=limit + 1)
        return page_of(items, limit, lambda v: self._tokens.encode(fingerprint, v.key.number))

    async def update(
        self, *, changes: ModelVersion, mask: Iterable[str], etag: str, actor: str
    ) -> ModelVersion:
        """Change a version's metadata; its files and digest never change."""
        fields = check_mask(mask, UPDATABLE)
        checked = check_version_fields(changes, fields)
        values = {f: getattr(checked, f) for f in fields}
        return await self._change(
            changes.key,
            etag,
            actor,
            EventKind.VERSION_UPDATED,
            lambda v: dataclasses.replace(v, **values),
        )

    async def archive(self, *, key: VersionKey, etag: str, actor: str) -> ModelVersion:
        """Hide a READY version from `latest`; refused while an alias points at it."""
        async with self._store.transaction() as tx:
            current = await tx.lock_version(key=key)
            check_etag(etag, current.revision, key.name)
            if current.state == VersionState.ARCHIVED:
                return current
            _require_state(current, VersionState.READY, "archived")
            aliases = await tx.aliases_pointing_at(key=key)
            if aliases:
                raise FailedPrecondition(
                    f"{key.name} is the target of aliases {aliases}; move them first",
                    reason="VERSION_HAS_ALIASES",
                    metadata={"resource": key.name, "aliases": ",".join(aliases)},
                )
            return await _save(
                tx, current, VersionState.ARCHIVED, EventKind.VERSION_ARCHIVED, actor
            )

    async def restore(self, *, key: VersionKey, etag: str, actor: str) -> ModelVersion:
        """Return an ARCHIVED version to READY."""
        async with self._store.transaction() as tx:
            current = await tx.lock_version(key=key)
            check_etag(etag, current.revision, key.name)
            if current.state == VersionState.READY:
                return current
            _require_state(current, VersionState.ARCHIVED, "restored")
            return await _save(tx, current, VersionState.READY, EventKind.VERSION_RESTORED, actor)

    async def _change(
        self,
        key: VersionKey,
        etag: str,
        actor: str,
        kind: EventKind,
        apply: Callable[[ModelVersion], ModelVersion],
    ) -> ModelVersion:
        async with self._store.transaction() as tx:
            current = await tx.lock_version(key=key)
            check_etag(etag, current.revision, key.name)
            saved = await tx.save_version(version=apply(current))
            await record(tx, kind, saved, actor, before=current, after=saved)
        return saved


def _creatable(draft: ModelVersion, actor: str) -> ModelVersion:
    if draft.state not in CREATABLE_STATES:
        raise InvalidArgument.field("version.state", "a new version must be PENDING or READY")
    return dataclasses.replace(
        draft, creator=actor, digest="", total_size=0, create_time=None, update_time=None
    )


def _imported_times(draft: ModelVersion) -> tuple[datetime, datetime]:
    if draft.key.number < 1:
        raise InvalidArgument.field("version.number", "an imported version needs its number")
    created = draft.create_time
    if created is None:
        raise InvalidArgument.field("version.create_time", "an imported version needs it")
    updated = draft.update_time or created
    ahead = datetime.now(UTC) + _CLOCK_SKEW
    if created > ahead or updated > ahead:
        raise InvalidArgument.field("version.create_time", "a time in the future")
    if updated < created:
        raise InvalidArgument.field("version.update_time", "earlier than create_time")
    return created, updated


def _require_state(version: ModelVersion, state: VersionState, verb: str) -> None:
    if version.state != state:
        raise FailedPrecondition(
            f"{version.key.name} is {version.state.name}; only {state.name} versions can be {verb}",
            reason="INVALID_VERSION_STATE",
            metadata={"resource": version.key.name, "state": version.state.name},
        )


async def _save(
    tx: VersionTransaction, current: ModelVersion, state: VersionState, kind: EventKind, actor: str
) -> ModelVersion:
    saved = await tx.save_version(version=dataclasses.replace(current, state=state))
    await record(tx, kind, saved, actor, before=current, after=saved)
    return saved


async def record(
    tx: EventLog,
    kind: EventKind,
    version: ModelVersion,
    actor: str,
    *,
    before: ModelVersion | None = None,
    after: ModelVersion | None = None,
) -> None:
    """Append a version event to the transaction's outbox."""
    moved = moves_latest(before, after)
    await tx.append_event(
        event=events.change(
            kind, version.key, actor, before=before, after=after, latest_moved=moved
        )
    )


def moves_latest(before: ModelVersion | None, after: ModelVersion | None) -> bool:
    """Whether a change may move the model's `latest`: the version entered or left READY."""
    was_ready = before is not None and before.state == VersionState.READY
    is_ready = after is not None and after.state == VersionState.READY
    return was_ready != is_ready
