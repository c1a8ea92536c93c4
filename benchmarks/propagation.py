"""How fast a write reaches the other server processes' caches (section `workers`).

    PYTHONPATH=src .venv/bin/python benchmarks/propagation.py                 # 1,000 rounds
    PYTHONPATH=src .venv/bin/python benchmarks/propagation.py --rounds 3000 --label workers-3k

Starts `modelreg serve --workers 2` on the default configuration (embedded PostgreSQL
in a throw-away home, no Redis) and opens one connection pinned to each worker. Each
round warms worker B's L1 with the alias's current answer, moves the alias through
worker A, then polls B WITHOUT a token, back to back, until it answers the new version:
the stale window is the time from A's acknowledgement to the send of B's first fresh
answer (0 when the first poll after the acknowledgement is already fresh). Then the cost
of the token: B's ResolveReference with `min_revision` against the same lookup without
it, interleaved, once the follower has applied the revision (the steady state: an L1
hit either way), and right after a write through A (the read-your-writes path, which
may wait for B's follower). Prints a table and one JSON line; writes
benchmarks/results/<date>-<label>.json (`"benchmark": "propagation"`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc

import results
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from procs import free_port, stop

MODEL = "namespaces/default/models/propagation"
ALIAS = f"{MODEL}/aliases/production"
REF = "propagation@production"
SECTIONS = ("workers",)
MAX_POLLS = 100_000  # a round that never turns fresh is reported, not waited on forever
TABLE = (
    ("measure", "{}"), ("rounds", "{:,}"), ("stale_rounds", "{:,}"),
    ("p50_ms", "{:.3f}"), ("p99_ms", "{:.3f}"), ("max_ms", "{:.3f}"),
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sections", default="workers", help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--rounds", type=int, default=1000, help="alias moves measured")
    p.add_argument("--lookups", type=int, default=2000, help="lookups per side of the cost pair")
    p.add_argument("--workers", type=int, default=2, help="server processes on the one port")
    p.add_argument("--label", default="propagation", help="result file label")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only, write no result file")
    return p.parse_args(argv)


class Worker:
    """One connection pinned to one worker process."""

    def __init__(self, pid: int, channel: grpc.aio.Channel) -> None:
        self.pid = pid
        self.stub = rs_grpc.RegistryServiceStub(channel)

    async def resolve(self, min_revision: int = 0) -> int:
        request = rs.ResolveReferenceRequest(reference=REF, min_revision=min_revision)
        return (await self.stub.ResolveReference(request)).version.number


def start_server(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`modelreg serve --workers N` on the embedded default, no Redis, in `home`."""
    target = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env |= {"MODELREG_HOME": str(home), "MODELREG_ADDRESS": target}
    env["MODELREG_AUTH"] = "off"  # measures propagation, not authentication (loopback)
    log = home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelreg", "serve", "--workers", str(workers)],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    return proc, target, log


async def wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    async with grpc.aio.insecure_channel(target) as channel:
        stats = admin_grpc.AdminServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}:\n{_tail(log)}")
            try:
                await stats.GetServerStats(admin.GetServerStatsRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # the server is still starting
    raise SystemExit(f"server not up after 180 s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def pinned_workers(target: str, stack: AsyncExitStack) -> tuple[Worker, Worker]:
    """Open connections (own subchannel each) until two reach different workers."""
    found: dict[int, Worker] = {}
    for attempt in range(64):
        options = [("grpc.use_local_subchannel_pool", 1), ("modelreg.bench.channel", attempt)]
        channel = grpc.aio.insecure_channel(target, options=options)
        stack.push_async_callback(channel.close, None)
        reply = await admin_grpc.AdminServiceStub(channel).GetServerStats(
            admin.GetServerStatsRequest()
        )
        found.setdefault(reply.pid, Worker(reply.pid, channel))
        if len(found) == 2:
            first, second = found.values()
            return first, second
    raise SystemExit(f"64 connections all reached worker {set(found)}")


async def seed(writer: Worker) -> list[int]:
    await writer.stub.CreateModel(
        rs.CreateModelRequest(parent="namespaces/default", model_id="propagation")
    )
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    numbers = []
    for _ in range(2):
        reply = await writer.stub.CreateModelVersion(
            rs.CreateModelVersionRequest(parent=MODEL, version=ready)
        )
        numbers.append(reply.version.number)
    await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=numbers[0]))
    return numbers


