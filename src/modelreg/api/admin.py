"""AdminService: this process's counters, for operators and the benchmarks."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


class AdminServicer(admin_grpc.AdminServiceServicer):
    """GetServerStats over the counters the composition root hands in."""

    def __init__(self, counters: Counter[str], redis_available: Callable[[], bool]) -> None:
        self._counters = counters
        self._redis_available = redis_available
        self._started = time.monotonic()

    async def GetServerStats(
        self, request: admin.GetServerStatsRequest, context: Context
    ) -> admin.GetServerStatsResponse:
        reply = admin.GetServerStatsResponse(
            pid=os.getpid(),
            uptime_seconds=time.monotonic() - self._started,
            counters=dict(self._counters),
            redis_available=self._redis_available(),
        )
        if request.reset:
            self._counters.clear()
        return reply
