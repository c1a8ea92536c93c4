"""One LISTEN connection per process: the push half of the change log.

Every committed transaction notifies its revision (the stamp, store/changelog.py); this
connection hears it and wakes the process's followers, which then read the table. A lost
connection is noticed (the driver's termination callback, or a ping that fails) and
reopened; after every (re)connect the followers are woken without a revision, since
whatever committed while nobody listened was never heard, and they catch up by keyset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from modelreg.store.changelog import CHANNEL

log = logging.getLogger(__name__)

# How the listening connection shows in pg_stat_activity.
APPLICATION_NAME = "modelreg-changelog"
Wake = Callable[[int | None], None]
_LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresChangeListener:
    """Hears `modelreg_changes` on its own connection and calls every subscriber's
    `wake(revision)`; `wake(None)` after each (re)connect."""

    def __init__(
        self,
        url: str,
        *,
        ping_seconds: float = 5.0,
        retry_seconds: float = 0.5,
    ) -> None:
        self._url = url
        self._subscribers: list[Wake] = []
        self._ping = ping_seconds
        self._retry = retry_seconds
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self.notified = 0  # the highest revision a notification named (the metrics' lag)
        self.reconnects = 0

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        """Call `wake` on every notification (and with None after a reconnect) until the
        returned function is called. `wake` runs on the event loop and must not block."""
        self._subscribers.append(wake)

        def unsubscribe() -> None:
            if wake in self._subscribers:
                self._subscribers.remove(wake)

        return unsubscribe

    def _wake(self, revision: int | None) -> None:
        if revision is not None and revision > self.notified:
            self.notified = revision
        for wake in tuple(self._subscribers):
            wake(revision)

    async def connect(self) -> None:
        """Open the connection and LISTEN (raises if the database cannot be reached)."""
        conn = await asyncpg.connect(
            self._url, timeout=self._ping, server_settings={"application_name": APPLICATION_NAME}
        )
        try:
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._lost.clear()
        self._conn = conn

    async def run(self) -> None:
        """Keep listening until cancelled: notice a lost connection, reopen it, wake."""
        try:
            while True:
                if self._conn is None:
                    if not await self._reconnect():
                        await asyncio.sleep(self._retry)  # the database is down: try again soon
                        continue
                    self._wake(None)
                if not await self._alive():
                    self._drop()
        finally:
            self._drop()

    async def close(self) -> None:
        """Stop listening (for shutdown)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(timeout=self._ping)

    async def _reconnect(self) -> bool:
        try:
            await self.connect()
        except _LOST as exc:
            log.warning("change log: cannot listen (%s); retrying", exc)
            return False
        self.reconnects += 1
        log.info("change log: listening again; followers catch up")
        return True

    async def _alive(self) -> bool:
        """Wait up to a ping interval for a loss; ping when none came."""
        try:
            await asyncio.wait_for(self._lost.wait(), self._ping)
        except TimeoutError:
            pass
        else:
            log.warning("change log: the listening connection was lost")
            return False
        assert self._conn is not None
        try:
            await self._conn.fetchval("SELECT 1", timeout=self._ping)
        except _LOST as exc:
            log.warning("change log: the listening connection does not answer (%s)", exc)
            return False
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            revision = int(str(payload))
        except ValueError:
            revision = None
        self._wake(revision)

    def _terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._lost.set()
