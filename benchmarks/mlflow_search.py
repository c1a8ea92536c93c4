"""MLflow's search_model_versions next to search.py, on the same seed, where MLflow has the filter.

    PYTHONPATH=src .venv/bin/python benchmarks/search.py --versions 10000000
    PYTHONPATH=src .venv/bin/python benchmarks/mlflow_search.py --versions 10000000

MLflow filters versions by name, run_id, source and tags (AND only); of search.py's
filters it can express two: `run_id = X` and a label (a version tag in MLflow:
`tags.team = 'team-3'`). This program seeds MLflow's registry tables in the `mlflow`
database of the modelreg seed's own embedded PostgreSQL with the same models and version
counts (the seed's manifest, its huge model included), the same run ids, creation times
and labels (mlflow_seed.py; skipped when an equal seed is there), starts `mlflow server`
(mlflow_bench.py's, 127.0.0.1 only) and times, one call at a time like search.py, the
first page and the page after following `--deep` page tokens, newest first (`order_by
creation_timestamp DESC`, search.py's default order), `--rounds` times each or until
`--budget` seconds are spent on a page. Each row is put next to search.py's row for the
same filter and page from `--compare` (default: the newest search-<N> result file):
`modelreg_p50_ms`, `modelreg_p99_ms` and `p99_vs_modelreg`. Prints a table and one JSON
line; writes benchmarks/results/<date>-mlflow-search-<N>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import mlflow_seed
import pg
import results
from dataset import Manifest, run_id_of
from mlflow_bench import http_get, start_mlflow, stop_tree, wait_mlflow
from mlflow_load import API
from search import pages_to_time, row_of, seed_parser, seed_paths
from seed import print_report, short

# (search.py's query name, MLflow filter); search.py's other filters MLflow cannot express
QUERIES = [
    ("label", "tags.team = 'team-3'"),
    ("run_id", f"run_id = '{run_id_of(1, 1)}'"),
]
ORDER = "creation_timestamp DESC"


def page(base: str, text: str, size: int, token: str) -> tuple[float, str, int]:
    """One page: seconds, next token, items."""
    query = {"filter": text, "max_results": size, "order_by": ORDER}
    if token:
        query["page_token"] = token
    url = f"{base}{API}/model-versions/search?{urllib.parse.urlencode(query)}"
    start = time.perf_counter()
    status, body = http_get(url, timeout=600)
    elapsed = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"{text!r}: HTTP {status} {body[:300]!r}")
    reply = json.loads(body)
    return elapsed, reply.get("next_page_token", ""), len(reply.get("model_versions", []))


def measure(base: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, text in QUERIES:

        async def fetch(token: str, text: str = text) -> tuple[float, str, int]:
            return page(base, text, args.page_size, token)

        for kind, token, items in asyncio.run(pages_to_time(fetch, args.deep)):
            times: list[float] = []
            started = time.monotonic()
            while len(times) < args.rounds and (
                len(times) < 5 or time.monotonic() - started < args.budget
            ):
                times.append(page(base, text, args.page_size, token)[0])
            described = {"name": name, "scope": "registry", "page": kind, "items": items}
            spec = {"filter": text, "order_by": ORDER}
            rows.append(row_of(described, spec, times, args, system="mlflow"))
            print(f"  mlflow {name} {kind}: p99 {rows[-1]['p99_ms']} ms over {len(times)}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return rows


def compare(rows: list[dict[str, Any]], path: Path | None) -> None:
    """Put each MLflow row next to search.py's row of the same filter and page."""
    if path is None:
        return
    ours = {(r["workload"], r["page"]): r for r in json.loads(path.read_text())["rows"]}
    for row in rows:
        mine = ours.get((row["workload"], row["page"]))
        if mine is None:
            continue
        row.update(modelreg_p50_ms=mine["p50_ms"], modelreg_p99_ms=mine["p99_ms"],
                   modelreg_filter=mine["filter"],
                   p99_vs_modelreg=round(row["p99_ms"] / mine["p99_ms"], 1))  # fmt: skip


def newest_search_result(out_dir: Path, versions: int) -> Path | None:
    """The newest search.py result file of this seed size, if any."""
    found = []
    for path in out_dir.glob("*.json"):
        try:
            body = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(body, dict) or body.get("benchmark") != "search":
            continue
        rows = body.get("rows") or [{}]
        if rows[0].get("system") == "modelreg" and rows[0].get("versions") == versions:
            found.append((body.get("time", ""), path))
    return max(found)[1] if found else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = seed_parser(__doc__.split("\n")[0])
    p.add_argument("--mlflow-python", type=Path, default=mlflow_seed.MLFLOW_PYTHON,
                   help="python of a venv with mlflow (not this one)")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of mlflow server")
    p.add_argument("--connections", type=int, default=3, help="parallel COPY connections")
    p.add_argument("--fresh", action="store_true", help="replace an existing MLflow seed")
    p.add_argument("--rounds", type=int, default=100, help="timed calls per page, at most")
    p.add_argument("--budget", type=float, default=120.0, help="seconds per page, 5 calls at least")
    p.add_argument("--deep", type=int, default=20, help="pages followed for the deep page")
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--compare", type=Path, help="search.py result file; default the newest")
    p.add_argument("--label", help="result file label; default mlflow-search-<N>")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    args = p.parse_args(argv)
    seed_paths(args)
    args.label = args.label or f"mlflow-search-{short(args.versions)}"
    args.compare = args.compare or newest_search_result(args.out_dir, args.versions)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.manifest.exists():
        raise SystemExit(f"no manifest {args.manifest}: run seed.py first or pass --manifest")
    counts = Manifest.read(args.manifest).counts
    server = pg.start_embedded(args.data_dir)
    proc = None
    try:
        url = mlflow_seed.mlflow_database_url(server)
        mlflow_seed.db_upgrade(args.mlflow_python, url)
        report = asyncio.run(mlflow_seed.seed(
            url, counts, connections=args.connections, fresh=args.fresh,
            manifest=pg.DATA / f"mlflow-{short(args.versions)}.json",
        ))  # fmt: skip
        print_report(report)
        log = pg.DATA / "mlflow-server.log"
        proc, base = start_mlflow(args, url, log)
        wait_mlflow(base, proc, log)
        rows = measure(base, args)
    finally:
        if proc is not None:
            stop_tree(proc)
        server.cleanup()
    compare(rows, args.compare)
    print(f"{'query':<10} {'page':<10} {'items':>5} {'p50 ms':>9} {'p99 ms':>9}"
          f" {'modelreg p50':>12} {'modelreg p99':>12} {'p99 ratio':>9}")  # fmt: skip
    for r in rows:
        ours = [r.get(k, "-") for k in ("modelreg_p50_ms", "modelreg_p99_ms", "p99_vs_modelreg")]
        print(f"{r['workload'][7:]:<10} {r['page']:<10} {r['first_page_items']:>5}"
              f" {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {ours[0]:>12} {ours[1]:>12}"
              f" {ours[2]:>9}")  # fmt: skip
    path = results.write(rows, args.label, args.out_dir)
    body = json.loads(path.read_text())
    extra = {"mlflow_seed": vars(report), "compared_with": str(args.compare or "")}
    path.write_text(json.dumps({"benchmark": "mlflow-search", **body, **extra}, indent=1) + "\n")
    summary = [{k: r.get(k) for k in ("workload", "page", "p50_ms", "p99_ms", "modelreg_p99_ms")}
               for r in rows]  # fmt: skip
    print(json.dumps({"benchmark": "mlflow-search", "file": str(path), "rows": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
