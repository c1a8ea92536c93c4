"""Concurrent lookups answered by one statement: the DataLoader pattern on asyncio.

Every caller that asks during one turn of the event loop joins one batch; the batch is
sent at the end of that turn (`loop.call_soon`), its keys deduplicated, as one call of
`fetch`. While `max_inflight` batches are out (one, by default), new callers keep
joining the next one, which leaves as soon as one returns: under load a lookup costs a
share of a statement instead of a statement, and an idle server still sends a lone
caller's batch at once. grpc.aio hands a server its calls about one per loop turn, so
the turn alone batches little; waiting for the statement out is what groups them
(`benchmarks/lookup.py --tier postgres`, c=64, 100k versions: 2,023 lookups/s and 459 µs
of server CPU per call with one in flight, against 1,047/s and 832 µs unbatched).

**Freshness.** A batch is sent after every caller in it arrived, so its read starts
after each call began: what it reads reflects every change committed before any of its
callers asked. A STRONG lookup keeps its meaning, and a cache fill keeps the guarantee
the tiers rely on (a read that starts after the follower's revision was taken).

A failed `fetch` fails every caller of that batch with its error; a caller that goes
away (cancelled, deadline) leaves the batch running for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[Sequence[K]], Awaitable[Sequence[V]]]
Count = Callable[[str, int], None]


class _Batch(Generic[K, V]):
    """The keys asked for during one turn, and the future each of their callers awaits."""

    def __init__(self) -> None:
        self.keys: dict[K, None] = {}  # insertion-ordered set
        self.done: asyncio.Future[dict[K, V]] = asyncio.get_running_loop().create_future()


class Coalescer(Generic[K, V]):
    """`load(keys)` answers like `fetch(keys)`, sharing one `fetch` per loop turn."""

    def __init__(
        self,
        fetch: Fetch[K, V],
        *,
        max_batch: int = 1000,
        max_inflight: int = 1,
        count: Count | None = None,
        name: str = "store.resolve",
    ) -> None:
        self._fetch = fetch
        self._name = name  # of the counters: `<name>.batches`, `<name>.keys`
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._count = count or (lambda name, n: None)
        self._next: _Batch[K, V] | None = None  # being filled; sent at the turn's end
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop holds tasks only weakly

    async def load(self, keys: Sequence[K]) -> list[V]:
        """The answers for `keys`, in their order."""
        batches: list[_Batch[K, V]] = []
        for key in keys:
            batch = self._joinable()
            batch.keys[key] = None
            if not batches or batches[-1] is not batch:
                batches.append(batch)
        answers: dict[K, V] = {}
        for batch in batches:  # each is shielded: one caller leaving cancels no one else
            answers.update(await asyncio.shield(batch.done))
        return [answers[key] for key in keys]

    def _joinable(self) -> _Batch[K, V]:
        batch = self._next
        if batch is None or len(batch.keys) >= self._max_batch:
            if batch is not None:
                self._send(batch)  # full: it leaves now, a new one fills
            batch = self._next = _Batch()
        if not self._scheduled and self._inflight < self._max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_ended)
        return batch

    def _turn_ended(self) -> None:
        self._scheduled = False
        if self._next is not None and self._inflight < self._max_inflight:
            batch, self._next = self._next, None
            self._send(batch)

    def _send(self, batch: _Batch[K, V]) -> None:
        if self._next is batch:
            self._next = None
        self._inflight += 1
        self._count(f"{self._name}.batches", 1)
        self._count(f"{self._name}.keys", len(batch.keys))
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    async def _run(self, batch: _Batch[K, V]) -> None:
        keys = list(batch.keys)
        try:
            found = await self._fetch(keys)
        except asyncio.CancelledError:  # shutting down: its callers are cancelled too
            batch.done.cancel()
            raise
        except Exception as exc:  # every caller of the batch gets it; raised in them
            batch.done.set_exception(exc)
            batch.done.exception()  # retrieved: no "never retrieved" warning if all left
            return
        batch.done.set_result(dict(zip(keys, found, strict=True)))

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._next is not None and not self._scheduled:  # waiting for a free slot
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_ended)
