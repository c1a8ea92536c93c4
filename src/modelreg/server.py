"""`modelreg serve`: run the gRPC server until SIGTERM or SIGINT, then shut down gracefully.

With `--workers N` (N > 1) this process is a supervisor: it starts the embedded
PostgreSQL if needed and applies migrations once, then runs N worker processes
that share the port through SO_REUSEPORT, replaces a worker that dies, and passes
stop signals on to them. With MODELREG_METRICS_ADDRESS it serves the metrics of all its
workers there (each writes its numbers to a directory the supervisor reads: metrics.py).

The process that starts the embedded PostgreSQL (the server, or the supervisor)
also keeps it running: it starts it again when it dies, and when it cannot keep it
up (MODELREG_POSTGRES_RESTARTS) it stops serving and exits 1, so whatever runs
modelreg (systemd, a container runtime, a person) sees the failure. Every serving
process reports NOT_SERVING while it cannot reach the database.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from modelreg import logs
from modelreg.app import Database, apply_migrations, open_database, start_server
from modelreg.config import ConfigError, Settings
from modelreg.embedded import PostgresGaveUp, keep_running
from modelreg.metrics import Exporter, published, serve_metrics

log = logging.getLogger("modelreg")


async def serve(
    settings: Settings, database: Database | None = None, metrics_dir: Path | None = None
) -> int:
    """Serve until a stop signal: stop accepting, finish in-flight calls, close pools.
    The exit code: 1 if the embedded PostgreSQL this process runs could not be kept up."""
    stopping = _stop_event()
    async with AsyncExitStack() as stack:
        database = database or await open_database(settings, stack)
        running = await start_server(settings, stack, database=database, metrics_dir=metrics_dir)
        host = settings.address.rpartition(":")[0]
        log.info("modelreg serving on %s:%d (SERVING)", host, running.port)
        keeper = _keep_postgres(settings, database)
        stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([keeper, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        gave_up = _gave_up(keeper)
        log.info("stopping: finishing in-flight calls (up to %.0f s)", settings.grace_seconds)
    log.info("stopped")
    return 1 if gave_up else 0


def _keep_postgres(settings: Settings, database: Database) -> asyncio.Future[None]:
    """Restarts of the embedded PostgreSQL, if this process runs it: a future that ends
    only when they are given up; else one that never ends."""
    if database.embedded is None:
        return asyncio.get_running_loop().create_future()
    keeper = keep_running(
        database.embedded,
        interval=settings.postgres_probe_seconds,
        restarts=settings.postgres_restarts,
    )
    return asyncio.ensure_future(keeper)


def _gave_up(keeper: asyncio.Future[None]) -> bool:
    """Whether `keeper` has ended (it only ends by failing), logging why; cancels it."""
    if not keeper.done():
        keeper.cancel()
        return False
    exc = keeper.exception()
    log.error("stopping: %s", exc, exc_info=not isinstance(exc, PostgresGaveUp))
    return True


RESTARTS = 5  # workers restarted within RESTART_WINDOW seconds before the supervisor gives up
RESTART_WINDOW = 60.0


async def supervise(settings: Settings) -> int:
    """Run `settings.workers` server processes on one port until a stop signal. A worker
    that dies is replaced (its calls are lost, the other workers' are not); more than
    RESTARTS deaths within RESTART_WINDOW seconds stop everything, with exit code 1."""
    if settings.address.endswith(":0"):
        raise ConfigError("MODELREG_WORKERS > 1 needs a fixed port in MODELREG_ADDRESS")
    stopping = _stop_event()
    async with AsyncExitStack() as stack:
        database = await open_database(settings, stack)  # the embedded server lives here
        await apply_migrations(database.url)
        worker = dataclasses.replace(settings, workers=1)
        spawn = multiprocessing.get_context("spawn")  # no fork: gRPC keeps threads
        procs: list[multiprocessing.process.BaseProcess] = []
        metrics_dir = _serve_metrics(
            settings, stack, lambda: {p.pid for p in procs if p.is_alive() and p.pid}
        )

        def start() -> multiprocessing.process.BaseProcess:
            args = (worker, database.for_workers(), metrics_dir)
            proc = spawn.Process(target=_worker, args=args, daemon=False)
            proc.start()
            return proc

        procs += [start() for _ in range(settings.workers)]
        log.info("supervising %d workers on %s", len(procs), settings.address)
        keeper = _keep_postgres(settings, database)
        gave_up = await _keep_running(procs, start, stopping, keeper)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: each worker drains its in-flight calls
        await asyncio.to_thread(_join_all, procs, settings.grace_seconds + 5)
    failed = [p.exitcode for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if gave_up or failed:
        log.error("stopped; workers failed (exit codes %s)", failed or "see above")
        return 1
    log.info("stopped")
    return 0


async def _keep_running(
    procs: list[multiprocessing.process.BaseProcess],
    start: Callable[[], multiprocessing.process.BaseProcess],
    stopping: asyncio.Event,
    keeper: asyncio.Future[None],
) -> bool:
    """Replace workers that die until `stopping` is set; True if too many died or
    `keeper` gave up on the embedded PostgreSQL."""
    deaths: collections.deque[float] = collections.deque()
    stop: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
    try:
        while not stopping.is_set():
            exited: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.to_thread(_first_exit, procs)
            )
            await asyncio.wait([exited, stop, keeper], return_when=asyncio.FIRST_COMPLETED)
            if keeper.done():
                return _gave_up(keeper)
            if stopping.is_set():
                break
            now = time.monotonic()
            deaths.extend(now for proc in procs if not proc.is_alive())
            procs[:] = [proc if proc.is_alive() else _replaced(proc, start) for proc in procs]
            while deaths and deaths[0] < now - RESTART_WINDOW:
                deaths.popleft()
            if len(deaths) > RESTARTS:
                log.error("%d workers died within %.0f s; stopping", len(deaths), RESTART_WINDOW)
                return True
    finally:
        stop.cancel()
        keeper.cancel()
    return False


def _replaced(
    dead: multiprocessing.process.BaseProcess,
    start: Callable[[], multiprocessing.process.BaseProcess],
) -> multiprocessing.process.BaseProcess:
    log.error("worker %d exited with code %s; starting another", dead.pid, dead.exitcode)
    return start()


def run(settings: Settings) -> None:
    """Blocking entry point with logging and, where available, uvloop."""
    _configure_logging(settings)
    _fix_mmap_threshold()
    if settings.workers > 1:
        sys.exit(_run_loop(supervise(settings)))
    sys.exit(_run_loop(serve(settings)))


def _worker(settings: Settings, database: Database, metrics_dir: Path | None) -> None:
    _configure_logging(settings)
    _fix_mmap_threshold()
    log.info("postgres: %s", database.origin)
    sys.exit(_run_loop(serve(settings, database, metrics_dir)))


def _serve_metrics(
    settings: Settings, stack: AsyncExitStack, live: Callable[[], set[int]]
) -> Path | None:
    """With MODELREG_METRICS_ADDRESS: a fresh directory for the workers' numbers, served
    summed at that address until the supervisor stops; else None."""
    if not settings.metrics_address:
        return None
    directory = Path(tempfile.mkdtemp(prefix="modelreg-metrics-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    exporter = Exporter(lambda: published(directory, live))
    stack.callback(serve_metrics(settings.metrics_address, exporter))
    return directory


MMAP_THRESHOLD = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def _fix_mmap_threshold() -> None:
    """Keep buffers of 1 MiB and more (upload parts, read blocks) in their own mmaps.

    glibc raises its mmap threshold, up to 32 MiB, each time such a buffer is freed;
    from then on multi-MiB buffers come from the heap, whose freed space is rarely
    returned, so a server's RSS ratchets up with the bytes it has moved (measured:
    +99 MiB peak for a 1 GiB S3 download over a 128 MiB one, +1 MiB with a fixed
    threshold). Setting the threshold turns that adjustment off. Skipped where libc
    has no mallopt (musl) or MALLOC_MMAP_THRESHOLD_ already says what the user wants."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _stop_event() -> asyncio.Event:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    return stopping


def _first_exit(procs: Sequence[multiprocessing.process.BaseProcess]) -> None:
    from multiprocessing.connection import wait

    wait([p.sentinel for p in procs])


def _join_all(procs: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    for proc in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
