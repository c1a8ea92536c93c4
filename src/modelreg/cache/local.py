"""L1: a bounded in-process LRU of encoded entries with a short TTL."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable


class LocalCache:
    """LRU bounded in entries and bytes; every entry expires `ttl` seconds after it was put.

    `generation` moves on every drop: a reader captures it before going to L2 or
    the database, and its fill is refused if one of its keys was dropped meanwhile
    (or if that is too long ago to tell).
    """

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._clock = clock
        self._bytes = 0
        self.generation = 0
        # (generation, keys dropped; None = everything) of the latest drops
        self._drops: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=4096)

    def get(self, key: str) -> bytes | None:
        """The live entry under `key`, or None."""
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] < self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, entries: Iterable[tuple[str, bytes]], generation: int) -> bool:
        """Store entries read at `generation`; refused (False) if one was dropped since."""
        entries = list(entries)
        if generation != self.generation and self._dropped_since(generation, entries):
            return False
        expires = self._clock() + self._ttl
        for key, value in entries:
            self._remove(key)
            self._entries[key] = (expires, value)
            self._bytes += len(key) + len(value)
        self._evict()
        return True

    def drop(self, keys: Iterable[str]) -> None:
        """Forget `keys` (an invalidation)."""
        dropped = frozenset(keys)
        self.generation += 1
        self._drops.append((self.generation, dropped))
        for key in dropped:
            self._remove(key)

    def clear(self) -> None:
        """Forget everything (a lost invalidation channel)."""
        self.generation += 1
        self._drops.append((self.generation, None))
        self._entries.clear()
        self._bytes = 0

    def _dropped_since(self, generation: int, entries: list[tuple[str, bytes]]) -> bool:
        if not self._drops or self._drops[0][0] > generation + 1:
            return True  # the history no longer reaches back that far: assume the worst
        keys = {key for key, _ in entries}
        for when, dropped in reversed(self._drops):
            if when <= generation:
                return False
            if dropped is None or not dropped.isdisjoint(keys):
                return True
        return False

    @property
    def size(self) -> int:
        """Entries held (live or not yet noticed to be expired)."""
        return len(self._entries)

    def _remove(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old[1])

    def _evict(self) -> None:
        while self._entries and (
            len(self._entries) > self._max_entries or self._bytes > self._max_bytes
        ):
            key, (_, value) = self._entries.popitem(last=False)
            self._bytes -= len(key) + len(value)
