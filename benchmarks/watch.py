"""Watch streams under load, against one `modelreg serve` on an embedded PostgreSQL.

Four phases, one table and one JSON line:

- memory: a client opens a stream and stops reading while --events events are written
  (transactions of --memory-tx-events), all within the stall bound (--stall). The
  server's RSS is sampled throughout (psutil): peak over the idle RSS is what the
  stalled stream cost, next to the same writes to a server nobody watches (the
  baseline, measured first in the same run). The client is then cut with
  RESOURCE_EXHAUSTED naming its last revision; a new stream resumed after it must
  deliver every remaining event (checked, not assumed).
- replay: 1, then --fanout watchers read the table's last --burst / --events-per-tx
  transactions (catch-up by keyset; after the memory phase most of them are its large
  ones), events/s delivered per watcher and in all.
- throughput: 1, then --fanout watchers follow live while --burst events are written as
  fast as one writer connection commits; events/s delivered over the time from the first
  commit to the last delivery (with 1 watcher this is the writer's commit rate).
- latency: --paced transactions of one event at --rate per second; commit acknowledged
  -> delivered to each watcher, p50/p99, for 1 and --fanout watchers. The ceiling beside it: a
  unary call that does one database read (GetServerStats reads the head), sequential,
  in the same run — a delivery is at least a notification, one read and one message.

    PYTHONPATH=src .venv/bin/python benchmarks/watch.py
    PYTHONPATH=src .venv/bin/python benchmarks/watch.py --events 20000 --fanout 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import asyncpg
import grpc
import psutil
from google.rpc import error_details_pb2, status_pb2

from modelreg.domain.names import ModelKey
from modelreg.embedded import start_postgres
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc
from procs import free_port, stop, wait_port

MODEL = ModelKey("default", "bench")
# what read() returns once a stream has ended; grpc-stubs 1.53 declares no grpc.aio.EOF
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
PHASE_SECONDS = 600  # a phase that takes longer is stuck: the program fails
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]  # a stalled client holds ~100 KiB, not MiBs


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="memory phase (100000)")
    parser.add_argument("--events-per-tx", type=int, default=10, help="replay, throughput (10)")
    parser.add_argument("--memory-tx-events", type=int, default=100, help="memory phase (100)")
    parser.add_argument("--buffer", type=int, default=1000, help="MODELREG_WATCH_BUFFER_EVENTS")
    parser.add_argument(
        "--stall", type=float, default=30.0, help="MODELREG_WATCH_STALL_SECONDS (30)"
    )
    parser.add_argument("--burst", type=int, default=20_000, help="throughput phase (20000)")
    parser.add_argument("--fanout", type=int, default=100, help="watchers of the wide runs (100)")
    parser.add_argument("--paced", type=int, default=200, help="latency transactions (200)")
    parser.add_argument("--rate", type=float, default=20.0, help="latency tx/s (20)")
    parser.add_argument("--pad", type=int, default=200, help="bytes of payload per event")
    return parser.parse_args(argv)


class Server:
    """`modelreg serve` in a child process, with its RSS sampled on demand."""

    def __init__(self, url: str, home: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
        env |= {
            "MODELREG_POSTGRES_URL": url,
            "MODELREG_HOME": str(home),
            "MODELREG_WORKERS": "1",
            "MODELREG_ADDRESS": self.target,
            "MODELREG_WATCH_BUFFER_EVENTS": str(args.buffer),
            "MODELREG_WATCH_STALL_SECONDS": str(args.stall),
            "MODELREG_LOG_LEVEL": "WARNING",
            "MODELREG_AUTH": "off",  # measures Watch, not authentication (loopback only)
        }
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelreg", "serve"], env=env, stdout=out, stderr=out
            )
        wait_port(self.port, self.proc, self.log)
        self.ps = psutil.Process(self.proc.pid)

    def rss_mib(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20


class Writer:
    """Transactions of alias.set events, written as the store writes them (rows, then the
    stamp that gives the transaction its revision, then COMMIT) on one connection."""

    def __init__(self, conn: asyncpg.Connection, per_tx: int, pad: int) -> None:
        self._conn, self._per_tx, self._pad = conn, per_tx, "x" * pad
        self.count = 0

    async def transaction(self, events: int | None = None) -> tuple[int, float]:
        """Commit one (of `events` events, default per_tx); its revision and when the
        commit was acknowledged."""
        size = events or self._per_tx
        resources = [f"{MODEL.name}/aliases/a{n}" for n in range(size)]
        afters = [json.dumps({"t": self.count, "n": n, "pad": self._pad}) for n in range(size)]
        async with self._conn.transaction():
            await self._conn.execute(INSERT, resources, afters)
            revision: int = await self._conn.fetchval(STAMP, [False] * size)
        acked = time.perf_counter()
        self.count += 1
        return revision, acked


INSERT = """
INSERT INTO events (ns, resource, kind, actor, after)
SELECT 'default', r, 'alias.set', 'bench', a::jsonb FROM unnest($1::text[], $2::text[]) AS t(r, a)
"""
STAMP = "SELECT modelreg_stamp_revision($1::boolean[])"


def _watch(channel: grpc.aio.Channel, request: ws.WatchRequest) -> Any:
    return ws_grpc.WatchServiceStub(channel).Watch(request)


async def memory_phase(server: Server, writer: Writer, args: argparse.Namespace) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(server.target, options=SMALL_WINDOW) as channel:
        call = _watch(channel, ws.WatchRequest(models=[MODEL.name]))
        opening = await call.read()  # established; from here on it reads nothing
        idle = server.rss_mib()
        peak, head = idle, opening.revision
        began = time.monotonic()
        for _ in range(args.events // args.memory_tx_events):
            head, _ = await writer.transaction(args.memory_tx_events)
            if writer.count % 10 == 0:
                peak = max(peak, server.rss_mib())
        peak = max(peak, server.rss_mib())
        written_in = time.monotonic() - began
        stalled_while_written = not await _stalled(server.target)
        await _cut(server.target)
        peak = max(peak, server.rss_mib())
        received, last = await _drain_until_cut(call)
        after = server.rss_mib()
        resumed = _watch(channel, ws.WatchRequest(models=[MODEL.name], after_revision=last))
        rest = await _events_until(resumed, head)
        resumed.cancel()
    kept = [r for r in received if r[0] <= last]
    events = sum(n for _, n in kept) + sum(n for _, n in rest)
    revisions = [r for r, _ in kept] + [r for r, _ in rest]
    return {
        "events_written": args.events,
        "events_delivered": events,
        "lost_or_duplicated": args.events - events + (len(revisions) - len(set(revisions))),
        "cut_last_revision": last,
        "written_in_seconds": round(written_in, 1),
        "all_written_before_the_cut": stalled_while_written,
        "rss_idle_mib": round(idle, 1),
        "rss_peak_mib": round(peak, 1),
        "rss_peak_over_idle_mib": round(peak - idle, 1),
        "rss_after_cut_mib": round(after, 1),
    }


async def _stalled(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stats = await admin_grpc.AdminServiceStub(channel).GetServerStats(
            admin.GetServerStatsRequest()
        )
    return stats.counters.get("watch.stalled", 0)


async def _cut(target: str) -> None:
    """Wait until the server counted a stalled stream (it waits MODELREG_WATCH_STALL_SECONDS
    for a write the client does not read)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = admin_grpc.AdminServiceStub(channel)
        for _ in range(6000):
            stats = await stub.GetServerStats(admin.GetServerStatsRequest())
            if stats.counters.get("watch.stalled"):
                return
            await asyncio.sleep(0.1)  # polls the server's counter; orders nothing
    raise SystemExit("the stalled stream was never cut")


