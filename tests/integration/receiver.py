"""A real HTTP webhook receiver on loopback (aiohttp.web), scripted by the test: it
answers each request as the next step of its script says (200, 500, 503 with a
Retry-After, or hold the request past the sender's timeout), can be taken down (its port
closed) and brought back on the same port, verifies every signature with the Standard
Webhooks library, and counts deliveries of one subscription that overlap in time."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from tests.helpers import free_port

OK = "ok"
FAIL = "500"
HANG = "hang"  # hold the request until the sender gives up (closes the connection)


def retry_after(value: str) -> str:
    """A step answering 503 with `Retry-After: value`."""
    return f"retry-after:{value}"


@dataclass
class Received:
    """One request as it arrived."""

    subscription: str  # the last part of the URL path
    message_id: str
    body: bytes
    verified: bool
    answered: int  # the status sent back; 0 if the request was held until the sender left


@dataclass
class Receiver:
    """The receiver's state; `script` is consumed one step per request (then OK)."""

    secrets: dict[str, str] = field(default_factory=dict)  # subscription -> whsec_...
    script: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    overlaps: Counter[str] = field(default_factory=Counter)
    port: int = field(default_factory=free_port)
    # How long each answer takes: a window in which a second sender of the same
    # subscription would be seen overlapping (it orders nothing).
    service_seconds: float = 0.02
    holding: asyncio.Event = field(default_factory=asyncio.Event)  # a HANG step is holding
    held_for: str | None = None  # the subscription whose request a HANG step held last
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def up(self) -> None:
        """Listen (again) on the receiver's port."""
        app = web.Application()
        app.router.add_post("/hooks/{subscription}", self._handle)
        # A handler is cancelled when its client goes away (a timed-out or killed sender),
        # so `in_flight` counts requests a sender is still waiting on.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def down(self) -> None:
        """Close the port: senders get connection refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, done: Callable[[], bool], within: float = 30) -> None:
        """Wait until `done()` holds after some request."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(done)

    def acknowledged(self, subscription: str) -> list[str]:
        """Message ids answered 2xx, in the order of their first 2xx."""
        seen: dict[str, None] = {}
        for each in self.received:
            if each.subscription == subscription and 200 <= each.answered < 300:
                seen.setdefault(each.message_id, None)
        return list(seen)

    def bodies(self, subscription: str) -> dict[str, set[bytes]]:
        """Every body received per message id."""
        found: dict[str, set[bytes]] = defaultdict(set)
        for each in self.received:
            if each.subscription == subscription:
                found[each.message_id].add(each.body)
        return found

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        subscription = request.match_info["subscription"]
        self.in_flight[subscription] += 1
        if self.in_flight[subscription] > 1:
            self.overlaps[subscription] += 1
        body = await request.read()
        record = Received(
            subscription,
            request.headers.get("webhook-id", ""),
            body,
            self._verified(subscription, body, dict(request.headers)),
            0,
        )
        self.received.append(record)
        try:
            step = self.script.pop(0) if self.script else OK
            if step == HANG:
                self.held_for = subscription
                self.holding.set()
                await asyncio.Event().wait()  # until the sender hangs up (cancelled)
            await asyncio.sleep(self.service_seconds)
            response = _answer(step)
            record.answered = response.status
            return response
        finally:
            self.in_flight[subscription] -= 1
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _verified(self, subscription: str, body: bytes, headers: dict[str, str]) -> bool:
        secret = self.secrets.get(subscription)
        if secret is None:
            return False
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True


def _answer(step: str) -> web.Response:
    if step == OK:
        return web.Response(status=204)
    if step == FAIL:
        return web.Response(status=500, text="scripted failure")
    if step.startswith("retry-after:"):
        value = step.removeprefix("retry-after:")
        return web.Response(status=503, headers={"Retry-After": value})
    raise AssertionError(f"unknown step {step!r}")


def payload(body: bytes) -> dict[str, Any]:
    """The Standard Webhooks payload of a body."""
    parsed: dict[str, Any] = json.loads(body)
    return parsed
