"""Namespaces: the teams' spaces of models."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from modelreg.domain.events import Event, EventKind
from modelreg.domain.idempotency import replayed
from modelreg.domain.names import NamespaceKey, check_id
from modelreg.domain.paging import PageTokens, page_of, page_size, text_position
from modelreg.domain.ports import (
    EventLog,
    Idempotency,
    NamespaceReads,
    NamespaceWrites,
    Transactions,
)
from modelreg.domain.rules import check_description
from modelreg.domain.types import Namespace, Page


class NamespaceTransaction(Idempotency, EventLog, NamespaceWrites, Protocol):
    """A transaction as the namespaces use it."""


class NamespaceStore(NamespaceReads, Transactions[NamespaceTransaction], Protocol):
    """The store as the namespaces use it."""


class Namespaces:
    """Create, read and list namespaces."""

    def __init__(self, store: NamespaceStore, *, tokens: PageTokens | None = None) -> None:
        self._store = store
        self._tokens = tokens or PageTokens.ephemeral()

    async def create(
        self, *, namespace_id: str, description: str, actor: str, request_id: str = ""
    ) -> Namespace:
        """Create a namespace; ALREADY_EXISTS if the id is taken."""
        draft = Namespace(
            id=check_id(namespace_id, "namespace_id", "namespace id"),
            description=check_description(description, "namespace.description"),
        )
        async with self._store.transaction() as tx:
            payload = {"id": draft.id, "description": draft.description}
            if await replayed(tx, request_id=request_id, method="CreateNamespace", payload=payload):
                return await self._store.get_namespace(namespace=draft.id)
            created = await tx.insert_namespace(namespace=draft)
            subject = NamespaceKey(created.id)
            await tx.append_event(
                event=Event(
                    EventKind.NAMESPACE_CREATED, subject, actor, after=payload, latest_moved=False
                )
            )
            if request_id:
                await tx.finish_request(request_id=request_id, resource=created.name)
        return created

    async def get(self, *, namespace_id: str) -> Namespace:
        """One namespace."""
        return await self._store.get_namespace(namespace=namespace_id)

    async def list(
        self, *, size: int, token: str, only: Collection[str] | None = None
    ) -> Page[Namespace]:
        """Namespaces in id order, a page at a time; only those in `only` (the ones the
        caller may read) unless None, filtered in the query so no page is short."""
        limit = page_size(size)
        after = self._tokens.decode(token, "namespaces", text_position)
        items = await self._store.list_namespaces(after=after, limit=limit + 1, only=only)
        return page_of(items, limit, lambda last: self._tokens.encode("namespaces", last.id))