async def _drain_until_cut(call: Any) -> tuple[list[tuple[int, int]], int]:
    """Read what the cut stream still holds; its last_revision from the ErrorInfo."""
    got: list[tuple[int, int]] = []
    try:
        while (message := await call.read()) is not EOF:
            if message.events:
                got.append((message.revision, len(message.events)))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return got, _last_revision(exc)
    raise SystemExit("the stalled stream was not cut: raise --events or lower --stall")


def _last_revision(exc: grpc.aio.AioRpcError) -> int:
    # grpc-stubs types the trailers as the sync API's; an AioRpcError's are grpc.aio.Metadata
    trailers = cast(grpc.aio.Metadata, exc.trailing_metadata())
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return int(info.metadata["last_revision"])
    raise SystemExit("RESOURCE_EXHAUSTED without last_revision")


async def _events_until(call: Any, head: int) -> list[tuple[int, int]]:
    got = []
    while True:
        message = await call.read()
        if message is EOF:
            raise SystemExit("a stream ended")
        if message.events:
            got.append((message.revision, len(message.events)))
        if message.revision >= head:
            return got


class Watchers:
    """`count` streams over a few channels, each noting when each revision arrived."""

    def __init__(self, target: str, count: int, after: int | None = None) -> None:
        self._target, self.count, self._after = target, count, after
        self.arrived: list[dict[int, float]] = [{} for _ in range(count)]
        self.events = [0] * count
        self.resumes = 0

    async def run(
        self, stack: AsyncExitStack, ready: asyncio.Event, head: asyncio.Future[int]
    ) -> None:
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(self._target))
            for _ in range(min(4, self.count))
        ]
        request = ws.WatchRequest(models=[MODEL.name])
        if self._after is not None:
            request.after_revision = self._after
        calls = [_watch(channels[i % len(channels)], request) for i in range(self.count)]
        opened = [(await call.read()).revision for call in calls]  # the opening bookmarks
        ready.set()
        follows = [
            self._follow(i, channels[i % len(channels)], (call, opened[i]), head)
            for i, call in enumerate(calls)
        ]
        await asyncio.gather(*follows)

    async def _follow(
        self, index: int, channel: grpc.aio.Channel, stream: Any, head: asyncio.Future[int]
    ) -> None:
        """Note each arrival; a stream cut because this process read it too slowly
        (RESOURCE_EXHAUSTED) resumes after its last revision, as the SDK does."""
        (call, position), arrived = stream, self.arrived[index]
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                self.resumes += 1
                call = _watch(
                    channel, ws.WatchRequest(models=[MODEL.name], after_revision=position)
                )
                continue
            position = max(position, message.revision)
            if message.events and message.revision not in arrived:
                arrived[message.revision] = time.perf_counter()
                self.events[index] += len(message.events)
            if head.done() and message.revision >= head.result():
                call.cancel()
                return


