"""WatchService: the change log as a server stream (domain/watch.py does the work)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.events import delivery_to_proto, spec_from_proto
from modelreg.api.identity import caller
from modelreg.domain.errors import ResourceExhausted
from modelreg.domain.grants import GrantCache
from modelreg.domain.watch import ChangeHub
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

STALLED = "WATCH_CONSUMER_STALLED"


class WatchServicer(ws_grpc.WatchServiceServicer):
    """Watch: check the request, open a stream on the process's hub, write what it yields.
    A write that flow control holds for longer than `stall_seconds` cuts the stream with
    RESOURCE_EXHAUSTED naming the last revision written (resume after it: nothing lost)."""

    def __init__(
        self, hub: ChangeHub, *, stall_seconds: float, grants: GrantCache | None = None
    ) -> None:
        self._hub = hub
        self._stall = stall_seconds
        self._grants = grants  # None: authorization is off

    async def Watch(self, request: ws.WatchRequest, context: Context) -> None:  # type: ignore[override]
        spec = spec_from_proto(request)
        if self._grants is not None:  # only events the caller may read, decided as sent
            visible = functools.partial(self._grants.may_see, caller())
            spec = dataclasses.replace(
                spec, filter=dataclasses.replace(spec.filter, visible=visible)
            )
        stream = await self._hub.open(spec)
        self._hub.count("watch.streams")
        written = stream.cursor  # the start: resuming after it loses nothing
        try:
            async for delivery in stream:
                await self._write(context, delivery_to_proto(delivery), written)
                written = delivery.revision
        finally:
            stream.close()

    async def _write(self, context: Context, message: ws.WatchResponse, written: int) -> None:
        write = asyncio.ensure_future(context.write(message))
        # Seen by the callback whatever happens here: a write left behind by a cut, or by
        # a call the client cancelled while it was pending, fails once the call is gone.
        write.add_done_callback(_retrieved)
        done, _ = await asyncio.wait({write}, timeout=self._stall)
        if write in done:
            write.result()
            return
        self._hub.count("watch.stalled")
        raise ResourceExhausted(
            f"the client read nothing for {self._stall:g} s; resume after revision {written}",
            reason=STALLED,
            metadata={"last_revision": str(written)},
        )


def _retrieved(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()
