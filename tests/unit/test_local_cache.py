"""L1: LRU bounds, TTL, and fills refused when their keys were dropped meanwhile."""

from __future__ import annotations

from modelreg.cache.local import LocalCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = LocalCache(max_entries=10, max_bytes=10_000, ttl=1.0, clock=clock)
    cache.put([("k", b"v")], cache.generation)
    clock.now = 0.99
    assert cache.get("k") == b"v"
    clock.now = 1.01
    assert cache.get("k") is None


def test_lru_bounds_entries_and_bytes() -> None:
    cache = LocalCache(max_entries=2, max_bytes=10_000, ttl=10)
    for key in "abc":
        cache.put([(key, b"v")], cache.generation)
    assert (cache.get("a"), cache.size) == (None, 2)
    small = LocalCache(max_entries=100, max_bytes=10, ttl=10)
    small.put([("a", b"12345"), ("b", b"12345")], small.generation)
    assert small.get("a") is None
    assert small.get("b") == b"12345"


def test_fill_refused_only_if_its_keys_were_dropped_since_the_read() -> None:
    cache = LocalCache(max_entries=10, max_bytes=10_000, ttl=10)
    read_at = cache.generation
    cache.drop(["other"])
    assert cache.put([("k", b"v")], read_at)  # unrelated drop
    read_at = cache.generation
    cache.drop(["k"])
    assert not cache.put([("k", b"old")], read_at)
    assert cache.get("k") is None
    read_at = cache.generation
    cache.clear()
    assert not cache.put([("j", b"v")], read_at)


def test_fill_refused_when_history_is_too_short() -> None:
    cache = LocalCache(max_entries=10, max_bytes=10_000, ttl=10)
    read_at = cache.generation
    for i in range(5000):
        cache.drop([f"x{i}"])
    assert not cache.put([("k", b"v")], read_at)
