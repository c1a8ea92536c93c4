"""The WebhookSender port over aiohttp, signed with the Standard Webhooks scheme.

aiohttp rather than httpx: it is already in every install (aiobotocore, under the S3
blob store, is built on it), it is asyncio-native, and its per-request timeouts cover
connect and total time. The signature is made by `standardwebhooks`, the scheme's
reference library: `webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>`,
the timestamp being the time of this attempt (receivers refuse ones far from their clock).
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
from standardwebhooks import Webhook as Signer

from modelreg.domain.delivery import Answer, Message

USER_AGENT = "modelreg-webhooks/1"
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (and dropped)


class AiohttpWebhookSender:
    """POSTs each message with its Standard Webhooks headers; one connection pool."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self._session = session
        # total bounds the whole request (it must end inside the lease it was sent
        # under); there is no wait for a pooled connection inside it (client_session).
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=timeout_seconds)

    async def send(self, *, url: str, message: Message, secret: bytes) -> Answer:
        now = datetime.now(UTC)
        signature = Signer(secret).sign(message.message_id, now, message.body)
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            async with self._session.post(
                url,
                data=message.body.encode(),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                await response.content.read(MAX_ANSWER)
                return Answer(response.status, retry_after=response.headers.get("retry-after"))
        except TimeoutError:
            return Answer(0, error="timed out")
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: e.g. IDNA of the host
            return Answer(0, error=f"{type(exc).__name__}: {exc}")


def client_session() -> aiohttp.ClientSession:
    """The session the composition root opens for the sender (no cookies, no env proxy
    guessing beyond aiohttp's defaults)."""
    # No connection limit (aiohttp's default is 100 shared by every host): receivers
    # that hang must not make healthy ones wait for a connection past their timeout.
    # Each subscription has at most one request in flight, which bounds the count.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
