"""Following the registry's change log: `watch` on either client.

    async with AsyncClient(target) as registry:
        async for change in registry.watch(models=["vision/resnet"], kinds=["alias.set"]):
            for event in change.events:
                print(change.revision, event.kind, event.resource)

Each item is a `WatchResponse`: one committed transaction's matching events at its
revision (or, with `bookmarks=True`, a bookmark: no events, every matching change up to
its revision was yielded). Revisions only rise: the iterator never yields one twice or
out of order. Whatever cuts the stream — the server restarting or going away
(UNAVAILABLE), a client too slow to keep up (RESOURCE_EXHAUSTED), the stream simply
ending — it reconnects with jittered exponential backoff and resumes after the last
revision it yielded (or the last bookmark past it), so nothing is missed. Errors it
cannot cure are raised: INVALID_ARGUMENT for a bad filter, OUT_OF_RANGE
(`OutOfRangeError`, metadata `oldest_revision`) when `after_revision` is older than the
registry keeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import TYPE_CHECKING

import grpc
from google.protobuf.duration_pb2 import Duration

from modelreg.client.errors import RegistryError, checked_locally, error_from_rpc
from modelreg.client.names import model_name, namespace_name
from modelreg.domain import errors as domain_errors
from modelreg.domain import names
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc

if TYPE_CHECKING:
    from modelreg.client.aio import AsyncClient
    from modelreg.client.blocking import Client

# What a reconnect cures: the server went away or restarted, or cut a client that fell
# behind; CANCELLED is a server that stopped mid-call (a cancel of ours raises no error).
RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
FIRST_BACKOFF = 0.05  # seconds before the first reconnect; doubles, reset by a message
MAX_BACKOFF = 5.0


class Resumption:
    """What both clients' `watch` share: the request, the position to resume after, which
    messages to yield, and the backoff between attempts."""

    def __init__(
        self,
        *,
        namespaces: Sequence[str] = (),
        models: Sequence[str] = (),
        aliases: Sequence[str] = (),
        kinds: Sequence[str] = (),
        after_revision: int | None = None,
        from_oldest: bool = False,
        bookmarks: bool = False,
        bookmark_interval: float | None = None,
    ) -> None:
        self._request = ws.WatchRequest(
            namespaces=[namespace_name(n) for n in namespaces],
            models=[model_name(m) for m in models],
            aliases=[_alias_name(a) for a in aliases],
            kinds=list(kinds),
        )
        if bookmark_interval is not None:
            interval = Duration()
            interval.FromNanoseconds(int(bookmark_interval * 1e9))
            self._request.bookmark_interval.CopyFrom(interval)
        self.revision = after_revision  # resume after this; None until the stream opened
        self._oldest = from_oldest
        self._bookmarks = bookmarks
        self._backoff = FIRST_BACKOFF

    def request(self) -> ws.WatchRequest:
        """The request of the next attempt: after the last revision, once there is one."""
        request = ws.WatchRequest()
        request.CopyFrom(self._request)
        if self.revision is not None:
            request.after_revision = self.revision
        elif self._oldest:
            request.start_at = ws.WATCH_START_OLDEST
        return request

    def accept(self, message: ws.WatchResponse) -> bool:
        """Whether to yield `message` (moving the position); a revision at or below the
        position was yielded already (or, for a bookmark, needs no yielding)."""
        self._backoff = FIRST_BACKOFF
        if self.revision is not None and message.revision <= self.revision:
            return False
        self.revision = message.revision
        return bool(message.events) or self._bookmarks

    def retry_after(self, error: RegistryError | None) -> float:
        """Seconds to wait before reconnecting after `error` (None: the stream ended);
        raises the errors a reconnect cannot cure."""
        if error is not None and error.code not in RESUMABLE:
            raise error
        delay = self._backoff * (0.5 + random.random() / 2)  # jitter spreads out the herd
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        return delay


def _alias_name(alias: str) -> str:
    """`ns/model@alias` or an alias resource name -> the resource name."""
    with checked_locally():
        if alias.startswith("namespaces/"):
            return names.parse_alias_name(alias, "aliases").name
        ref = names.parse_reference(alias, "aliases")
        if ref.alias is None or ref.alias == "latest":
            raise domain_errors.InvalidArgument.field("aliases", f"{alias!r} names no alias")
        return names.AliasKey(ref.model, ref.alias).name


async def watch_async(
    client: AsyncClient, resumption: Resumption
) -> AsyncGenerator[ws.WatchResponse, None]:
    """AsyncClient.watch: follow the stream, reconnecting as `resumption` says."""
    stub = ws_grpc.WatchServiceStub(client._channel)
    while True:
        error: RegistryError | None = None
        call = stub.Watch(resumption.request(), metadata=client._metadata)
        try:
            async for message in call:
                if resumption.accept(message):
                    yield message
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
        finally:
            call.cancel()  # no-op once done; stops the server when the caller stops early
        await asyncio.sleep(resumption.retry_after(error))


def watch_blocking(
    client: Client, resumption: Resumption
) -> Generator[ws.WatchResponse, None, None]:
    """Client.watch: the same on the blocking channel."""
    stub = ws_grpc.WatchServiceStub(client._channel)
    while True:
        error: RegistryError | None = None
        call = stub.Watch(resumption.request(), metadata=client._metadata)
        try:
            for message in call:
                if resumption.accept(message):
                    yield message
        except grpc.RpcError as exc:
            error = error_from_rpc(exc)
        finally:
            call.cancel()  # type: ignore[no-untyped-call]
        time.sleep(resumption.retry_after(error))
