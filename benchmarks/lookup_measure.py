"""Taking lookup.py's measurements: fresh client processes per run, meeting the parent at
two barriers so CPU and cache counters cover exactly the measured window; the hot set
primed once per workload before its first row."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from dataset import Manifest
from loadgen import ClientResult, client_main
from lookup_plan import Run, client_specs, hot_keys, ints
from lookup_probes import Probe, cpu_seconds
from lookup_rows import row_of
from lookup_servers import Servers

Hook = Callable[[], Any]


def run_clients(
    specs: Sequence[Any],
    pids: dict[str, int | None],
    on_start: Hook | None = None,
    on_end: Hook | None = None,
    *,
    client: Callable[[Any, Any, Any], None] = client_main,
) -> tuple[list[ClientResult], dict[str, float], Any]:
    """Start one `client(spec, barrier, queue)` process per spec (the gRPC one unless told
    otherwise); return their results, the CPU seconds used by `pids` over exactly the
    measured window (between the two barriers) and what `on_end` returned (`on_start` runs
    right after the first barrier, `on_end` right after the second)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(specs) + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=client, args=(s, barrier, queue)) for s in specs]
    for proc in procs:
        proc.start()
    spec = specs[0]
    try:
        barrier.wait(timeout=120 + spec.warmup)
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        if on_start:
            on_start()
        barrier.wait(timeout=120 + spec.duration)
        cpu = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
        ended = on_end() if on_end else None
        got = [queue.get(timeout=60) for _ in procs]
    except Exception:
        barrier.abort()
        got = [queue.get(timeout=5) for _ in procs if not queue.empty()]
        raise RuntimeError(f"client processes failed: {got}") from None
    finally:
        for proc in procs:
            proc.join(10)
    failures = [g for g in got if not isinstance(g, ClientResult)]
    if failures:
        raise RuntimeError(f"client processes failed: {failures}")
    return got, cpu, ended


def prime(run: Run, args: argparse.Namespace) -> None:
    """Ask every hot key of `run` once (one client, 16 in flight), so the tiers hold them."""
    spec = replace(client_specs(run, args)[0], concurrency=16, prime=True)
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(1)  # never waited on; kept alive for the child
    proc = ctx.Process(target=client_main, args=(spec, barrier, queue))
    proc.start()
    try:
        got = queue.get(timeout=600)
    finally:
        proc.join(10)
    if not isinstance(got, ClientResult) or got.errors:
        raise RuntimeError(f"priming {run.workload} failed: {got}")
    print(f"  primed the hot set ({got.count:,} requests, {got.elapsed_s:.1f} s)", file=sys.stderr)


def measure_all(
    runs: list[Run],
    args: argparse.Namespace,
    servers: Servers,
    manifest: Manifest | None = None,
) -> list[dict[str, Any]]:
    """Take every run in order, priming the hot set before a workload's first row; the rows."""
    rows = []
    top = max(ints(args.concurrency), default=None)
    primed: set[tuple[str, int | None, int | None]] = set()
    for i, run in enumerate(runs, start=1):
        load = f"c={run.concurrency}" if run.rate is None else f"rate={run.rate:g}/s"
        tier = f" [{run.tier}]" if run.tier else ""
        print(f"[{i}/{len(runs)}]{tier} {run.system} {run.workload} {load}", file=sys.stderr,
              flush=True)  # fmt: skip
        modelreg = run.system == "modelreg"
        kind = (run.workload, run.batch_size, run.model)
        if modelreg and hot_keys(args, run.tier) and kind not in primed:
            prime(run, args)
            primed.add(kind)
        probe = Probe(run, args, servers, profile=run.concurrency == top)
        got, cpu, counts = run_clients(
            client_specs(run, args), servers.pids[run.system], probe.start, probe.end
        )
        rows.append(row_of(run, args, got, cpu, counts=counts, manifest=manifest))
    return rows
