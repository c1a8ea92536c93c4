"""Consistency tokens (docs/architecture.md, "Consistency tokens").

Every mutation answers with the revision its transaction committed at; a lookup given
that revision as `min_revision` reflects every change committed at or below it, on any
server process or replica. Revisions are commit-ordered (store/changelog.py), so a state
that includes revision r includes every committed revision below r.

Two scopes carry the token through a call without threading it through every use case:

- `receipt()` around a mutating call collects the revisions its transactions committed
  at (the store reports each with `committed()` after COMMIT);
- `lookup_plan()` around a lookup holds the `Plan` that `Consistency.plan()` made for its
  `min_revision`: which cache tiers may answer, and whether the database read must go
  to the primary. The cache tiers and the store read it with `current_plan()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from modelreg.domain.errors import InvalidArgument, OutOfRange


@dataclass(slots=True)
class Receipt:
    """The highest revision the transactions of one call committed at (0: none)."""

    revision: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """How one lookup with `min_revision` may be answered.

    `local`: this process's L1 has followed the change log to `min_revision`, so its
    entries may answer. `primary`: the read replica has not replayed `min_revision`
    yet, so database reads go to the primary. The L2 rule needs the revision itself
    (cache/tiered.py: an L2 answer needs L2's invalidation watermark at or above it).
    """

    min_revision: int = 0
    local: bool = True
    primary: bool = False


ANY = Plan()
_receipt: ContextVar[Receipt | None] = ContextVar("modelreg_receipt", default=None)
_plan: ContextVar[Plan] = ContextVar("modelreg_plan", default=ANY)


@contextmanager
def receipt() -> Iterator[Receipt]:
    """Collect the commit revisions of the transactions run inside this scope."""
    collected = Receipt()
    token = _receipt.set(collected)
    try:
        yield collected
    finally:
        _receipt.reset(token)


def committed(revision: int) -> None:
    """A transaction of the current call committed at `revision` (the store calls this)."""
    collected = _receipt.get()
    if collected is not None and revision > collected.revision:
        collected.revision = revision


@contextmanager
def lookup_plan(plan: Plan) -> Iterator[None]:
    """Answer the lookups inside this scope by `plan`."""
    token = _plan.set(plan)
    try:
        yield
    finally:
        _plan.reset(token)


def current_plan() -> Plan:
    """The plan of the lookup being answered (ANY outside a lookup with a token)."""
    return _plan.get()


class Heads(Protocol):
    """The change log's head, as the primary sees it."""

    async def head(self) -> int:
        """The highest committed revision (0 for an empty log)."""
        ...


class Followed(Protocol):
    """This process's cache follower (domain/changelog.Follower)."""

    revision: int

    async def reached(self, revision: int) -> None:
        """Return once the follower has applied `revision`."""
        ...


class ReplicaHead(Protocol):
    """What the read replica has replayed."""

    async def reached(self, *, revision: int) -> bool:
        """Whether the replica's state includes `revision`."""
        ...


class Consistency:
    """Turns a token into a Plan, and a mutation's receipt into its token."""

    def __init__(
        self,
        *,
        heads: Heads,
        follower: Followed | None,
        replica: ReplicaHead | None,
        wait_seconds: float,
    ) -> None:
        self._heads = heads
        self._follower = follower
        self._replica = replica
        self._wait = wait_seconds
        self._known = 0  # a revision known to be committed (heads only move forward)

    async def token(self, collected: Receipt) -> int:
        """The revision a mutation answers: its commit's, or the head when it committed
        nothing (a retry answered from its request_id), which includes the original."""
        if collected.revision:
            return collected.revision
        return await self._head()

    async def plan(self, *, min_revision: int, deadline: float | None = None) -> Plan:
        """How to answer a lookup that must reflect `min_revision`; OUT_OF_RANGE naming the
        head if it is above it. `deadline`: seconds the call has left (None: unbounded)."""
        if min_revision < 0:
            raise InvalidArgument.field("min_revision", "must not be negative")
        if min_revision == 0:
            return ANY
        local = await self._followed(min_revision, deadline)
        if not local and min_revision > self._known:
            head = await self._head()
            if min_revision > head:
                raise OutOfRange(
                    f"min_revision {min_revision} is above the registry's head {head}"
                    " (a token from another registry?)",
                    reason="REVISION_AHEAD",
                    metadata={"min_revision": str(min_revision), "head": str(head)},
                )
        primary = self._replica is not None and not await self._replica.reached(
            revision=min_revision
        )
        return Plan(min_revision, local=local, primary=primary)

    async def _followed(self, revision: int, deadline: float | None) -> bool:
        follower = self._follower
        if follower is None:
            return False
        if follower.revision < revision:
            wait = self._wait if deadline is None else max(0.0, min(self._wait, deadline))
            try:
                await asyncio.wait_for(follower.reached(revision), wait)
            except TimeoutError:
                return False
        self._known = max(self._known, follower.revision)
        return True

    async def _head(self) -> int:
        head = await self._heads.head()
        self._known = max(self._known, head)
        return head
