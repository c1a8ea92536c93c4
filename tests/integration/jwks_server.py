"""A JWKS endpoint on loopback (aiohttp.web) whose key set the test swaps, counting the
requests it answers (what the refresh rate limit bounds)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class JwksServer:
    """Serves `keys` as a JWKS at /jwks; `requests` counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (0: a free one; given: the port it had, after a stop)."""
        app = web.Application()
        app.router.add_get("/jwks", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/jwks"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"keys": self.keys})
