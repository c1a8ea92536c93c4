"""One client process of the load generator: grpc.aio, generated stubs, HDR histograms.

A process warms up, waits on a barrier shared with the other clients and the
parent, measures for a fixed time, waits on a second barrier (so the parent can
read server CPU over exactly the measured window) and reports a `ClientResult`.
Closed loop: `concurrency` coroutines each send the next request as soon as
the last one returns. Open loop: requests leave at fixed intended times and
latency counts from the intended time, so a stall cannot hide queued requests.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from hdrh.histogram import HdrHistogram

from dataset import ALIASES, Manifest
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res

WORKLOADS = (
    "resolve-alias", "get-by-number", "latest", "batch-get", "list-page", "mix",
    "big-model", "small-model",
)  # fmt: skip
# GetModelVersion on one model only: the one with the most versions / one with about ten
ONE_MODEL = ("big-model", "small-model")
HOT_SEED = 20_261_129  # the hot key set is the same in every client process
# The mix: what a fleet of serving processes and a UI look like together.
MIX = (
    ("resolve-alias", 60),
    ("get-by-number", 25),
    ("latest", 10),
    ("batch-get", 4),
    ("list-page", 1),
)
MAX_LATENCY_US = 60_000_000
MAX_OUTSTANDING = 20_000  # open loop: beyond this, requests count as errors (not sent)

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class ClientSpec:
    """What one client process does."""

    target: str
    workload: str  # a WORKLOADS name; `empty-rpc` is sent as resolve-alias, `empty-batch`
    # as batch-get
    manifest_path: str
    keys: str = "uniform"  # or "zipf"
    zipf_s: float = 1.1
    concurrency: int = 1  # closed loop, per process
    rate: float = 0.0  # open loop, requests/s per process; 0 = closed loop
    duration: float = 5.0
    warmup: float = 1.0
    batch_size: int = 100
    page_size: int = 50
    strong: bool = False
    timeout: float = 10.0
    seed: int = 0
    hot_keys: int = 0  # > 0: draw every key from a fixed set of this many references
    model: int | None = None  # index of the only model asked about (big-model, small-model)
    prime: bool = False  # request every hot key once, then stop (fills the caches)


@dataclass
class ClientResult:
    """What one client process measured."""

    histogram: bytes = b""
    count: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0


class Keys:
    """Random models (uniform, or Zipf by model rank) and version numbers from a manifest.

    With `hot > 0` every reference comes from a fixed set of that many, drawn once
    with the same seed in every process (so a cache can hold them all); `cursor()`
    then walks that set in order instead, to prime the caches.
    """

    def __init__(
        self,
        manifest: Manifest,
        kind: str,
        s: float,
        rng: random.Random,
        *,
        hot: int = 0,
        model: int | None = None,
    ) -> None:
        self.ns, self.counts, self.rng = manifest.namespace, manifest.counts, rng
        self.fixed = model
        self.cum: list[float] | None = None
        if kind == "zipf" and model is None:
            self.cum = list(
                itertools.accumulate(1.0 / r**s for r in range(1, len(self.counts) + 1))
            )
        self.hot: list[tuple[int, int, str]] = []  # (model, number, alias)
        if hot > 0:
            draw, self.rng = self.rng, random.Random(HOT_SEED)
            self.hot = [
                (i, self._number(i), self._alias()) for i in (self.model() for _ in range(hot))
            ]
            self.rng = draw
        self.distinct = list(dict.fromkeys(self.hot))  # what priming walks (each key once)
        self.sequential = False
        self.next = 0

    def model(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.cum is None:
            return self.rng.randrange(len(self.counts))
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])

    def _number(self, index: int) -> int:
        return self.rng.randint(1, self.counts[index])

    def _alias(self) -> str:
        return self.rng.choice(ALIASES)

    def _pick(self) -> tuple[int, int, str]:
        if not self.hot:
            i = self.model()
            return i, self._number(i), self._alias()
        if self.sequential:
            self.next += 1
            return self.distinct[(self.next - 1) % len(self.distinct)]
        return self.hot[self.rng.randrange(len(self.hot))]

    def short(self, index: int) -> str:
        return f"{self.ns}/m{index + 1:06d}"

    def alias_ref(self) -> str:
        i, _, alias = self._pick()
        return f"{self.short(i)}@{alias}"

    def latest_ref(self) -> str:
        return self.short(self._pick()[0])

    def number_ref(self) -> str:
        i, number, _ = self._pick()
        return f"{self.short(i)}:{number}"

    def version_name(self) -> str:
        i, number, _ = self._pick()
        return f"namespaces/{self.ns}/models/m{i + 1:06d}/versions/{number}"

    def model_name(self) -> str:
        return f"namespaces/{self.ns}/models/m{self._pick()[0] + 1:06d}"


def auth_metadata() -> tuple[tuple[str, str], ...]:
    """`authorization: Bearer $MODELREG_TOKEN` when the variable is set (lookup.py sets it
    to a key it made for the seed's database); sent to every server alike, so a server
    with authentication off pays for the header too and the two differ by verification."""
    token = os.environ.get("MODELREG_TOKEN")
    return (("authorization", f"Bearer {token}"),) if token else ()


# lookup.py's key for what only an admin may call (GetServerStats, outside the measured
# windows); the load itself is sent with MODELREG_TOKEN, a viewer's key.
ADMIN_TOKEN_ENV = "MODELREG_BENCH_ADMIN_TOKEN"


def admin_metadata() -> tuple[tuple[str, str], ...]:
    """`authorization: Bearer $MODELREG_BENCH_ADMIN_TOKEN`, else auth_metadata()'s."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    return (("authorization", f"Bearer {token}"),) if token else auth_metadata()


def make_call(spec: ClientSpec, stub: rs_grpc.RegistryServiceAsyncStub, keys: Keys) -> Call:
    """A no-argument coroutine factory sending one request of the workload."""
    consistency = res.CONSISTENCY_STRONG if spec.strong else res.CONSISTENCY_UNSPECIFIED
    t = spec.timeout
    md = auth_metadata()
    one: dict[str, Call] = {
        "resolve-alias": lambda: stub.ResolveReference(
            rs.ResolveReferenceRequest(reference=keys.alias_ref(), consistency=consistency),
            timeout=t,
            metadata=md,
        ),
        "latest": lambda: stub.ResolveReference(
            rs.ResolveReferenceRequest(reference=keys.latest_ref(), consistency=consistency),
            timeout=t,
            metadata=md,
        ),
        "get-by-number": lambda: stub.GetModelVersion(
            rs.GetModelVersionRequest(name=keys.version_name(), consistency=consistency),
            timeout=t,
            metadata=md,
        ),
        "batch-get": lambda: stub.BatchGetModelVersions(
            rs.BatchGetModelVersionsRequest(
                references=[keys.number_ref() for _ in range(spec.batch_size)],
                consistency=consistency,
            ),
            timeout=t,
            metadata=md,
        ),
        "list-page": lambda: stub.ListModelVersions(
            rs.ListModelVersionsRequest(parent=keys.model_name(), page_size=spec.page_size),
            timeout=t,
            metadata=md,
        ),
    }
    one["empty-rpc"] = one["resolve-alias"]
    one["empty-batch"] = one["batch-get"]
    for name in ONE_MODEL:
        one[name] = one["get-by-number"]
    if spec.workload != "mix":
        return one[spec.workload]
    names = [name for name, _ in MIX]
    cum = list(itertools.accumulate(weight for _, weight in MIX))

    def mixed() -> Awaitable[Any]:
        return one[names[bisect.bisect_left(cum, keys.rng.random() * cum[-1] + 1e-9)]]()

    return mixed


class Recorder:
    """Latencies (µs) and error codes of one phase."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(1, MAX_LATENCY_US, 3)
        self.errors: Counter[str] = Counter()

    async def timed(self, call: Call, start_ns: int) -> None:
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
            return
        elapsed_us = (time.perf_counter_ns() - start_ns) // 1000
        self.hist.record_value(min(max(elapsed_us, 1), MAX_LATENCY_US))


async def closed_loop(call: Call, concurrency: int, seconds: float) -> Recorder:
    rec = Recorder()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await rec.timed(call, time.perf_counter_ns())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rec


async def open_loop(call: Call, rate: float, seconds: float) -> Recorder:
    rec = Recorder()
    interval_ns = int(1e9 / rate)
    start = time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    pending: set[asyncio.Task[None]] = set()
    intended = start
    while intended < end:
        delay = (intended - time.perf_counter_ns()) / 1e9
        await asyncio.sleep(max(delay, 0))  # also yields when behind schedule
        while intended <= time.perf_counter_ns() and intended < end:
            if len(pending) >= MAX_OUTSTANDING:
                rec.errors["CLIENT_OVERLOADED"] += 1
            else:
                task = asyncio.ensure_future(rec.timed(call, intended))
                pending.add(task)
                task.add_done_callback(pending.discard)
            intended += interval_ns
    if pending:
        await asyncio.wait(pending)
    return rec


async def prime(call: Call, keys: Keys, batch_size: int, concurrency: int = 16) -> Recorder:
    """Send requests walking the hot set in order until every key was asked once."""
    rec = Recorder()
    keys.sequential, keys.next = True, 0

    async def worker() -> None:
        while keys.next < len(keys.distinct):
            await rec.timed(call, time.perf_counter_ns())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    keys.sequential = False
    return rec


async def _phase(spec: ClientSpec, call: Call, seconds: float) -> Recorder:
    if spec.rate > 0:
        return await open_loop(call, spec.rate, seconds)
    return await closed_loop(call, spec.concurrency, seconds)


async def run_client(spec: ClientSpec, barrier: Any) -> ClientResult:
    """Warm up, meet the others at the barrier, measure, meet again, report."""
    manifest = Manifest.read(Path(spec.manifest_path))
    keys = Keys(
        manifest, spec.keys, spec.zipf_s, random.Random(spec.seed),
        hot=spec.hot_keys, model=spec.model,
    )  # fmt: skip
    async with grpc.aio.insecure_channel(spec.target) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        call = make_call(spec, stub, keys)
        if spec.prime:
            t0 = time.perf_counter()
            rec = await prime(call, keys, spec.batch_size)
            return _result(rec, time.perf_counter() - t0, 0.0)
        if spec.warmup > 0:
            await _phase(spec, call, spec.warmup)
        barrier.wait()
        me = psutil.Process()
        cpu0, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
        rec = await _phase(spec, call, spec.duration)
        elapsed, cpu = time.perf_counter() - t0, sum(me.cpu_times()[:2]) - cpu0
        barrier.wait()
    return _result(rec, elapsed, cpu)


def _result(rec: Recorder, elapsed: float, cpu: float) -> ClientResult:
    return ClientResult(
        histogram=rec.hist.encode(), count=rec.hist.get_total_count(),
        errors=sum(rec.errors.values()), error_codes=dict(rec.errors),
        elapsed_s=elapsed, cpu_s=cpu,
    )  # fmt: skip


def client_main(spec: ClientSpec, barrier: Any, results: Any) -> None:
    """Entry point of a client process (multiprocessing target)."""
    try:
        results.put(asyncio.run(run_client(spec, barrier)))
    except BaseException as exc:
        barrier.abort()  # the parent and the other clients must not wait forever
        results.put(exc)
        raise
