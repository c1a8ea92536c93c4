"""Live-cache propagation: an alias moved N times while F live caches in P processes follow.

    PYTHONPATH=src .venv/bin/python benchmarks/live.py --moves 1000 --followers 100

Starts `modelreg serve` (embedded PostgreSQL, no Redis, its default workers) in a
temporary home unless --target names a registry, makes a model with N versions and an
alias on version 1, starts P follower processes (benchmarks/live_follower.py) holding
F/P live caches each, then moves the alias to versions 2..N, one SetAlias at a time,
every --interval seconds. It reports:

- propagation: for every move and every cache, the time from the SetAlias answer reaching
  the writer to the cache first showing that version or a later one (one clock: every
  process is on this host), p50/p99/max over moves x caches; negative when a cache heard
  before the writer did. Also backward moves seen by any cache (must be 0).
- resolve(): the in-process cost of LiveCache.resolve (a dict lookup), timed in batches of
  1,000 calls, p50/p99 of the per-call mean of each batch, against ResolveReference over
  the network (sequential, the SDK's AsyncClient.resolve) measured in the same run: the
  baseline, and the ratio between the two p50s.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

from modelreg.client import AsyncClient
from procs import free_port, process

BENCH = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moves", type=int, default=1000, help="alias moves (default: 1000)")
    parser.add_argument("--followers", type=int, default=100, help="live caches (default: 100)")
    parser.add_argument("--processes", type=int, default=4, help="follower processes (default 4)")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="seconds between moves (default: 0.02)"
    )
    parser.add_argument("--resolves", type=int, default=200_000, help="in-process resolve calls")
    parser.add_argument("--network", type=int, default=2000, help="network ResolveReference calls")
    parser.add_argument("--target", help="an existing registry HOST:PORT (default: start one)")
    parser.add_argument("--workers", type=int, help="server processes when starting one")
    return parser.parse_args(argv)


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def prepare(target: str, moves: int) -> str:
    """A model with `moves` READY versions, alias `prod` on 1; returns the reference."""
    model = f"default/live{uuid.uuid4().hex[:8]}"
    async with AsyncClient(target) as client:
        await client.create_model(model)
        for _ in range(moves):
            await client.create_version(model, ready=True)
        await client.set_alias(model, "prod", 1)
    return f"{model}@prod"


async def start_followers(args: argparse.Namespace, target: str, ref: str) -> list[Any]:
    per = [args.followers // args.processes] * args.processes
    for index in range(args.followers % args.processes):
        per[index] += 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), str(BENCH)])}
    procs = []
    for caches in per:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(BENCH / "live_follower.py"), target, ref, str(args.moves),
            str(caches), env=env, stdout=asyncio.subprocess.PIPE, limit=2**26,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:  # every cache loaded before the first move
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise SystemExit("a follower process failed to start")
    return procs


async def move(target: str, ref: str, moves: int, interval: float) -> dict[int, float]:
    """Move the alias to 2..moves; the wall-clock time each SetAlias answer arrived."""
    model, alias = ref.split("@")
    acked: dict[int, float] = {}
    async with AsyncClient(target) as client:
        start = time.monotonic()
        for number in range(2, moves + 1):
            await client.set_alias(model, alias, number)
            acked[number] = time.time()
            await asyncio.sleep(max(0.0, start + (number - 1) * interval - time.monotonic()))
    return acked


def propagation(acked: dict[int, float], results: list[dict[str, Any]]) -> list[float]:
    """Per move and cache: first time the cache showed >= that number, minus the ack."""
    delays = []
    for result in results:
        for seen in result["seen"]:
            numbers = [number for number, _ in seen]
            for number, ack in acked.items():
                at = bisect_left(numbers, number)
                if at < len(seen):
                    delays.append(seen[at][1] - ack)
    return sorted(delays)


async def resolve_costs(target: str, ref: str, calls: int, network: int) -> dict[str, float]:
    """In-process LiveCache.resolve vs network ResolveReference, both in this run."""
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(AsyncClient(target))
        live = await stack.enter_async_context(client.live(references=[ref]))
        resolve = live.resolve
        batch, per_call = 1000, []
        for _ in range(max(1, calls // batch)):
            begin = time.perf_counter_ns()
            for _ in range(batch):
                resolve(ref)
            per_call.append((time.perf_counter_ns() - begin) / batch / 1000)
        remote = []
        for _ in range(network):
            begin = time.perf_counter_ns()
            await client.resolve(ref)
            remote.append((time.perf_counter_ns() - begin) / 1000)
    per_call.sort()
    remote.sort()
    return {
        "resolve_p50_us": percentile(per_call, 0.5),
        "resolve_p99_us": percentile(per_call, 0.99),
        "network_p50_us": percentile(remote, 0.5),
        "network_p99_us": percentile(remote, 0.99),
    }


async def measure(args: argparse.Namespace, target: str) -> dict[str, Any]:
    ref = await prepare(target, args.moves)
    followers = await start_followers(args, target, ref)
    began = time.monotonic()
    acked = await move(target, ref, args.moves, args.interval)
    moving = time.monotonic() - began
    results = []
    for proc in followers:
        out, _ = await proc.communicate()
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    delays = propagation(acked, results)
    costs = await resolve_costs(target, ref, args.resolves, args.network)
    return {
        "benchmark": "live",
        "moves": args.moves,
        "followers": args.followers,
        "processes": args.processes,
        "interval_s": args.interval,
        "moving_s": round(moving, 2),
        "samples": len(delays),
        "expected_samples": (args.moves - 1) * args.followers,
        "violations": sum(r["violations"] for r in results),
        "propagation_p50_ms": percentile(delays, 0.5) * 1000,
        "propagation_p99_ms": percentile(delays, 0.99) * 1000,
        "propagation_max_ms": (delays[-1] if delays else float("nan")) * 1000,
        **costs,
        "network_over_resolve": costs["network_p50_us"] / costs["resolve_p50_us"],
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("moves x followers (processes)",
         f"{result['moves']} x {result['followers']} ({result['processes']})"),
        ("samples / expected", f"{result['samples']} / {result['expected_samples']}"),
        ("backward moves seen", str(result["violations"])),
        ("propagation p50 / p99 / max",
         f"{result['propagation_p50_ms']:.1f} / {result['propagation_p99_ms']:.1f}"
         f" / {result['propagation_max_ms']:.1f} ms"),
        ("resolve() p50 / p99",
         f"{result['resolve_p50_us']:.3f} / {result['resolve_p99_us']:.3f} us"),
        ("network ResolveReference p50 / p99",
         f"{result['network_p50_us']:.0f} / {result['network_p99_us']:.0f} us"),
        ("network p50 / resolve() p50", f"{result['network_over_resolve']:.0f}x"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with ExitStack() as stack:
        target = args.target
        if target is None:
            home = Path(tempfile.mkdtemp(prefix="modelreg-live-bench-"))
            stack.callback(shutil.rmtree, home, ignore_errors=True)
            stack.callback(home.with_suffix(".log").unlink, missing_ok=True)
            port = free_port()
            env = {
                "MODELREG_HOME": str(home),
                "MODELREG_ADDRESS": f"127.0.0.1:{port}",
                "MODELREG_AUTH": "off",  # measures following, not authentication (loopback)
                **({"MODELREG_WORKERS": str(args.workers)} if args.workers else {}),
            }
            command = [sys.executable, "-m", "modelreg", "serve"]
            stack.enter_context(process(command, port, home.with_suffix(".log"), env))
            target = f"127.0.0.1:{port}"
        result = asyncio.run(measure(args, target))
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
