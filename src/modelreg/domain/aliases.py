"""Aliases: atomic, audited moves of named pointers; rollback is a move back."""

from __future__ import annotations

from typing import Protocol

from modelreg.domain import events
from modelreg.domain.approvals import approval_required
from modelreg.domain.errors import Aborted, FailedPrecondition, NotFound
from modelreg.domain.events import EventKind
from modelreg.domain.idempotency import replayed
from modelreg.domain.models import ensure_active
from modelreg.domain.names import AliasKey, ModelKey, VersionKey, check_number
from modelreg.domain.paging import PageTokens, number_position, page_of, page_size
from modelreg.domain.ports import (
    AliasProtection,
    AliasReads,
    AliasWrites,
    EventLog,
    Idempotency,
    ModelWrites,
    Transactions,
    VersionWrites,
)
from modelreg.domain.rules import check_etag
from modelreg.domain.types import Alias, AliasEvent, Page, VersionState


class AliasTransaction(
    Idempotency, EventLog, ModelWrites, VersionWrites, AliasWrites, AliasProtection, Protocol
):
    """A transaction as the alias aggregate uses it (a move locks the model, then the
    target version, shared)."""


class AliasStore(AliasReads, Transactions[AliasTransaction], Protocol):
    """The store as the alias aggregate uses it."""


class Aliases:
    """The alias aggregate."""

    def __init__(self, store: AliasStore, *, tokens: PageTokens | None = None) -> None:
        self._store = store
        self._tokens = tokens or PageTokens.ephemeral()

    async def set(
        self, *, key: AliasKey, number: int, etag: str, expected: int | None, actor: str
    ) -> tuple[Alias, int]:
        """Point `key` at READY version `number`; return the alias and its previous target.

        Compare-and-set: with `etag` or `expected` (0 = must not exist) the move
        happens only if nobody moved the alias since. Setting it to where it
        already points is a no-op, so retries are safe.
        """
        check_number(number, "version_number")
        async with self._store.transaction() as tx:
            current = await _lock(tx, key)
            if current is not None and current.number == number:
                return current, current.number
            _check_expected(key, current, etag, expected)
            return await _move(tx, key, current, number, actor), _target(current)

    async def delete(self, *, key: AliasKey, etag: str, actor: str) -> Alias:
        """Delete an alias; its history stays."""
        async with self._store.transaction() as tx:
            current = await _existing(tx, key)
            check_etag(etag, current.revision, key.name)
            await tx.delete_alias(key=key)
            await _record(tx, key, actor, current.number, 0)
        return current

    async def rollback(
        self, *, key: AliasKey, etag: str, actor: str, request_id: str = ""
    ) -> tuple[Alias, int]:
        """Move an alias back to the version it pointed at before its last move."""
        async with self._store.transaction() as tx:
            payload = {"alias": key.name, "etag": etag}
            prior = await replayed(
                tx, request_id=request_id, method="RollbackAlias", payload=payload
            )
            current = await _existing(tx, key)
            last = await tx.alias_history(key=key, before=None, limit=1)
            if prior is not None:
                return current, last[0].previous_number if last else 0
            check_etag(etag, current.revision, key.name)
            if not last or last[0].previous_number == 0:
                raise FailedPrecondition(
                    f"{key.name} has no earlier version to roll back to",
                    reason="NO_PREVIOUS_VERSION",
                    metadata={"resource": key.name},
                )
            moved = await _move(tx, key, current, last[0].previous_number, actor)
            if request_id:
                await tx.finish_request(request_id=request_id, resource=key.name)
            return moved, current.number

    async def list(self, *, model: ModelKey) -> list[Alias]:
        """Every alias of a model."""
        return await self._store.list_aliases(model=model)

    async def history(self, *, key: AliasKey, size: int, token: str) -> Page[AliasEvent]:
        """Moves of an alias, newest first, a page at a time."""
        limit = page_size(size)
        before = self._tokens.decode(token, key.name, number_position)
        items = await self._store.alias_history(key=key, before=before, limit=limit + 1)
        return page_of(items, limit, lambda e: self._tokens.encode(key.name, e.event_id))


async def _lock(tx: AliasTransaction, key: AliasKey) -> Alias | None:
    # The model row lock serialises every move of this model's aliases.
    ensure_active(await tx.lock_model(key=key.model))
    # A protected alias moves (and is deleted) only through an approved change request
    # (domain/approvals.py); the refusal comes before anything is written.
    needed = await tx.alias_approvals_needed(key=key)
    if needed:
        raise approval_required(key, needed)
    return await tx.lock_alias(key=key)


async def _existing(tx: AliasTransaction, key: AliasKey) -> Alias:
    current = await _lock(tx, key)
    if current is None:
        raise NotFound(key.name)
    return current


def _check_expected(key: AliasKey, current: Alias | None, etag: str, expected: int | None) -> None:
    if etag and current is None:
        raise Aborted(f"{key.name} no longer exists", metadata={"resource": key.name})
    if current is not None:
        check_etag(etag, current.revision, key.name)
    if expected is not None and expected != _target(current):
        raise Aborted(
            f"{key.name} points at version {_target(current)}, not {expected}",
            reason="ALIAS_MOVED",
            metadata={"resource": key.name, "version_number": str(_target(current))},
        )


async def _move(
    tx: AliasTransaction, key: AliasKey, current: Alias | None, number: int, actor: str
) -> Alias:
    target = await tx.lock_version(key=VersionKey(key.model, number), shared=True)
    if target.state != VersionState.READY:
        raise FailedPrecondition(
            f"{target.key.name} is {target.state.name}; aliases point only at READY versions",
            reason="VERSION_NOT_READY",
            metadata={"resource": target.key.name, "state": target.state.name},
        )
    revision = current.revision + 1 if current else 1
    saved = await tx.save_alias(alias=Alias(key, number, revision=revision, updater=actor))
    await _record(tx, key, actor, _target(current), number)
    return saved


def _target(alias: Alias | None) -> int:
    return 0 if alias is None else alias.number


async def _record(tx: AliasTransaction, key: AliasKey, actor: str, before: int, after: int) -> None:
    kind = EventKind.ALIAS_SET if after else EventKind.ALIAS_DELETED
    await tx.append_event(
        event=events.Event(
            kind,
            key,
            actor,
            before={"version_number": before} if before else None,
            after={"version_number": after} if after else None,
            latest_moved=False,  # `latest` is not an alias: moving one never moves it
        )
    )