async def fan_phase(
    server: Server,
    writer: Writer,
    count: int,
    transactions: int,
    rate: float | None,
    *,
    events: int | None = None,
) -> dict[str, Any]:
    """`count` watchers; `transactions` commits, paced at `rate` per second or flat out."""
    watchers = Watchers(server.target, count)
    acked: dict[int, float] = {}
    async with AsyncExitStack() as stack:
        ready, head = asyncio.Event(), asyncio.get_running_loop().create_future()
        following = asyncio.create_task(watchers.run(stack, ready, head))
        await ready.wait()
        started = time.perf_counter()
        for i in range(transactions):
            if rate:
                await asyncio.sleep(max(started + i / rate - time.perf_counter(), 0))  # pacing
            revision, acked[revision] = await writer.transaction(events)
        head.set_result(max(acked))
        await following
    last = max(max(a.values()) for a in watchers.arrived)
    delivered = sum(watchers.events)
    latencies = sorted(
        (arrived[rev] - acked[rev]) * 1000
        for arrived in watchers.arrived
        for rev in arrived
        if rev in acked
    )
    return {
        "watchers": count,
        "events_per_watcher": delivered // count,
        "events_per_s_per_watcher": round(delivered / count / (last - started)),
        "events_per_s_all": round(delivered / (last - started)),
        "resumes_after_a_cut": watchers.resumes,
        "latency_p50_ms": round(_quantile(latencies, 0.5), 2),
        "latency_p99_ms": round(_quantile(latencies, 0.99), 2),
    }


async def replay_phase(server: Server, count: int, after: int, head: int) -> dict[str, Any]:
    """`count` watchers replay everything after `after` from the table, up to `head`."""
    watchers = Watchers(server.target, count, after)
    async with AsyncExitStack() as stack:
        ready, until = asyncio.Event(), asyncio.get_running_loop().create_future()
        until.set_result(head)
        started = time.perf_counter()
        await watchers.run(stack, ready, until)
    took = max(max(a.values()) for a in watchers.arrived) - started
    delivered = sum(watchers.events)
    return {
        "watchers": count,
        "events_per_watcher": delivered // count,
        "events_per_s_per_watcher": round(delivered / count / took),
        "events_per_s_all": round(delivered / took),
        "resumes_after_a_cut": watchers.resumes,
        "latency_p50_ms": None,
        "latency_p99_ms": None,
    }


def _quantile(values: list[float], q: float) -> float:
    return values[min(int(q * len(values)), len(values) - 1)] if values else float("nan")


async def unary_ceiling(target: str, calls: int = 300) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = admin_grpc.AdminServiceStub(channel)
        took = []
        for _ in range(calls):
            began = time.perf_counter()
            await stub.GetServerStats(admin.GetServerStatsRequest())
            took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return {"p50_ms": round(_quantile(took, 0.5), 2), "p99_ms": round(_quantile(took, 0.99), 2)}


