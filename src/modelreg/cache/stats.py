"""In-process counters of the cache tiers, read by AdminService.GetServerStats."""

from __future__ import annotations

from collections import Counter


class CacheStats(Counter[str]):
    """Named counters: `cache.l1.hits`, `cache.l2.misses`, `cache.db.lookups`, ..."""

    def add(self, name: str, count: int = 1) -> None:
        if count:
            self[name] += count
