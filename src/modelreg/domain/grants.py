"""The grant cache: every process holds every role binding in memory and follows the
change log (DESIGN.md §10), so a grant or a revocation made by any worker or replica
takes effect in every process.

The window in which another process still decides on the old bindings is its follower's
lag: one NOTIFY and one keyset read after the commit (the listener wakes every follower
after a reconnect, so a lost notification costs a reconnect, not a missed change). The
writer's own process applies its change before answering. A call that carries a
consistency token `min_revision` at or above a revocation's revision is decided with the
revocation applied: the gate waits for this cache to reach the token (the same wait as
the L1 cache's), and refuses with UNAVAILABLE rather than decide on older bindings.

Applying is idempotent and order-safe: each binding remembers the revision that last
set it, so a change applied early (by the writer) is not undone by an older event met
later, and the follower may apply a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from modelreg.domain.access import Binding, BindingKey, Bindings, Decision, Permission
from modelreg.domain.changelog import Change
from modelreg.domain.errors import OutOfRange, Unavailable
from modelreg.domain.events import Event, EventKind
from modelreg.domain.principals import Principal, Proof
from modelreg.domain.webhooks import Webhook

log = logging.getLogger(__name__)
ACCESS_KINDS = frozenset({EventKind.ACCESS_GRANTED, EventKind.ACCESS_REVOKED})


def event_permission(event: Event) -> Permission:
    """What reading `event` needs."""
    if event.kind in ACCESS_KINDS:
        return Permission.ACCESS_READ
    if not event.namespace:
        return Permission.AUDIT_READ
    return Permission.MODELS_READ


class BindingSnapshot(Protocol):
    """Every binding as of one revision (what the cache loads at start)."""

    async def snapshot(self) -> tuple[list[Binding], int]:
        """All bindings and the change log's head, read in one consistent snapshot."""
        ...


class GrantCache:
    """The process's role bindings; `decide` never waits, touches no database."""

    def __init__(self, *, source: BindingSnapshot | None = None) -> None:
        self._source = source
        self.bindings = Bindings()
        self._set_at: dict[BindingKey, int] = {}  # revision that last set or removed each
        self._floor = -1  # nothing at or below this revision applies (loaded past it)
        self.revision = -1  # followed up to here
        self._reload = False
        self._moved = asyncio.Condition()

    async def load(self) -> None:
        """Load every binding (after the follower has read its start: nothing is lost)."""
        if self._source is None:
            return
        bindings, head = await self._source.snapshot()
        self.bindings.replace(bindings)
        self._set_at.clear()
        self._floor = head
        self.revision = max(self.revision, head)
        log.info("access: %d role bindings loaded at revision %d", len(bindings), head)

    def decide(self, principal: Principal, permission: Permission, namespace: str) -> Decision:
        return self.bindings.decide(principal, permission, namespace)

    def readable(self, principal: Principal) -> frozenset[str] | None:
        return self.bindings.readable(principal)

    def may_see(self, principal: Principal, event: Event) -> bool:
        """Whether `principal` may read `event` (Watch streams and webhooks deliver only
        those): a grant change needs access.read in its scope; an event of no namespace
        (keys, principals) audit.read globally; any other models.read in its namespace."""
        return self.decide(principal, event_permission(event), event.namespace).allowed

    def creator_may_see(self, webhook: Webhook, event: Event) -> bool:
        """Whether a webhook's creator (with the groups it had then) may read `event`."""
        creator = Principal(webhook.created_by, Proof.API_KEY, webhook.created_groups)
        return self.may_see(creator, event)

    def applied(self, event: Event, revision: int) -> None:
        """Apply one access event committed at `revision` (the writer calls this before it
        answers; the follower for every event it reads)."""
        if event.kind not in ACCESS_KINDS or revision <= self._floor:
            return
        snapshot = event.after if event.kind is EventKind.ACCESS_GRANTED else event.before
        try:
            binding = Binding.from_json(snapshot or {})
        except (KeyError, ValueError):
            log.error("access: cannot read the binding of a %s event; reloading", event.kind)
            self._reload = True  # the next catch-up loads every binding afresh
            return
        if self._set_at.get(binding.key, -1) >= revision:
            return  # a later change of this binding is already applied
        self._set_at[binding.key] = revision
        if event.kind is EventKind.ACCESS_GRANTED:
            self.bindings.add(binding)
        else:
            self.bindings.remove(binding.key)

    def observe(self, change: Change) -> None:
        """Apply a change's access events, read by another follower of the log (the Watch
        hub) ahead of this cache's own: order-safe, so applying it twice changes nothing."""
        for event in change.events:
            self.applied(event, change.revision)

    async def __call__(self, changes: Sequence[Change]) -> None:
        """The Follower's apply: every access event in order; an event this release cannot
        read may be a grant or a revocation, so the bindings are loaded afresh."""
        if self._reload or any(change.undecodable for change in changes):
            self._reload = False
            await self.load()
        for change in changes:
            for event in change.events:
                self.applied(event, change.revision)
        self.revision = max(self.revision, changes[-1].revision)
        async with self._moved:
            self._moved.notify_all()

    async def reached(self, revision: int, *, wait_seconds: float) -> None:
        """Return once the cache has followed `revision` (deciding on older bindings could
        undo a revocation): after `wait_seconds` it loads the bindings as of the head
        instead; OUT_OF_RANGE if the token is above the head."""
        if self.revision >= revision:
            return
        try:
            async with asyncio.timeout(wait_seconds), self._moved:
                await self._moved.wait_for(lambda: self.revision >= revision)
        except TimeoutError:
            pass
        # The follower is slow (or the token is from elsewhere): read every binding as of
        # the head instead, which either covers the token or shows it is above the head.
        if self._source is not None:
            await self.load()
        if self.revision >= revision:
            return
        if self._source is not None:  # the snapshot's head is below the token
            raise OutOfRange(
                f"min_revision {revision} is above the registry's head {self._floor}"
                " (a token from another registry?)",
                reason="REVISION_AHEAD",
                metadata={"min_revision": str(revision), "head": str(self._floor)},
            )
        raise Unavailable(
            f"this server's grants have not caught up with revision {revision}; retry",
            reason="GRANTS_BEHIND",
            metadata={"min_revision": str(revision), "followed": str(self.revision)},
        )
