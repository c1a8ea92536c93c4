"""One client process driving MLflow's REST API: aiohttp, HDR histograms, loadgen's keys.

The MLflow counterpart of loadgen.py's client: it warms up, meets the parent and the
other clients at a barrier, measures a closed loop for a fixed time, meets again and
reports a loadgen `ClientResult`, so lookup_rows.py's `row_of` merges it like a gRPC one.
Keys come from loadgen's `Keys` over the MLflow seed's manifest (model `m000001` is
`bench/m000001` in modelreg; MLflow has no namespaces).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from dataset import Manifest, model_name
from loadgen import MAX_LATENCY_US, ClientResult, Keys, Recorder, _result

API = "/api/2.0/mlflow"
# MLflow workload -> the modelreg workload it is compared with (None: no counterpart)
EQUIVALENT: dict[str, str | None] = {
    "get-by-number": "get-by-number",
    "resolve-alias": "resolve-alias",
    "latest": "latest",
    "latest-search": "latest",
    "search-by-name": "list-page",
    "get-registered-model": None,
}
WORKLOADS = tuple(EQUIVALENT)

Request = tuple[str, str, dict[str, Any]]  # (method, path, query or JSON body)


@dataclass(frozen=True)
class HttpSpec:
    """What one MLflow client process does."""

    base_url: str  # http://127.0.0.1:PORT
    workload: str
    manifest_path: str
    keys: str = "uniform"
    zipf_s: float = 1.1
    concurrency: int = 1
    duration: float = 5.0
    warmup: float = 1.0
    page_size: int = 50
    timeout: float = 60.0
    seed: int = 0


def request_maker(workload: str, keys: Keys, page_size: int) -> Callable[[], Request]:
    """A no-argument function returning the next request of the workload."""

    def name() -> str:
        return model_name(keys.model() + 1)

    def by_number() -> Request:
        i = keys.model()
        version = keys.rng.randint(1, keys.counts[i])
        return "GET", "model-versions/get", {"name": model_name(i + 1), "version": str(version)}

    def search(size: int) -> Request:
        query = {"filter": f"name='{name()}'", "max_results": str(size),
                 "order_by": "version_number DESC"}  # fmt: skip
        return "GET", "model-versions/search", query

    makers: dict[str, Callable[[], Request]] = {
        "get-by-number": by_number,
        "resolve-alias": lambda: (
            "GET",
            "registered-models/alias",
            {"name": name(), "alias": keys.rng.choice(("production", "staging"))},
        ),
        # stage "None" holds every non-archived version: MLflow's latest registered one
        "latest": lambda: (
            "POST",
            "registered-models/get-latest-versions",
            {"name": name(), "stages": ["None"]},
        ),
        "latest-search": lambda: search(1),
        "search-by-name": lambda: search(page_size),
        # the model with the most versions (the seed's first model is its biggest)
        "get-registered-model": lambda: ("GET", "registered-models/get", {"name": model_name(1)}),
    }
    return makers[workload]


class HttpRecorder(Recorder):
    """loadgen's Recorder (latencies in µs, errors by kind) for HTTP requests."""

    async def send(self, session: aiohttp.ClientSession, base: str, req: Request) -> None:
        method, path, payload = req
        url = f"{base}{API}/{path}"
        start = time.perf_counter_ns()
        kwargs: dict[str, Any] = {"json": payload} if method == "POST" else {"params": payload}
        try:
            async with session.request(method, url, **kwargs) as resp:
                await resp.read()
                if resp.status != 200:
                    self.errors[f"HTTP_{resp.status}"] += 1
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1
            return
        elapsed_us = (time.perf_counter_ns() - start) // 1000
        self.hist.record_value(min(max(elapsed_us, 1), MAX_LATENCY_US))


async def closed_loop(
    send: Callable[[HttpRecorder], Awaitable[None]], concurrency: int, seconds: float
) -> HttpRecorder:
    rec = HttpRecorder()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await send(rec)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rec


async def run_client(spec: HttpSpec, barrier: Any) -> ClientResult:
    """Warm up, meet the others at the barrier, measure, meet again, report."""
    manifest = Manifest.read(Path(spec.manifest_path))
    keys = Keys(manifest, spec.keys, spec.zipf_s, random.Random(spec.seed))
    make = request_maker(spec.workload, keys, spec.page_size)
    timeout = aiohttp.ClientTimeout(total=spec.timeout)
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def send(rec: HttpRecorder) -> None:
            await rec.send(session, spec.base_url, make())

        if spec.warmup > 0:
            await closed_loop(send, spec.concurrency, spec.warmup)
        barrier.wait()
        me = psutil.Process()
        cpu0, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
        rec = await closed_loop(send, spec.concurrency, spec.duration)
        elapsed, cpu = time.perf_counter() - t0, sum(me.cpu_times()[:2]) - cpu0
        barrier.wait()
    return _result(rec, elapsed, cpu)


def client_main(spec: HttpSpec, barrier: Any, results: Any) -> None:
    """Entry point of a client process (multiprocessing target)."""
    try:
        results.put(asyncio.run(run_client(spec, barrier)))
    except BaseException as exc:
        barrier.abort()
        results.put(exc)
        raise