async def baseline_phase(url: str, home: Path, args: argparse.Namespace) -> dict[str, float]:
    """The same writes to a server of its own that nobody watches: what the server's RSS
    does anyway (its other followers of the log read every change too)."""
    server = Server(url, home / "baseline", args)
    conn = await asyncpg.connect(url)
    try:
        writer = Writer(conn, args.events_per_tx, args.pad)
        idle = peak = server.rss_mib()
        for _ in range(args.events // args.memory_tx_events):
            await writer.transaction(args.memory_tx_events)
            if writer.count % 10 == 0:
                peak = max(peak, server.rss_mib())
        await unary_ceiling(server.target, calls=10)  # the server has read the last change
        peak = max(peak, server.rss_mib())
    finally:
        await conn.close()
        stop(server.proc)
    return {"rss_idle_mib": round(idle, 1), "rss_peak_over_idle_mib": round(peak - idle, 1)}


async def measure(args: argparse.Namespace, url: str, home: Path) -> dict[str, Any]:
    async with asyncio.timeout(PHASE_SECONDS):
        unwatched = await baseline_phase(url, home, args)  # it migrates the database
    server = Server(url, home / "server", args)
    conn = await asyncpg.connect(url)
    try:
        writer = Writer(conn, args.events_per_tx, args.pad)
        async with asyncio.timeout(PHASE_SECONDS):
            result: dict[str, Any] = {"memory": await memory_phase(server, writer, args)}
        result["memory"]["unwatched_rss_peak_over_idle_mib"] = unwatched["rss_peak_over_idle_mib"]
        burst = args.burst // args.events_per_tx
        paced = args.paced
        async with asyncio.timeout(PHASE_SECONDS):
            head, _ = await writer.transaction()
            after = max(head - burst, 0)  # the last --burst events, from the table
            result["replay"] = [
                await replay_phase(server, n, after, head) for n in (1, args.fanout)
            ]
        async with asyncio.timeout(PHASE_SECONDS):
            result["throughput"] = [
                await fan_phase(server, writer, n, burst, None) for n in (1, args.fanout)
            ]
        async with asyncio.timeout(PHASE_SECONDS):
            result["latency"] = [
                await fan_phase(server, writer, n, paced, args.rate, events=1)
                for n in (1, args.fanout)
            ]
        result["ceiling_unary_with_one_read"] = await unary_ceiling(server.target)
        return result
    finally:
        await conn.close()
        stop(server.proc)


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    mem = result["memory"]
    ceiling = result["ceiling_unary_with_one_read"]
    lines = [
        f"memory: {mem['events_written']:,} events written to a stalled stream (buffer"
        f" {args.buffer} events, written in {mem['written_in_seconds']} s, all before the"
        f" cut: {mem['all_written_before_the_cut']}): server RSS idle {mem['rss_idle_mib']} MiB,"
        f" peak"
        f" {mem['rss_peak_mib']} MiB (+{mem['rss_peak_over_idle_mib']} MiB); cut at revision"
        f" {mem['cut_last_revision']}; the same writes unwatched: +"
        f"{mem['unwatched_rss_peak_over_idle_mib']} MiB; resumed: {mem['events_delivered']:,}"
        f" delivered,"
        f" {mem['lost_or_duplicated']} lost or duplicated",
        "",
        "| phase | watchers | events/s per watcher | events/s in all | cuts | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for phase in ("replay", "throughput", "latency"):
        for row in result[phase]:
            lines.append(
                f"| {phase} | {row['watchers']} | {row['events_per_s_per_watcher']:,} |"
                f" {row['events_per_s_all']:,} | {row['resumes_after_a_cut']} |"
                f" {row['latency_p50_ms'] or ''} |"
                f" {row['latency_p99_ms'] or ''} |"
            )
    lines.append(
        f"| ceiling: unary GetServerStats (one DB read), sequential | | | | |"
        f" {ceiling['p50_ms']} | {ceiling['p99_ms']} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    home = Path(tempfile.mkdtemp(prefix="modelreg-bench-watch-"))
    postgres = start_postgres(home / "pg", delete_on_stop=True)
    try:
        result = asyncio.run(measure(args, postgres.url, home))
    finally:
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(table(result, args))
    print(json.dumps({"benchmark": "watch", "args": vars(args), **result}))
    return 1 if result["memory"]["lost_or_duplicated"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
