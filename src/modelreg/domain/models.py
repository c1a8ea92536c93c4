"""Registered models: create, read, list, update, soft-delete and restore."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from modelreg.domain import events, filters
from modelreg.domain.errors import FailedPrecondition, InvalidArgument
from modelreg.domain.events import Event, EventKind
from modelreg.domain.idempotency import replayed
from modelreg.domain.names import ModelKey, check_id, parse_model_name
from modelreg.domain.paging import PageTokens, page_of, page_size, texts_position
from modelreg.domain.ports import EventLog, Idempotency, ModelReads, ModelWrites, Transactions
from modelreg.domain.rules import (
    check_description,
    check_etag,
    check_length,
    check_mask,
    check_string_map,
    check_tags,
)
from modelreg.domain.types import Model, ModelQuery, Page

UPDATABLE = frozenset({"description", "tags", "labels"})
ORDERS = {"": "name", "name": "name", "create_time": "create_time"}
ORDERS |= {"create_time desc": "create_time desc", "name asc": "name"}


class ModelTransaction(Idempotency, EventLog, ModelWrites, Protocol):
    """A transaction as the model aggregate uses it."""


class ModelStore(ModelReads, Transactions[ModelTransaction], Protocol):
    """The store as the model aggregate uses it."""


def check_model_fields(model: Model, fields: Iterable[str]) -> Model:
    """Validate the named mutable fields of a model, returning it normalised."""
    changes: dict[str, Any] = {}
    for field in fields:
        value = getattr(model, field)
        if field == "description":
            changes[field] = check_description(value, "model.description")
        elif field == "tags":
            changes[field] = check_tags(value, "model.tags")
        else:
            changes[field] = check_string_map(value, "model.labels")
    return dataclasses.replace(model, **changes)


class Models:
    """The model aggregate."""

    def __init__(self, store: ModelStore, *, tokens: PageTokens | None = None) -> None:
        self._store = store
        self._tokens = tokens or PageTokens.ephemeral()

    async def create(self, *, draft: Model, actor: str, request_id: str = "") -> Model:
        """Create a model in an existing namespace; ALREADY_EXISTS if the name is taken."""
        check_id(draft.key.model, "model_id", "model id")
        draft = check_model_fields(draft, UPDATABLE)
        payload = events.snapshot(draft)
        async with self._store.transaction() as tx:
            prior = await replayed(tx, request_id=request_id, method="CreateModel", payload=payload)
            if prior is None:
                created = await tx.insert_model(model=draft)
                await tx.append_event(event=_change(EventKind.MODEL_CREATED, created, actor, None))
                if request_id:
                    await tx.finish_request(request_id=request_id, resource=created.key.name)
                return created
        return await self._store.get_model(key=parse_model_name(prior))

    async def get(self, *, key: ModelKey) -> Model:
        """One model, soft-deleted ones included."""
        return await self._store.get_model(key=key)

    async def list(self, *, query: ModelQuery, size: int, token: str) -> Page[Model]:
        """Models of a namespace matching the query, a page at a time."""
        query = _checked_query(query)
        limit = page_size(size)
        tree = filters.parse(query.filter, filters.MODEL_FIELDS, filters.MODEL_MAPS)
        # bound to the filter's meaning, however it was spelled
        fingerprint = events.snapshot(
            dataclasses.replace(query, filter=filters.fingerprint(tree), tree=None)
        )
        query = dataclasses.replace(query, tree=tree)
        after = self._tokens.decode(token, fingerprint, functools.partial(_after, query))
        items = await self._store.list_models(
            query=dataclasses.replace(query, after=after), limit=limit + 1
        )
        return page_of(
            items, limit, lambda m: self._tokens.encode(fingerprint, _position(query, m))
        )

    async def update(self, *, changes: Model, mask: Iterable[str], etag: str, actor: str) -> Model:
        """Change the masked fields of an active model; ABORTED on a stale etag."""
        fields = check_mask(mask, UPDATABLE)
        checked = check_model_fields(changes, fields)
        values = {f: getattr(checked, f) for f in fields}
        return await self._change(
            changes.key, etag, actor, EventKind.MODEL_UPDATED, lambda m: _active(m, **values)
        )

    async def delete(self, *, key: ModelKey, etag: str, actor: str) -> Model:
        """Soft-delete: hidden from lists and lookups until restored."""
        now = datetime.now(UTC)
        return await self._change(
            key, etag, actor, EventKind.MODEL_DELETED, lambda m: _active(m, delete_time=now)
        )

    async def undelete(self, *, key: ModelKey, etag: str, actor: str) -> Model:
        """Restore a soft-deleted model."""
        return await self._change(key, etag, actor, EventKind.MODEL_UNDELETED, _restored)

    async def _change(
        self,
        key: ModelKey,
        etag: str,
        actor: str,
        kind: EventKind,
        apply: Callable[[Model], Model],
    ) -> Model:
        async with self._store.transaction() as tx:
            current = await tx.lock_model(key=key)
            check_etag(etag, current.revision, key.name)
            saved = await tx.save_model(model=apply(current))
            await tx.append_event(event=_change(kind, saved, actor, current))
        return saved


def ensure_active(model: Model) -> Model:
    """FAILED_PRECONDITION if the model is soft-deleted."""
    if model.delete_time is not None:
        raise FailedPrecondition(
            f"{model.key.name} is deleted; undelete it first",
            reason="MODEL_DELETED",
            metadata={"resource": model.key.name},
        )
    return model


def _active(model: Model, **changes: Any) -> Model:
    return dataclasses.replace(ensure_active(model), **changes)


def _restored(model: Model) -> Model:
    if model.delete_time is None:
        raise FailedPrecondition(
            f"{model.key.name} is not deleted",
            reason="MODEL_NOT_DELETED",
            metadata={"resource": model.key.name},
        )
    return dataclasses.replace(model, delete_time=None)


def _checked_query(query: ModelQuery) -> ModelQuery:
    order = ORDERS.get(" ".join(query.order_by.split()).lower())
    if order is None:
        raise InvalidArgument.field("order_by", f"must be one of {sorted(k for k in ORDERS if k)}")
    if query.name_prefix:
        check_length(query.name_prefix, "name_prefix", 63)
        check_id(query.name_prefix, "name_prefix", "name prefix")
    return dataclasses.replace(query, order_by=order, tags=check_tags(query.tags, "tags"))


def _after(query: ModelQuery, value: Any) -> tuple[str, ...]:
    """A position read back from a token: [name], or [create_time, name] (what _position
    writes); anything else raises ValueError or TypeError."""
    position = texts_position(value)
    if len(position) != (1 if query.order_by == "name" else 2):
        raise ValueError("a position of the wrong length for this order")
    if len(position) == 2 and datetime.fromisoformat(position[0]).tzinfo is None:
        raise ValueError("create_time must carry its zone")
    return position


def _position(query: ModelQuery, model: Model) -> list[str]:
    if query.order_by == "name":
        return [model.key.model]
    assert model.create_time is not None  # stored rows always have one
    return [model.create_time.isoformat(), model.key.model]


def _change(kind: EventKind, model: Model, actor: str, before: Model | None) -> Event:
    # Deleting or restoring a model changes what a lookup of its latest version answers.
    moved = (before is not None) and (before.delete_time is None) != (model.delete_time is None)
    return events.change(kind, model.key, actor, before=before, after=model, latest_moved=moved)
