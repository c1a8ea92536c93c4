"""The database health monitor against a probe the test controls (it reports each
change once, probes at once when woken), and the embedded server's keeper against a
fake server (it restarts a dead one, and gives up at the bound)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelreg.embedded import PostgresGaveUp, PostgresStartError, keep_running
from modelreg.health import DatabaseMonitor, DatabaseUnreachable, QuietWhileUnreachable

HOUR = 3600.0  # an interval no test waits out: probes here run because a test asks


class FakeProbe:
    """Fails while `down` is set; counts its calls."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise DatabaseUnreachable("connection refused")


class Reports:
    """What the monitor told its listener, in order."""

    def __init__(self) -> None:
        self.seen: asyncio.Queue[bool] = asyncio.Queue()

    async def __call__(self, reachable: bool) -> None:
        await self.seen.put(reachable)

    async def next(self) -> bool:
        return await asyncio.wait_for(self.seen.get(), 30)


@pytest.fixture
def probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
async def monitor(probe: FakeProbe, reports: Reports) -> AsyncIterator[DatabaseMonitor]:
    watching = DatabaseMonitor(probe, on_change=reports, interval=HOUR)
    task = asyncio.create_task(watching.run())
    yield watching
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_each_change_is_reported_once(probe: FakeProbe, reports: Reports) -> None:
    monitor = DatabaseMonitor(probe, on_change=reports, interval=HOUR)
    assert await monitor.check()  # reachable, as it started: nothing to report
    probe.down = True
    assert not await monitor.check()
    assert not await monitor.check()
    probe.down = False
    assert await monitor.check()
    assert [reports.seen.get_nowait() for _ in range(reports.seen.qsize())] == [False, True]


async def test_wake_probes_at_once(
    monitor: DatabaseMonitor, probe: FakeProbe, reports: Reports
) -> None:
    probe.down = True
    monitor.wake()  # as a lost connection does
    assert await reports.next() is False
    assert not monitor.reachable
    probe.down = False
    monitor.wake()
    assert await reports.next() is True
    assert monitor.reachable


async def test_the_interval_drives_probes_without_a_wake(
    probe: FakeProbe, reports: Reports
) -> None:
    probe.down = True
    monitor = DatabaseMonitor(probe, on_change=reports, interval=0.01)
    task = asyncio.create_task(monitor.run())
    try:
        assert await reports.next() is False
        probe.down = False
        assert await reports.next() is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert probe.calls >= 2


async def test_the_pool_log_is_quiet_only_while_unreachable(probe: FakeProbe) -> None:
    monitor = DatabaseMonitor(probe, on_change=Reports(), interval=HOUR)
    quiet = QuietWhileUnreachable(monitor)
    record = logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, "floor", None, None)
    assert quiet.filter(record)
    probe.down = True
    await monitor.check()
    assert not quiet.filter(record)


class FakePostgres:
    """A server whose postmaster is dead until a restart succeeds; `starts` counts them."""

    def __init__(self, *, failing: bool) -> None:
        self.data_dir = Path("/nowhere")
        self.pid = 4242
        self.failing = failing
        self.alive = False
        self.starts = 0
        self.started = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def running(self) -> bool:
        return self.alive

    def restart(self) -> None:
        self.starts += 1
        if self.failing:
            raise PostgresStartError("syntax error in postgresql.conf")
        self.alive = True
        self._loop.call_soon_threadsafe(self.started.set)  # restart runs in a thread


@pytest.mark.parametrize("restarts", [0, 1, 3])
async def test_restarts_stop_at_the_bound(restarts: int) -> None:
    server = FakePostgres(failing=True)
    with pytest.raises(PostgresGaveUp, match=f"MODELREG_POSTGRES_RESTARTS={restarts}"):
        await keep_running(server, interval=0.001, restarts=restarts, backoff=(0,))
    assert server.starts == restarts


async def test_a_dead_server_is_started_again_and_watched_on() -> None:
    server = FakePostgres(failing=False)
    keeper = asyncio.create_task(keep_running(server, interval=0.001, restarts=1))
    try:
        await asyncio.wait_for(server.started.wait(), 30)
        server.alive = False  # dies again: the one restart a minute is spent
        with pytest.raises(PostgresGaveUp):
            await asyncio.wait_for(keeper, 30)
    finally:
        keeper.cancel()
    assert server.starts == 1
