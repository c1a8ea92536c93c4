"""AccessService's use cases: grant, revoke and list role bindings (domain/access.py
says what the roles hold; domain/grants.py keeps every process's copy)."""

from __future__ import annotations

from typing import Protocol

from modelreg.domain.access import Binding, BindingKey, SubjectKind
from modelreg.domain.events import Event
from modelreg.domain.grants import GrantCache
from modelreg.domain.paging import PageTokens, page_of, page_size, texts_position
from modelreg.domain.types import Page

Position = tuple[str, str, str, str]


class AccessStore(Protocol):
    """Role bindings, stored; each change with its event, in one transaction."""

    async def grant(self, *, key: BindingKey, actor: str) -> tuple[Binding, Event, int]:
        """Make the binding (ALREADY_EXISTS if there): it, its event, its revision."""
        ...

    async def revoke(self, *, key: BindingKey, actor: str) -> tuple[Binding, Event, int]:
        """Remove the binding (NOT_FOUND if there is none): it, its event, its revision."""
        ...

    async def list_bindings(
        self,
        *,
        scope: str | None,
        subject: tuple[SubjectKind, str] | None,
        after: Position | None,
        limit: int,
    ) -> list[Binding]:
        """Bindings after `after` in (scope, kind, subject, role) order."""
        ...


class AccessControl:
    """Grant, revoke, list; the writer's own grant cache applies each change before the
    call answers (other processes follow the change log)."""

    def __init__(self, *, store: AccessStore, grants: GrantCache, tokens: PageTokens) -> None:
        self._store = store
        self._grants = grants
        self._tokens = tokens

    async def grant(self, *, key: BindingKey, actor: str) -> Binding:
        binding, event, revision = await self._store.grant(key=key, actor=actor)
        self._grants.applied(event, revision)
        return binding

    async def revoke(self, *, key: BindingKey, actor: str) -> Binding:
        binding, event, revision = await self._store.revoke(key=key, actor=actor)
        self._grants.applied(event, revision)
        return binding

    async def list(
        self,
        *,
        scope: str | None,
        subject: tuple[SubjectKind, str] | None,
        size: int,
        token: str,
    ) -> Page[Binding]:
        """Bindings in (namespace, subject kind, subject, role) order, a page at a time."""
        limit = page_size(size)
        query = ["bindings", scope, list(subject) if subject else None]
        after = self._tokens.decode(token, query, texts_position)
        position = _position(after) if after is not None else None
        items = await self._store.list_bindings(
            scope=scope, subject=subject, after=position, limit=limit + 1
        )
        return page_of(items, limit, lambda last: self._tokens.encode(query, _key_of(last)))


def _key_of(binding: Binding) -> list[str]:
    key = binding.key
    return [key.scope, key.kind.value, key.subject, key.role.value]


def _position(values: tuple[str, ...]) -> Position:
    scope, kind, subject, role = (*values, "", "", "", "")[:4]
    return scope, kind, subject, role
