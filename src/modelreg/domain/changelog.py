"""The change log: every committed transaction's events at a revision in commit order,
and the Follower loop that every consumer of it is (DESIGN.md §10).

A follower is a cursor and a loop: woken when a revision commits (or when the wake-up
channel was lost and may have missed some), it reads the changes after its cursor by
keyset, applies them in order and moves the cursor. Revisions are commit-ordered, so a
read that sees revision r sees every committed revision below it: the cursor never moves
past a change that can still appear.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from modelreg.domain.errors import Unavailable
from modelreg.domain.events import SCOPE, Event, EventKind, Subject
from modelreg.domain.names import (
    REGISTRY,
    AliasKey,
    ModelKey,
    NamespaceKey,
    PrincipalKey,
    RegistryKey,
    VersionKey,
    WebhookKey,
    parse_alias_name,
    parse_model_name,
    parse_namespace_name,
    parse_principal_name,
    parse_registry_name,
    parse_version_name,
    parse_webhook_key,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    """One committed transaction: its revision and its events, in the order it wrote them.

    `undecodable` counts events this release cannot read (a kind a newer release wrote):
    a follower that cannot tell what they touched must assume the worst. `time` is when
    the transaction wrote its events (the events' `time` column), when read from a store.
    `positions` gives each event's place in the transaction as stored, counting the
    undecodable ones (empty: 0, 1, 2, ... as in `events`).
    """

    revision: int
    events: tuple[Event, ...]
    undecodable: int = 0
    time: datetime | None = None
    positions: tuple[int, ...] = ()

    def indexed(self) -> Iterator[tuple[int, Event]]:
        """Each event with its position in the transaction as stored."""
        return zip(self.positions or range(len(self.events)), self.events, strict=True)


class ChangeLog(Protocol):
    """The committed changes, read by revision."""

    async def changes_after(self, *, revision: int, limit: int) -> list[Change]:
        """Whole committed transactions with a revision above `revision`, in revision
        order; at least `limit` events' worth when there are that many (a transaction is
        never split, so a page may exceed `limit` by the rest of its last transaction)."""
        ...

    async def head(self) -> int:
        """The highest committed revision (0 for an empty log)."""
        ...


Apply = Callable[[Sequence[Change]], Awaitable[None]]
MAX_RETRY_SECONDS = 10.0  # the longest a follower backs off after a failure


class Follower:
    """Applies every change after its cursor, in order, each once, when woken."""

    def __init__(
        self,
        *,
        log: ChangeLog,
        apply: Apply,
        batch: int = 1000,
        retry_seconds: float = 0.5,
        name: str = "follower",
        outlives_failures: bool = False,
    ) -> None:
        self._log = log
        self._apply = apply
        self._batch = batch
        self._retry = retry_seconds
        self._name = name
        self._outlives_failures = outlives_failures
        self._woken = asyncio.Event()
        self._moved = asyncio.Condition()
        self.revision = -1  # the last revision applied; -1 until start()

    async def start(self) -> None:
        """Begin after the current head: what committed before is not this follower's
        to apply. Subscribe to wake-ups first, so nothing commits unseen in between."""
        self.revision = await self._log.head()

    def wake(self, revision: int | None = None) -> None:
        """A revision committed (None: one may have, e.g. the listener reconnected)."""
        if revision is None or revision > self.revision:
            self._woken.set()

    async def run(self) -> None:
        """Follow until cancelled; a database that cannot be reached is retried. Any
        other failure ends the loop, unless made with `outlives_failures` (the caches'
        follower: one that stopped would leave them unfollowed for the life of the
        process): then it is logged and retried. The cursor has not moved past a failed
        batch, so it is applied again (its apply must be idempotent); retries back off,
        doubling up to MAX_RETRY_SECONDS, until a batch applies."""
        failures = 0
        while True:
            await self._woken.wait()
            self._woken.clear()
            try:
                await self.catch_up()
            except Unavailable:
                log.warning("%s: the change log cannot be read; retrying", self._name)
            except Exception:
                if not self._outlives_failures:
                    raise
                log.exception("%s: following the change log failed; retrying", self._name)
            else:
                failures = 0
                continue
            await asyncio.sleep(min(self._retry * 2**failures, MAX_RETRY_SECONDS))
            failures += 1
            self._woken.set()

    async def catch_up(self) -> None:
        """Apply everything committed after the cursor, batch by batch."""
        while True:
            changes = await self._log.changes_after(revision=self.revision, limit=self._batch)
            if not changes:
                return
            await self._apply(changes)
            # The cursor moves with no await after apply returns: a reader of `revision`
            # never sees an apply's last effects (L1's drop) with the cursor before them.
            self.revision = changes[-1].revision
            async with self._moved:  # may wait for the lock; the cursor has already moved
                self._moved.notify_all()
            if sum(len(c.events) + c.undecodable for c in changes) < self._batch:
                return  # a short page is the end: nothing more had committed (one read)

    async def reached(self, revision: int) -> None:
        """Return once the cursor is at or past `revision`."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.revision >= revision)


def parse_subject(kind: EventKind, name: str) -> Subject:
    """The typed subject of a stored event: its resource name read as the key type its
    kind fixes (InvalidArgument if the name is not one)."""
    subject_type = kind.subject_type
    if subject_type == SCOPE:  # a role binding's: a namespace, or the whole registry
        return RegistryKey() if name == REGISTRY else NamespaceKey(parse_namespace_name(name))
    return _SUBJECT_PARSERS[subject_type](name)  # type: ignore[index]


_SUBJECT_PARSERS: dict[type[Subject], Callable[[str], Subject]] = {
    NamespaceKey: lambda name: NamespaceKey(parse_namespace_name(name)),
    ModelKey: parse_model_name,
    VersionKey: parse_version_name,
    AliasKey: parse_alias_name,
    PrincipalKey: parse_principal_name,
    RegistryKey: parse_registry_name,
    WebhookKey: parse_webhook_key,
}
