"""L1 follows the change log: every process drops what each committed change makes
stale, whichever process wrote it, with or without Redis.

The writer's own process also drops its keys at once, before acknowledging
(tiered.CacheInvalidator); hearing them again here costs one more drop, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelreg.cache import keys
from modelreg.cache.local import LocalCache
from modelreg.cache.stats import CacheStats
from modelreg.domain.changelog import Change


class LocalCacheApplier:
    """The Follower's `apply` for this process's L1."""

    def __init__(self, *, local: LocalCache, stats: CacheStats) -> None:
        self._local = local
        self._stats = stats

    async def __call__(self, changes: Sequence[Change]) -> None:
        self._stats.add("changelog.changes", len(changes))
        if any(change.undecodable for change in changes):
            self._local.clear()  # events of a kind this release cannot read: assume the worst
            self._stats.add("changelog.clears")
            return
        stale = [
            key for change in changes for event in change.events for key in keys.stale_keys(event)
        ]
        if stale:
            self._local.drop(stale)
            self._stats.add("changelog.keys_dropped", len(stale))
