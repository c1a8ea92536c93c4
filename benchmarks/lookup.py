"""Load generator for the hot lookups, with the empty-RPC ceiling measured in the same run.

    # against a running server, keys from a seed manifest
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --target 127.0.0.1:50051 \\
        --manifest benchmarks/.data/pg-1m.json --workloads resolve-alias,get-by-number
    # start the embedded Postgres of a seed and `modelreg serve` on it
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --start --versions 1000000
    # only the ceiling (needs a manifest for keys; any seed's will do)
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --workloads none

Closed loop (--concurrency 1,8,64) measures throughput; open loop (--rate 500,2000)
measures latency from each request's intended send time. Client processes are
separate (--processes); each measurement starts fresh ones. Writes
benchmarks/results/<date>-<label>.json, prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import psutil
from hdrh.histogram import HdrHistogram

import pg
import results
from loadgen import MAX_LATENCY_US, WORKLOADS, ClientResult, ClientSpec, client_main
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from seed import short

HERE = Path(__file__).resolve().parent
CEILING = "empty-rpc"


@dataclass(frozen=True)
class Run:
    """One measurement to take."""

    system: str  # modelreg | empty
    workload: str
    target: str
    concurrency: int | None = None
    rate: float | None = None
    batch_size: int | None = None


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", help="HOST:PORT of a running modelreg server")
    where.add_argument("--start", action="store_true", help="start modelreg serve on the seed")
    p.add_argument("--versions", type=int, default=1_000_000, help="seed size (names defaults)")
    p.add_argument("--data-dir", type=Path, help="embedded seed data dir; default .data/pg-<N>")
    p.add_argument("--postgres-url", help="with --start: the server's database")
    p.add_argument("--manifest", type=Path, help="seed manifest; default <data-dir>.json")
    p.add_argument("--workloads", default="resolve-alias,get-by-number",
                   help=f"comma list of {', '.join(WORKLOADS)}, or none")  # fmt: skip
    p.add_argument("--no-ceiling", action="store_true", help=f"skip the {CEILING} ceiling")
    p.add_argument("--concurrency", default="1,8,64", help="closed-loop levels ('' for none)")
    p.add_argument("--rate", default="", help="open-loop rates in requests/s, comma list")
    p.add_argument("--processes", type=int, default=1, help="client processes per measurement")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before")
    p.add_argument("--keys", choices=("uniform", "zipf"), default="uniform")
    p.add_argument("--zipf-s", type=float, default=1.1)
    p.add_argument("--batch-size", default="10,100,1000", help="batch-get sizes, comma list")
    p.add_argument("--page-size", type=int, default=50, help="list-page size")
    p.add_argument("--strong", action="store_true", help="STRONG reads: skip every cache")
    p.add_argument("--server-pid", type=int, help="pid of --target's server, for its CPU")
    p.add_argument("--postgres-pid", type=int, help="postmaster pid, for Postgres CPU")
    p.add_argument("--label", help="result file label; default lookup-<N>")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only, write no result file")
    args = p.parse_args(argv)
    args.data_dir = args.data_dir or pg.DATA / f"pg-{short(args.versions)}"
    args.manifest = args.manifest or args.data_dir.with_suffix(".json")
    args.label = args.label or f"lookup-{short(args.versions)}"
    args.workloads = [w for w in args.workloads.split(",") if w and w != "none"]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return args


# --- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_empty() -> tuple[subprocess.Popen[str], str]:
    """Start empty_server.py on a free port; return it and its target."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "empty_server.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        stop(proc)
        raise RuntimeError(f"empty server did not start: {line!r}")
    return proc, f"127.0.0.1:{line.split()[1]}"


