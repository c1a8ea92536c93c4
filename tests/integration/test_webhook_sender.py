"""The aiohttp sender (webhooks/http.py) against a real HTTP server on loopback: receivers
that hold their requests do not make a healthy receiver wait for a connection (there is
no shared connection limit; each subscription has at most one request in flight)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from modelreg.domain.delivery import Message
from modelreg.webhooks.http import AiohttpWebhookSender, client_session
from tests.helpers import free_port

DEFAULT_LIMIT = 100  # aiohttp's default connector limit
HANGING = 110


class Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.holding = 0
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["what"] == "hang":
            self.holding += 1
            if self.holding >= DEFAULT_LIMIT:
                self.all_held.set()
            await self.release.wait()
        return web.Response(status=204)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    found = Server()
    app = web.Application()
    app.router.add_post("/{what}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        found.release.set()
        await runner.cleanup()


async def test_hanging_receivers_do_not_starve_a_healthy_one_of_connections(
    server: Server,
) -> None:
    message = Message("msg_w_1_0", "namespace.created", "{}")
    async with client_session() as session:
        sender = AiohttpWebhookSender(session, timeout_seconds=30)
        base = f"http://127.0.0.1:{server.port}"
        hanging = [
            asyncio.create_task(sender.send(url=f"{base}/hang", message=message, secret=b"k" * 32))
            for _ in range(HANGING)
        ]
        await server.all_held.wait()  # as many as the default limit hold a connection now
        quick = AiohttpWebhookSender(session, timeout_seconds=2)
        answer = await quick.send(url=f"{base}/ok", message=message, secret=b"k" * 32)
        server.release.set()
        held = await asyncio.gather(*hanging)
    assert answer.status == 204, answer.error
    assert {a.status for a in held} == {204}
