"""Health that reflects the database: a monitor that probes it and reports each change.

The probe runs on a connection of its own, not on the pool: a pool busy with long
calls is load, not an outage, and must not turn a replica NOT_SERVING (a balancer
would then pull every busy replica at once). Losing that connection wakes the
monitor at once, so an outage shows within one round trip, not one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class DatabaseUnreachable(Exception):
    """A probe found the database unreachable; the message says how."""


class DatabaseMonitor:
    """Tells `on_change` whether the database answers `probe`, each time that changes.

    It probes every `interval` seconds, and at once after `wake()`. It starts out
    reachable: the server has just migrated the database before it serves."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        *,
        on_change: Callable[[bool], Awaitable[None]],
        interval: float,
    ) -> None:
        self._probe, self._on_change, self._interval = probe, on_change, interval
        self._woken = asyncio.Event()
        self.reachable = True

    def wake(self) -> None:
        """Probe now instead of at the end of the interval."""
        self._woken.set()

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)
            self._woken.clear()
            await self.check()

    async def check(self) -> bool:
        """Probe once and report a change; whether the database answered."""
        try:
            await self._probe()
        except DatabaseUnreachable as exc:
            if self.reachable:
                log.error("database unreachable (%s): health NOT_SERVING", exc)
            reachable = False
        else:
            if not self.reachable:
                log.warning("database reachable again: health SERVING")
            reachable = True
        if reachable != self.reachable:
            self.reachable = reachable
            await self._on_change(reachable)
        return reachable


class QuietWhileUnreachable(logging.Filter):
    """Drops log records while `monitor` knows the database is unreachable: it said so
    once, and asyncpg's pool would repeat it, with a traceback, every second."""

    def __init__(self, monitor: DatabaseMonitor) -> None:
        super().__init__()
        self._monitor = monitor

    def filter(self, record: logging.LogRecord) -> bool:
        return self._monitor.reachable


class PostgresProbe:
    """`SELECT 1` within `timeout` seconds on a connection kept for the probe, made
    again after it is lost. `on_lost` is called when the server drops it."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._url, self._timeout = url, timeout
        self._conn: asyncpg.Connection | None = None
        self._on_lost: Callable[[], None] = lambda: None

    def when_lost(self, callback: Callable[[], None]) -> None:
        self._on_lost = callback

    async def __call__(self) -> None:
        try:
            conn = await self._connection()
            await conn.fetchval("SELECT 1", timeout=self._timeout)
        except _UNREACHABLE as exc:
            await self.close()
            raise DatabaseUnreachable(str(exc) or type(exc).__name__) from exc

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=self._timeout)
            self._conn.add_termination_listener(self._lost)
        return self._conn

    def _lost(self, _: Any) -> None:
        self._on_lost()

    async def close(self) -> None:
        """Close the probe's connection, if it has one."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.remove_termination_listener(self._lost)
            conn.terminate()  # no goodbye: the server may be gone