def start_modelreg(postgres_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m modelreg serve` on the seeded database; return it and its target."""
    target = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "MODELREG_POSTGRES_URL": postgres_url, "MODELREG_ADDRESS": target}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelreg", "serve"], env=env, stdout=out, stderr=out
        )
    return proc, target


def wait_ready(target: str, probe: str, proc: subprocess.Popen[Any], log: Path) -> None:
    """Poll ResolveReference(probe) until it answers OK; fail if the server exits."""
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(target) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                stub.ResolveReference(rs.ResolveReferenceRequest(reference=probe), timeout=2)
                return
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise RuntimeError(
                        f"probe {probe!r} failed: {exc.code()} {exc.details()}"
                    ) from exc
            time.sleep(0.3)
    raise TimeoutError(f"server at {target} not ready in 90 s; log {log}")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- CPU -----------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU of a process and its live children (0 when unknown or gone)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += sum(proc.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
        return total
    except psutil.NoSuchProcess:
        return 0.0


# --- measuring --------------------------------------------------------------------------


def client_specs(run: Run, args: argparse.Namespace) -> list[ClientSpec]:
    """Split a run's concurrency or rate over the client processes."""
    base = ClientSpec(
        target=run.target, workload=run.workload, manifest_path=str(args.manifest),
        keys=args.keys, zipf_s=args.zipf_s, duration=args.duration, warmup=args.warmup,
        batch_size=run.batch_size or 1, page_size=args.page_size, strong=args.strong,
    )  # fmt: skip
    if run.rate:
        n = args.processes
        return [replace(base, rate=run.rate / n, seed=i) for i in range(n)]
    c = run.concurrency or 1
    n = min(args.processes, c)
    return [replace(base, concurrency=c // n + (i < c % n), seed=i) for i in range(n)]


def run_clients(
    specs: list[ClientSpec], pids: dict[str, int | None]
) -> tuple[list[ClientResult], dict[str, float]]:
    """Start one process per spec; return their results and the CPU seconds used by `pids`
    over exactly the measured window (between the two barriers)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(specs) + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(s, barrier, queue)) for s in specs]
    for proc in procs:
        proc.start()
    spec = specs[0]
    try:
        barrier.wait(timeout=60 + spec.warmup)
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        barrier.wait(timeout=60 + spec.duration)
        cpu = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
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
    return got, cpu


def row_of(
    run: Run, args: argparse.Namespace, got: list[ClientResult], cpu: dict[str, float]
) -> dict[str, Any]:
    """Merge the clients' histograms into one result row."""
    hist = HdrHistogram(1, MAX_LATENCY_US, 3)
    for r in got:
        hist.add(HdrHistogram.decode(r.histogram))
    count, errors = sum(r.count for r in got), sum(r.errors for r in got)
    elapsed = max(r.elapsed_s for r in got)
    codes: dict[str, int] = {}
    for r in got:
        for code, n in r.error_codes.items():
            codes[code] = codes.get(code, 0) + n
    ms = {f"{k}_ms": hist.get_value_at_percentile(p) / 1000 for k, p in
          (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9))}  # fmt: skip
    throughput = count / elapsed if elapsed else 0.0
    return {
        "system": run.system, "workload": run.workload, "versions": args.versions,
        "concurrency": run.concurrency, "rate": run.rate, "batch_size": run.batch_size,
        "keys": args.keys, "processes": len(got), **ms,
        "max_ms": hist.get_max_value() / 1000, "mean_ms": round(hist.get_mean_value() / 1000, 4),
        "throughput_per_s": round(throughput, 1),
        "lookups_per_s": round(throughput * (run.batch_size or 1), 1),
        "requests": count, "errors": errors, "error_codes": codes,
        "cache_tier": _cache_tier(run, args), "duration_s": round(elapsed, 2),
        "server_cpu_s": round(cpu.get("server", 0.0), 3),
        "postgres_cpu_s": round(cpu.get("postgres", 0.0), 3),
        "client_cpu_s": round(sum(r.cpu_s for r in got), 3),
        "server_cpu_us_per_call": round(1e6 * cpu.get("server", 0.0) / count, 1) if count else None,
    }  # fmt: skip


def _cache_tier(run: Run, args: argparse.Namespace) -> str | None:
    if run.system != "modelreg":
        return None
    return "none (STRONG)" if args.strong else "default"


def plan(args: argparse.Namespace, targets: dict[str, str]) -> list[Run]:
    """Every measurement of this invocation: the ceiling first, then each workload."""
    loads: list[tuple[int | None, float | None]] = [(c, None) for c in _ints(args.concurrency)]
    loads += [(None, float(r)) for r in args.rate.split(",") if r]
    runs = []
    if "empty" in targets:
        runs += [Run("empty", CEILING, targets["empty"], c, r) for c, r in loads]
    for w in args.workloads if "modelreg" in targets else []:
        sizes: list[int | None] = list(_ints(args.batch_size)) if w == "batch-get" else [None]
        runs += [Run("modelreg", w, targets["modelreg"], c, r, b) for b in sizes for c, r in loads]
    return runs


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Quote each modelreg row against the ceiling at the same load."""
    ceiling = {(r["concurrency"], r["rate"]): r for r in rows if r["workload"] == CEILING}
    for row in rows:
        base = ceiling.get((row["concurrency"], row["rate"]))
        if row["system"] != "modelreg" or not base or not base["throughput_per_s"]:
            continue
        row["p50_vs_ceiling"] = round(row["p50_ms"] / max(base["p50_ms"], 1e-6), 2)
        if row["rate"] is None:  # open loop: throughput is the rate, so only latency compares
            row["ceiling_ratio"] = round(row["throughput_per_s"] / base["throughput_per_s"], 3)


def measure_all(
    runs: list[Run], args: argparse.Namespace, pids: dict[str, dict[str, int | None]]
) -> list[dict[str, Any]]:
    rows = []
    for i, run in enumerate(runs, start=1):
        load = f"c={run.concurrency}" if run.rate is None else f"rate={run.rate:g}/s"
        print(f"[{i}/{len(runs)}] {run.system} {run.workload} {load}", file=sys.stderr, flush=True)
        got, cpu = run_clients(client_specs(run, args), pids[run.system])
        rows.append(row_of(run, args, got, cpu))
    add_ratios(rows)
    return rows


class Servers:
    """The servers one invocation starts (and stops): empty, embedded Postgres, modelreg."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.targets: dict[str, str] = {}
        self.pids: dict[str, dict[str, int | None]] = {}
        self.postgres: Any = None

    def start(self, args: argparse.Namespace, probe: str) -> None:
        if not args.no_ceiling:
            proc, self.targets["empty"] = start_empty()
            self.procs.append(proc)
            self.pids["empty"] = {"server": proc.pid}
        if args.target:
            self.targets["modelreg"] = args.target
            self.pids["modelreg"] = {"server": args.server_pid, "postgres": args.postgres_pid}
        elif args.start and args.workloads:
            self._start_modelreg(args, probe)

    def _start_modelreg(self, args: argparse.Namespace, probe: str) -> None:
        url, pg_pid = args.postgres_url, args.postgres_pid
        if not url:
            self.postgres = pg.start_embedded(args.data_dir)
            url, pg_pid = self.postgres.get_uri(), pg.postmaster_pid(self.postgres)
        log = pg.DATA / "modelreg-serve.log"
        proc, target = start_modelreg(url, log)
        self.procs.append(proc)
        wait_ready(target, probe, proc, log)
        self.targets["modelreg"] = target
        self.pids["modelreg"] = {"server": proc.pid, "postgres": pg_pid}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        if self.postgres is not None:
            self.postgres.cleanup()


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(results.table(rows))
    path = None if args.no_write else results.write(rows, args.label, args.out_dir)
    keys = ("system", "workload", "concurrency", "rate", "batch_size", "p50_ms", "p99_ms",
            "p999_ms", "throughput_per_s", "errors", "ceiling_ratio")  # fmt: skip
    summary = [{k: r[k] for k in keys if r.get(k) is not None} for r in rows]
    print(json.dumps({"file": str(path) if path else None, "rows": summary}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.manifest.exists():
        raise SystemExit(f"no manifest {args.manifest}: run seed.py first or pass --manifest")
    if args.workloads and not (args.target or args.start):
        raise SystemExit("workloads need --target HOST:PORT or --start")
    servers = Servers()
    try:
        servers.start(args, probe="bench/m000001@production")
        rows = measure_all(plan(args, servers.targets), args, servers.pids)
    finally:
        servers.stop()
    report(rows, args)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
