"""The caches follow the change log: every process drops what each committed change makes
stale, whichever process wrote it, with or without Redis.

The writer's own process also drops its keys at once, before acknowledging
(tiered.CacheInvalidator); hearing them again here costs one more drop, nothing else.
With Redis, each process's follower also invalidates L2 in revision order and moves L2's
watermark (cache/remote.py, _FOLLOW): a write whose own invalidation never reached Redis
is covered within one push, and a lookup can tell how far L2 has been kept honest.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelreg.cache import keys
from modelreg.cache.local import LocalCache
from modelreg.cache.remote import RedisCache
from modelreg.cache.stats import CacheStats
from modelreg.domain.changelog import Change

FRESH_EPOCH = 2**62  # an `after` no watermark covers: start L2 afresh


class CacheApplier:
    """The Follower's `apply` for this process's L1 and the shared L2.

    L2 is invalidated before L1 drops and before the follower's cursor moves (the order
    cache/tiered.py relies on: an L1 fill from L2 needs L2's watermark at the follower's
    revision, so that no change the follower has passed can hide in what L2 answered).
    L1's drop is the last thing it does, with no await after it: the follower moves its
    cursor in the same step (domain/changelog.py), so no lookup reads the cursor before
    a change together with L1's generation after its drop.
    """

    def __init__(
        self, *, local: LocalCache | None, remote: RedisCache | None, stats: CacheStats
    ) -> None:
        self._local = local
        self._remote = remote
        self._stats = stats
        self._after = -1  # the follower's cursor before the next batch

    def begin(self, revision: int) -> None:
        """The follower starts after `revision`."""
        self._after = revision

    async def mark(self) -> None:
        """Tell L2 how far this follower has gone, without a change to apply: when L2's
        watermark is below it (a fresh or restarted Redis), L2 starts a fresh epoch
        valid up to here, instead of staying unusable until the next write."""
        if self._remote is not None and self._after >= 0:
            await self._remote.follow(after=self._after, upto=self._after, stale={})

    async def __call__(self, changes: Sequence[Change]) -> None:
        self._stats.add("changelog.changes", len(changes))
        unreadable = any(change.undecodable for change in changes)
        events = [event for change in changes for event in change.events]
        upto = changes[-1].revision
        if self._remote is not None:
            after = FRESH_EPOCH if unreadable else self._after
            stale = {} if unreadable else keys.invalidated_by(events)
            if not await self._remote.follow(after=after, upto=upto, stale=stale):
                self._stats.add("changelog.l2_errors")
        self._after = upto
        if self._local is None:
            return
        if unreadable:
            self._local.clear()  # events of a kind this release cannot read: assume the worst
            self._stats.add("changelog.clears")
            return
        stale_keys = [key for event in events for key in keys.stale_keys(event)]
        if stale_keys:
            self._local.drop(stale_keys)
            self._stats.add("changelog.keys_dropped", len(stale_keys))
