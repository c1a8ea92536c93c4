"""The Follower loop against a fake change log: an apply that raises does not end the
caches' follower (it logs, backs off and applies the same changes again, then keeps
following); the cursor moves in the same step as an apply's last effect."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from modelreg.domain.changelog import Change, Follower


class FakeLog:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def changes_after(self, *, revision: int, limit: int) -> list[Change]:
        return [c for c in self.changes if c.revision > revision][:limit]

    async def head(self) -> int:
        return self.changes[-1].revision if self.changes else 0


async def test_a_follower_whose_apply_raises_keeps_following(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes = FakeLog()
    applied: list[list[int]] = []
    raises = [RuntimeError("a bug in apply")]  # the first apply raises, once

    async def apply(batch: Sequence[Change]) -> None:
        if raises:
            raise raises.pop()
        applied.append([c.revision for c in batch])

    follower = Follower(log=changes, apply=apply, retry_seconds=0.001, outlives_failures=True)
    await follower.start()
    task = asyncio.create_task(follower.run())
    try:
        changes.changes.append(Change(revision=1, events=()))
        follower.wake(1)
        await asyncio.wait_for(follower.reached(1), timeout=10)
        assert applied == [[1]]  # the failed batch, applied again
        assert "following the change log failed" in caplog.text
        assert not task.done()
        changes.changes.append(Change(revision=2, events=()))
        follower.wake(2)
        await asyncio.wait_for(follower.reached(2), timeout=10)
        assert applied == [[1], [2]]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_cursor_moves_in_the_same_step_as_the_applys_last_effect() -> None:
    """L1's drop is an apply's last effect; a lookup reads the cursor as its floor and then
    L1's generation. Were the cursor to move only after an await (the notify's lock, taken
    while a woken waiter holds it), a lookup in between would pair the floor before the
    change with the generation after its drop, and fill L1 with what the change made stale."""
    changes = FakeLog()
    dropped = asyncio.Event()
    seen: list[int] = []

    async def apply(batch: Sequence[Change]) -> None:
        dropped.set()  # stands for L1's drop: synchronous, nothing awaited after it

    follower = Follower(log=changes, apply=apply)
    await follower.start()
    task = asyncio.create_task(follower.run())
    try:
        async with follower._moved:  # contended, as when a woken waiter holds it
            changes.changes.append(Change(revision=1, events=()))
            follower.wake(1)
            await dropped.wait()  # the follower now waits for the lock
            seen.append(follower.revision)  # what a lookup here reads as its floor
        await asyncio.wait_for(follower.reached(1), timeout=10)
        assert seen == [1]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
