"""`modelreg serve`: run the gRPC server until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from modelreg.app import start_server
from modelreg.config import Settings

log = logging.getLogger("modelreg")


async def serve(settings: Settings) -> None:
    """Serve until a stop signal: stop accepting, finish in-flight calls, close pools."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        host = settings.address.rpartition(":")[0]
        log.info("modelreg serving on %s:%d (SERVING)", host, running.port)
        await stopping.wait()
        log.info("stopping: finishing in-flight calls (up to %.0f s)", settings.grace_seconds)
    log.info("stopped")


def run(settings: Settings) -> None:
    """Blocking entry point with logging and, where available, uvloop."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
