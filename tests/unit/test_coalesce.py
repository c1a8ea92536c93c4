"""The Coalescer: callers of one loop turn share one fetch, which starts after they asked."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

import pytest

from modelreg.domain.coalesce import Coalescer


async def settle() -> None:
    """Let every ready callback and task step run (a turn ends, a batch task starts)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Source:
    """A fetch that records what it was asked and when, and can be held or made to fail."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []  # ("asked", key) / ("fetch", keys)
        self.calls: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetch(self, keys: Sequence[str]) -> list[str]:
        self.calls.append(list(keys))
        self.log.append(("fetch", tuple(keys)))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return [key.upper() for key in keys]

    async def ask(self, coalescer: Coalescer[str, str], *keys: str) -> list[str]:
        for key in keys:
            self.log.append(("asked", key))
        return await coalescer.load(list(keys))


async def test_callers_of_one_turn_share_one_fetch_with_each_key_once() -> None:
    source = Source()
    counts: dict[str, int] = {}
    coalescer = Coalescer(source.fetch, count=lambda n, k: counts.update({n: counts.get(n, 0) + k}))
    keys = [f"k{i % 10}" for i in range(50)]
    answers = await asyncio.gather(*(source.ask(coalescer, key) for key in keys))
    assert answers == [[key.upper()] for key in keys]
    assert len(source.calls) == 1
    assert sorted(source.calls[0]) == sorted(set(keys))
    assert counts == {"store.resolve.batches": 1, "store.resolve.keys": 10}


async def test_one_callers_keys_come_back_in_its_order_duplicates_included() -> None:
    source = Source()
    coalescer = Coalescer(source.fetch)
    assert await coalescer.load(["b", "a", "b"]) == ["B", "A", "B"]
    assert await coalescer.load([]) == []


async def test_every_fetch_starts_after_each_of_its_callers_asked() -> None:
    """What makes a coalesced STRONG read still strong: no caller joins a read already out."""
    source = Source()
    source.hold = asyncio.Event()
    coalescer = Coalescer(source.fetch, max_inflight=2)
    violations = 0

    async def wave(n: int) -> None:
        await asyncio.gather(*(source.ask(coalescer, f"w{n}-{i}") for i in range(5)))

    waves = [asyncio.create_task(wave(n)) for n in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    source.hold.set()
    await asyncio.gather(*waves)
    for position, (what, keys) in enumerate(source.log):
        if what == "fetch" and isinstance(keys, tuple):
            asked_later = {k for w, k in source.log[position:] if w == "asked"}
            violations += len(asked_later & set(keys))
    assert violations == 0
    assert sum(len(call) for call in source.calls) == 30


async def test_callers_arriving_while_the_slots_are_busy_leave_together_when_one_frees() -> None:
    source = Source()
    source.hold = asyncio.Event()
    coalescer = Coalescer(source.fetch, max_inflight=1)
    first = asyncio.create_task(source.ask(coalescer, "a"))
    await settle()
    assert source.calls == [["a"]]  # out, and held
    later = []
    for i in range(10):  # ten separate turns, while the only slot is busy
        later.append(asyncio.create_task(source.ask(coalescer, f"b{i}")))
        await asyncio.sleep(0)
    assert len(source.calls) == 1
    source.hold.set()
    assert await first == ["A"]
    assert [await t for t in later] == [[f"B{i}"] for i in range(10)]
    assert source.calls[1] == [f"b{i}" for i in range(10)]  # one fetch for all ten
    assert len(source.calls) == 2


async def test_a_batch_is_never_larger_than_max_batch() -> None:
    source = Source()
    coalescer = Coalescer(source.fetch, max_batch=10)
    keys = [f"k{i}" for i in range(25)]
    assert await coalescer.load(keys) == [k.upper() for k in keys]
    assert [len(call) for call in source.calls] == [10, 10, 5]


async def test_a_failed_fetch_fails_each_of_its_callers_and_the_next_batch_works() -> None:
    source = Source()
    source.fail = ConnectionError("database down")
    coalescer = Coalescer(source.fetch)
    results = await asyncio.gather(
        *(source.ask(coalescer, f"k{i}") for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    source.fail = None
    assert await coalescer.load(["k0"]) == ["K0"]


async def test_a_caller_that_leaves_does_not_cancel_the_others() -> None:
    source = Source()
    source.hold = asyncio.Event()
    coalescer = Coalescer(source.fetch)
    leaving = asyncio.create_task(source.ask(coalescer, "a"))
    staying = asyncio.create_task(source.ask(coalescer, "a", "b"))
    await settle()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    source.hold.set()
    assert await staying == ["A", "B"]
    assert source.calls == [["a", "b"]]


async def test_a_failure_nobody_waits_for_any_more_is_not_reported_as_unretrieved() -> None:
    source = Source()
    source.hold = asyncio.Event()
    source.fail = ValueError("late")
    coalescer = Coalescer(source.fetch)
    caller = asyncio.create_task(coalescer.load(["a"]))
    await settle()
    caller.cancel()
    seen: list[object] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        source.hold.set()
        await settle()
        gc.collect()
        await settle()
    finally:
        loop.set_exception_handler(previous)
    assert seen == []
