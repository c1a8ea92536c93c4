"""AdminService: this process's counters, for operators and the benchmarks."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_grpc.AdminServiceServicer):
    """GetServerStats over the counters the composition root hands in."""

    def __init__(
        self,
        counters: Counter[str],
        redis_available: Callable[[], bool],
        *,
        applied_revision: Callable[[], int] = lambda: 0,
        head_revision: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._counters = counters
        self._redis_available = redis_available
        self._applied = applied_revision
        self._head = head_revision
        self._started = time.monotonic()

    async def GetServerStats(
        self, request: admin.GetServerStatsRequest, context: Context
    ) -> admin.GetServerStatsResponse:
        applied = self._applied()  # before the head, so never above it
        head = await self._head() if self._head is not None else 0
        reply = admin.GetServerStatsResponse(
            pid=os.getpid(),
            uptime_seconds=time.monotonic() - self._started,
            counters=dict(self._counters),
            redis_available=self._redis_available(),
            applied_revision=max(applied, 0),
            head_revision=head,
        )
        if request.reset:
            self._counters.clear()
        return reply
