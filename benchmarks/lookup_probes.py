"""What lookup.py reads beside a measured window: CPU seconds of the server processes, the
server's cache counters (AdminService.GetServerStats), and with --profile-dir py-spy."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil

from loadgen import admin_metadata
from lookup_plan import Run
from lookup_servers import Servers
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc

COUNTERS = {
    "l1_hits": "cache.l1.hits", "l1_misses": "cache.l1.misses", "l2_hits": "cache.l2.hits",
    "l2_misses": "cache.l2.misses", "l2_errors": "cache.l2.errors",
    "db_lookups": "cache.db.lookups",
}  # fmt: skip


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
                reply = stub.GetServerStats(
                    admin.GetServerStatsRequest(reset=reset), timeout=5, metadata=admin_metadata()
                )
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
            auth = f"-auth-{self.run.auth}" if self.run.auth else ""
            name = f"profile-{self.run.tier or 'default'}-{self.run.workload}{auth}.txt"
            pid = worker_pids(self.servers.pids["modelreg"]["server"])[0]
            self.spy = start_profiler(pid, self.args.duration - 0.5, self.args.profile_dir / name)

    def end(self) -> dict[str, Any]:
        if self.spy is not None:
            self.spy.wait(60)
        return self.window.end() if self.window is not None else {}
