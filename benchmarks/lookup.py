"""Load generator for the hot lookups, with the empty-RPC ceiling measured in the same run.

    # against a running server, keys from a seed manifest
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --target 127.0.0.1:50051 \\
        --manifest benchmarks/.data/pg-1m.json --workloads resolve-alias,get-by-number
    # start the embedded Postgres of a seed and `modelreg serve` on it
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --start --versions 1000000
    # only the ceiling (needs a manifest for keys; any seed's will do)
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --workloads none

    # authentication on and off against the same seed (--auth on,off; the default is on),
    # with what it costs: throughput on/off and the p50/p99 it adds
    PYTHONPATH=src .venv/bin/python benchmarks/lookup.py --start --versions 20000 \
        --duration 3 --tier l1 --auth on,off --concurrency 1,64 --no-ceiling

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
import sys
from pathlib import Path
from typing import Any

import pg
import results
from dataset import Manifest
from loadgen import ONE_MODEL, WORKLOADS
from lookup_measure import measure_all
from lookup_plan import CEILING, HOT_KEYS, L1_TTL, TIERS, plan
from lookup_rows import add_ratios, report
from lookup_servers import Servers
from seed import short


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
    p.add_argument("--auth", default="on",
                   help="with --start, MODELREG_AUTH of the server, one after another\n"
                        "(on,off: the same loads with authentication on and off, and\n"
                        "what it costs); every client sends the same API key")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the tiers x auth sequence (on, off, on, off...) so drift\n"
                        "on a shared machine hits both modes; auth costs are medians\n"
                        "over the rounds")  # fmt: skip
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
                        "highest concurrency into\n"
                        "DIR/profile-<tier>-<workload>[-auth-<on|off>].txt")  # fmt: skip
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
    args.auths = [a for a in args.auth.split(",") if a]
    if any(a not in ("on", "off") for a in args.auths):
        p.error("--auth is a comma list of on and off")
    if not args.start:
        args.auths = [None]  # a running server: as it is configured
    if args.tier and not args.start:
        p.error("--tier configures the server --start starts; it needs --start")
    return args


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
        for round_ in range(args.rounds):
            for tier in args.tiers:
                for auth in args.auths:
                    servers.start_tier(tier, probe="bench/m000001@production", auth=auth or "on")
                    runs = plan(args, servers.targets, tier, manifest, auth)
                    measured = measure_all(runs, args, servers, manifest)
                    rows += [row | {"round": round_} for row in measured]
                    servers.stop_tier()
    finally:
        servers.stop()
    add_ratios(rows)
    report(rows, args)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
