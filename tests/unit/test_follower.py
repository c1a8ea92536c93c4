"""The Follower loop against a fake change log: an apply that raises does not end it; it
logs, backs off and applies the same changes again, then keeps following."""

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

    follower = Follower(log=changes, apply=apply, retry_seconds=0.001)
    await follower.start()
    task = asyncio.create_task(follower.run())
    try:
        changes.changes.append(Change(revision=1, events=()))
        follower.wake(1)
        await asyncio.wait_for(follower.reached(1), timeout=10)
        assert applied == [[1]]  # the failed batch, applied again
        assert "applying a change failed" in caplog.text
        assert not task.done()
        changes.changes.append(Change(revision=2, events=()))
        follower.wake(2)
        await asyncio.wait_for(follower.reached(2), timeout=10)
        assert applied == [[1], [2]]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
