"""Filtered pages through SearchModelVersions and ListModelVersions(filter), on a seed.

    PYTHONPATH=src .venv/bin/python benchmarks/seed.py --versions 10000000 --huge-model 1000000
    PYTHONPATH=src .venv/bin/python benchmarks/search.py --versions 10000000

Starts the seed's embedded PostgreSQL and one `modelreg serve` (caches off: a search never
reads them), then for each filter times the first page and a deep page (the page after
following `--deep` pages of tokens), `--rounds` times each, one call at a time, through
the generated stubs with the seed's API key. Filters: by label, run_id, state and a time
window across the registry, and by metric within the biggest model (`--huge-model` of
seed.py), and by dataset (digest, and URI) through the seed's lineage. Prints a table and
one JSON line; writes benchmarks/results/<date>-<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

import pg
import results
from dataset import NAMESPACE, Manifest, dataset_of, model_name, run_id_of
from loadgen import auth_metadata
from lookup_servers import Servers
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from seed import short

TARGET_P99_MS = 20.0


def queries(manifest: Manifest) -> list[tuple[str, str, Any]]:
    """(name, scope, request builder) of every measured filter."""
    biggest = max(range(len(manifest.counts)), key=lambda i: manifest.counts[i])
    big = f"namespaces/{NAMESPACE}/models/{model_name(biggest + 1)}"
    run_id = run_id_of(1, 1)
    digest, uri = dataset_of(7)
    return [
        ("label", "registry", {"filter": 'labels.team = "team-3"'}),
        ("run_id", "registry", {"filter": f'run_id = "{run_id}"'}),
        ("state", "registry", {"filter": "state = FAILED"}),
        ("time window", "registry",
         {"filter": 'create_time >= "2025-01-02T00:00:00Z"'
                    ' AND create_time < "2025-01-02T06:00:00Z"'}),
        ("dataset digest", "registry", {"filter": f'dataset = "{digest}"'}),
        ("dataset uri", "registry", {"filter": f'dataset = "{uri}"'}),
        ("label OR state", "registry",
         {"filter": 'labels.team = "team-3" OR state = ARCHIVED', "order_by": "create_time"}),
        ("metric", f"model ({manifest.counts[biggest]:,} versions)",
         {"parent": big, "filter": "metrics.auc > 0.9"}),
        ("metric order", f"model ({manifest.counts[biggest]:,} versions)",
         {"parent": big, "filter": "state = READY", "order_by": "metrics.auc desc"}),
    ]  # fmt: skip


async def page(stub: rs_grpc.RegistryServiceAsyncStub, spec: dict[str, Any], size: int,
               token: str) -> tuple[float, str, int]:  # fmt: skip
    """One page: seconds, next token, items."""
    metadata = auth_metadata()
    start = time.perf_counter()
    if "parent" in spec:
        reply: Any = await stub.ListModelVersions(
            rs.ListModelVersionsRequest(page_size=size, page_token=token, **spec),
            metadata=metadata,
        )
    else:
        reply = await stub.SearchModelVersions(
            rs.SearchModelVersionsRequest(page_size=size, page_token=token, **spec),
            metadata=metadata,
        )
    return time.perf_counter() - start, reply.next_page_token, len(reply.versions)


async def measure(
    target: str, manifest: Manifest, args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        for name, scope, spec in queries(manifest):
            if args.only and name not in args.only:
                continue

            async def fetch(token: str, spec: dict[str, Any] = spec) -> tuple[float, str, int]:
                return await page(stub, spec, args.page_size, token)

            for kind, token, items in await pages_to_time(fetch, args.deep):
                times = []
                for _ in range(args.rounds):
                    times.append((await page(stub, spec, args.page_size, token))[0])
                described = {"name": name, "scope": scope, "page": kind, "items": items}
                rows.append(row_of(described, spec, times, args))
                print(f"  {name} {kind}: p99 {rows[-1]['p99_ms']} ms", file=sys.stderr, flush=True)
    return rows


Fetch = Callable[[str], Awaitable[tuple[float, str, int]]]  # a page token -> (s, next, items)


async def pages_to_time(fetch: Fetch, deep: int) -> list[tuple[str, str, int]]:
    """(kind, token, first page's items) of the pages to time: the first, and the page
    after following `deep` tokens (or as many as there are; none if one page holds all)."""
    _, deep_token, items = await fetch("")
    depth = 0
    for _ in range(deep):
        if not deep_token:
            break
        _, next_token, _ = await fetch(deep_token)
        if not next_token:
            break
        deep_token, depth = next_token, depth + 1
    found = [("first", "", items)]
    if depth:
        found.append((f"deep ({depth + 1})", deep_token, items))
    return found


def row_of(
    described: dict[str, Any], spec: dict[str, Any], times: list[float],
    args: argparse.Namespace, system: str = "modelreg",
) -> dict[str, Any]:  # fmt: skip
    """A result row of one page's timings (`described`: name, scope, page, items)."""
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return {
        "system": system, "workload": f"search {described['name']}",
        "scope": described["scope"], "page": described["page"],
        "filter": spec["filter"], "order_by": spec.get("order_by", ""),
        "page_size": args.page_size, "first_page_items": described["items"], "rounds": len(ms),
        "versions": args.versions, "concurrency": 1,
        "p50_ms": round(statistics.median(ms), 3), "p99_ms": round(p99, 3),
        "max_ms": round(ms[-1], 3), "meets_target": p99 < TARGET_P99_MS,
    }  # fmt: skip


def seed_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the seed's arguments (its size, data dir, manifest)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    p.add_argument("--versions", type=int, default=1_000_000, help="the seed's size (seed.py)")
    p.add_argument("--data-dir", type=Path, help="embedded seed data dir; default .data/pg-<N>")
    p.add_argument("--manifest", type=Path, help="the seed's manifest; default <data-dir>.json")
    return p


def seed_paths(args: argparse.Namespace) -> None:
    """The seed's data dir and manifest where they were not given."""
    args.data_dir = args.data_dir or pg.DATA / f"pg-{short(args.versions)}"
    args.manifest = args.manifest or args.data_dir.with_suffix(".json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = seed_parser(__doc__.split("\n")[0])
    p.add_argument("--postgres-url", help="a seeded database instead of the embedded one")
    p.add_argument("--target", help="an existing modelreg HOST:PORT on that seed")
    p.add_argument("--rounds", type=int, default=200, help="timed calls per page")
    p.add_argument("--deep", type=int, default=20, help="pages followed for the deep page")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--only", help="comma list of query names to measure (default: all)")
    p.add_argument("--label", help="result file label; default search-<N>")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    args = p.parse_args(argv)
    seed_paths(args)
    args.label = args.label or f"search-{short(args.versions)}"
    args.only = {name.strip() for name in args.only.split(",")} if args.only else None
    # what lookup_servers.Servers reads: one server, no ceiling, no caches
    args.start, args.workloads, args.no_ceiling = not args.target, ["search"], True
    args.server_pid = args.postgres_pid = None
    args.workers, args.l1_ttl = 1, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.manifest.exists():
        raise SystemExit(f"no manifest {args.manifest}: run seed.py first or pass --manifest")
    manifest = Manifest.read(args.manifest)
    servers = Servers(args)
    try:
        servers.start()
        servers.start_tier("postgres", probe=f"{NAMESPACE}/{model_name(1)}@production")
        rows = asyncio.run(measure(servers.targets["modelreg"], manifest, args))
    finally:
        servers.stop()
    print(f"{'query':<22} {'scope':<26} {'page':<10} {'items':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['workload'][7:]:<22} {r['scope']:<26} {r['page']:<10}"
              f" {r['first_page_items']:>5} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")  # fmt: skip
    path = results.write(rows, args.label, args.out_dir)
    body = json.loads(path.read_text())  # marked, so report.py's lookup table leaves it out
    path.write_text(json.dumps({"benchmark": "search", **body}, indent=1) + "\n")
    met = sum(r["meets_target"] for r in rows)
    print(f"p99 under {TARGET_P99_MS:g} ms: {met} of {len(rows)} pages")
    summary = [{k: r[k] for k in ("workload", "scope", "page", "p50_ms", "p99_ms")} for r in rows]
    print(json.dumps({"benchmark": "search", "file": str(path), "rows": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