async def stale_windows(writer: Worker, reader: Worker, numbers: list[int], rounds: int) -> Any:
    """Per round: ms from the acknowledgement to the first fresh answer's send (0: none
    stale), and how many rounds served at least one stale answer."""
    windows: list[float] = []
    stale_rounds = 0
    for round_ in range(rounds):
        target = numbers[(round_ + 1) % 2]
        await reader.resolve()  # B's L1 holds the current answer
        await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=target))
        acked = time.perf_counter()
        stale = False
        for _ in range(MAX_POLLS):
            sent = time.perf_counter()
            if await reader.resolve() == target:
                break
            stale = True
        else:
            raise SystemExit(f"round {round_}: worker B still stale after {MAX_POLLS} polls")
        stale_rounds += stale
        windows.append((sent - acked) * 1000 if stale else 0.0)
    return windows, stale_rounds


async def token_cost(writer: Worker, reader: Worker, numbers: list[int], lookups: int) -> Any:
    """(without, with) latencies in ms of B's lookups at rest, interleaved; then the
    token lookups right after a write through A."""
    moved = await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=numbers[0]))
    while await reader.resolve(moved.revision) != numbers[0]:
        pass  # the token read waits for B's follower; once fresh, both sides are at rest
    without: list[float] = []
    with_token: list[float] = []
    for _ in range(lookups):
        for samples, revision in ((without, 0), (with_token, moved.revision)):
            start = time.perf_counter()
            await reader.resolve(revision)
            samples.append((time.perf_counter() - start) * 1000)
    after_write: list[float] = []
    for round_ in range(max(lookups // 4, 1)):
        target = numbers[round_ % 2]
        reply = await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=target))
        start = time.perf_counter()
        assert await reader.resolve(reply.revision) == target, "a token read was stale"
        after_write.append((time.perf_counter() - start) * 1000)
    return without, with_token, after_write


def row(measure: str, samples: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "measure": measure,
        "rounds": len(ordered),
        "p50_ms": round(statistics.median(ordered), 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
        "max_ms": round(ordered[-1], 4),
        **extra,
    }


async def workers_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="modelreg-propagation-"))
    load_before = os.getloadavg()[0]  # the machine's other load skews these tails
    proc, target, log = start_server(home, args.workers)
    try:
        await wait_serving(target, proc, log)
        async with AsyncExitStack() as stack:
            writer, reader = await pinned_workers(target, stack)
            numbers = await seed(writer)
            windows, stale_rounds = await stale_windows(writer, reader, numbers, args.rounds)
            without, with_token, after_write = await token_cost(
                writer, reader, numbers, args.lookups
            )
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)
    common = {
        "section": "workers",
        "workers": args.workers,
        "redis": False,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
    }
    return [
        row("stale window after ack, no token", windows, stale_rounds=stale_rounds, **common),
        row("lookup on B, no token (at rest)", without, **common),
        row("lookup on B, with token (at rest)", with_token, **common),
        row("lookup on B with token right after a write on A", after_write, **common),
    ]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[name for name, _ in TABLE]]
    cells += [[results.cell(r.get(n), f, blank="-") for n, f in TABLE] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths, strict=True))) for line in cells]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    rows: list[dict[str, Any]] = []
    if "workers" in sections:
        rows += asyncio.run(workers_section(args))
    print(table(rows))
    if rows:
        before, after = rows[0]["load_avg_1m"]
        print(f"machine load average (1 min): {before} before, {after} after")
    path = None
    if not args.no_write:
        path = results.write(rows, args.label, args.out_dir)
        body = json.loads(path.read_text())
        path.write_text(json.dumps({"benchmark": "propagation", **body}, indent=1) + "\n")
    print(json.dumps({"file": str(path) if path else None, "rows": rows}))


if __name__ == "__main__":
    main()
