"""MLflow side by side: the equivalent lookups against an MLflow tracking server on the same data.

    PYTHONPATH=src .venv/bin/python benchmarks/mlflow_bench.py --versions 1000000
    PYTHONPATH=src .venv/bin/python benchmarks/mlflow_bench.py --versions 1000000 --modelreg

MLflow lives in its own venv (--mlflow-python, default benchmarks/.data/mlflow-venv;
installing it here would change protobuf and grpcio). The program starts the
embedded PostgreSQL of benchmarks/.data/pg-<N> (where modelreg's seed of N lives),
creates a database `mlflow` in it, lets `mlflow db upgrade` build MLflow's schema,
seeds MLflow's registry tables by COPY with the same shape of data (mlflow_seed.py;
skipped when an equal seed is there), starts `mlflow server` under gunicorn
(--workers, default 2, 127.0.0.1 only) and drives its REST API from separate client
processes (mlflow_load.py, aiohttp, closed loop):

    get-by-number         GET  model-versions/get                 ~ modelreg get-by-number
    resolve-alias         GET  registered-models/alias            ~ modelreg resolve-alias
    latest                POST registered-models/get-latest-versions (stage None) ~ latest
    latest-search         GET  model-versions/search, newest 1    ~ modelreg latest
    search-by-name        GET  model-versions/search, newest --page-size ~ list-page
    get-registered-model  GET  registered-models/get on the model with the most versions

With --modelreg it then runs lookup.py --start on the same seed in the same sitting
(MLflow stopped first), or --compare FILE takes modelreg rows from a result file,
and each MLflow row gets `modelreg_speedup` (modelreg throughput / MLflow's) and
`p50_vs_modelreg` (MLflow p50 / modelreg p50) at the same load. Every server it
starts is stopped by pid. Writes benchmarks/results/<date>-mlflow-<N>.json (rows
with system "mlflow"), prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

import dataset
import mlflow_seed
import pg
import results
from lookup_measure import run_clients
from lookup_plan import Run
from lookup_rows import row_of
from mlflow_load import API, EQUIVALENT, WORKLOADS, HttpSpec, client_main, request_maker
from procs import free_port, stop
from seed import print_report, short

HERE = Path(__file__).resolve().parent
GIANT = "get-registered-model"
LOOKUP_TIMEOUT_S = 1200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mlflow_seed.add_seed_args(p)
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of mlflow server")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma list of {', '.join(WORKLOADS)}")  # fmt: skip
    p.add_argument("--concurrency", default="1,8", help="closed-loop levels")
    p.add_argument("--giant-concurrency", default="1", help=f"levels for {GIANT}")
    p.add_argument("--giant-duration", type=float, default=20.0, help=f"seconds for {GIANT}")
    p.add_argument("--processes", type=int, default=1, help="client processes per measurement")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
    p.add_argument("--keys", choices=("uniform", "zipf"), default="uniform")
    p.add_argument("--zipf-s", type=float, default=1.1)
    p.add_argument("--page-size", type=int, default=50, help="search-by-name page size")
    p.add_argument("--target", help="http://HOST:PORT of a running MLflow server (no start)")
    p.add_argument("--skip-seed", action="store_true", help="use the MLflow database as it is")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--modelreg", action="store_true", help="then run lookup.py --start on the same seed"
    )
    where.add_argument("--compare", type=Path, help="modelreg result file to take the ratio to")
    p.add_argument("--modelreg-tier", default="postgres",
                   help="lookup.py --tier of the modelreg side (postgres: no cache)")  # fmt: skip
    p.add_argument("--modelreg-workers", type=int, default=2,
                   help="modelreg serve --workers (2, as MLflow's gunicorn workers)")  # fmt: skip
    p.add_argument("--label", help="result file label; default mlflow-<N>")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only, write no result file")
    args = p.parse_args(argv)
    mlflow_seed.finish_seed_args(args)
    args.label = args.label or f"mlflow-{short(args.versions)}"
    args.workloads = [w for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    return args


# --- the MLflow server ---------------------------------------------------------------------


def start_mlflow(
    args: argparse.Namespace, postgres_url: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """`mlflow server` under gunicorn on a free loopback port; return it and its base URL."""
    port = free_port()
    artifacts = pg.DATA / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(args.mlflow_python), "-m", "mlflow", "server",
        "--backend-store-uri", mlflow_seed.sqlalchemy_url(postgres_url),
        "--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
        "--gunicorn-opts", "--timeout 300 --log-level warning",
    ]  # fmt: skip
    # the job executor (huey consumers, schedulers) serves no registry call and spends a
    # core for ~40 s at start-up; a registry-only deployment would switch it off too
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_mlflow(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /health until it answers 200; fail if the server exits or takes 120 s."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if http_get(f"{base}/health", 2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {base} not ready in 120 s; log {log}")


def stop_tree(proc: subprocess.Popen[Any]) -> None:
    """Stop a server and every process it started (gunicorn master and workers), by pid."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    stop(proc, timeout=20)
    for child in family:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(family, timeout=10)
    for child in alive:
        child.kill()


def probe(base: str, workload: str, manifest: Path, page_size: int) -> int:
    """Send one request of the workload; return its response size (raise unless 200)."""
    import random

    from loadgen import Keys

    keys = Keys(dataset.Manifest.read(manifest), "uniform", 1.1, random.Random(7))
    method, path, payload = request_maker(workload, keys, page_size)()
    url = f"{base}{API}/{path}"
    if method == "POST":
        data = json.dumps(payload).encode()
        req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    else:
        req = urllib.request.Request(f"{url}?{urllib.parse.urlencode(payload)}")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"{workload}: {method} {path} -> {exc.code} {exc.read()[:500]!r}"
        ) from exc
    return len(body)


# --- measuring ------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(workload, concurrency) of every measurement."""
    runs = []
    for w in args.workloads:
        levels = args.giant_concurrency if w == GIANT else args.concurrency
        runs += [(w, int(c)) for c in levels.split(",") if c]
    return runs


def measure(
    args: argparse.Namespace, base: str, pids: dict[str, int | None]
) -> list[dict[str, Any]]:
    sizes = {w: probe(base, w, args.manifest, args.page_size) for w in args.workloads}
    rows = []
    runs = plan(args)
    for i, (workload, concurrency) in enumerate(runs, start=1):
        print(f"[{i}/{len(runs)}] mlflow {workload} c={concurrency}", file=sys.stderr, flush=True)
        giant = workload == GIANT
        spec = HttpSpec(
            base_url=base, workload=workload, manifest_path=str(args.manifest), keys=args.keys,
            zipf_s=args.zipf_s, duration=args.giant_duration if giant else args.duration,
            warmup=0.1 if giant else args.warmup, page_size=args.page_size,
        )  # fmt: skip
        n = min(args.processes, concurrency)
        specs = [
            replace(spec, concurrency=concurrency // n + (k < concurrency % n), seed=k)
            for k in range(n)
        ]
        got, cpu, _ = run_clients(specs, pids, client=client_main)
        row = row_of(Run("mlflow", workload, base, concurrency), args, got, cpu)
        row.update(equivalent=EQUIVALENT[workload], response_bytes=sizes[workload],
                   mlflow_workers=args.workers)  # fmt: skip
        if giant:
            row["model_versions"] = dataset.Manifest.read(args.manifest).counts[0]
        rows.append(row)
    return rows


def measure_mlflow(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Seed (unless done), start MLflow, measure, stop everything started here."""
    if args.target:
        return measure(args, args.target.rstrip("/"), {}), {}
    server = None
    proc = None
    try:
        if args.postgres_url:
            url, pg_pid = args.postgres_url, None
        else:
            server = pg.start_embedded(args.data_dir)
            url, pg_pid = mlflow_seed.mlflow_database_url(server), pg.postmaster_pid(server)
        mlflow_seed.db_upgrade(args.mlflow_python, url)
        seeded = seed_mlflow(args, url)
        log = pg.DATA / "mlflow-server.log"
        proc, base = start_mlflow(args, url, log)
        wait_mlflow(base, proc, log)
        rows = measure(args, base, {"server": proc.pid, "postgres": pg_pid})
    finally:
        if proc is not None:
            stop_tree(proc)
        if server is not None:
            server.cleanup()
    return rows, seeded


def seed_mlflow(args: argparse.Namespace, url: str) -> dict[str, Any]:
    if args.skip_seed:
        if not args.manifest.exists():
            raise SystemExit(f"--skip-seed needs the manifest {args.manifest}")
        return {"skipped": True}
    counts = dataset.plan_counts(args.versions, args.models, args.seed)
    report = asyncio.run(
        mlflow_seed.seed(url, counts, connections=args.connections, fresh=args.fresh,
                         quiet=args.quiet, manifest=args.manifest)
    )  # fmt: skip
    print_report(report)
    return vars(report)


# --- the modelreg side and the ratio ---------------------------------------------------------


def run_modelreg(args: argparse.Namespace) -> Path:
    """lookup.py --start on the same seed with the same loads; return its result file."""
    levels = sorted({c for c in args.concurrency.split(",") if c}, key=int)
    workloads = sorted({e for w in args.workloads if (e := EQUIVALENT[w])})
    cmd = [
        sys.executable, str(HERE / "lookup.py"), "--start", "--versions", str(args.versions),
        "--data-dir", str(args.data_dir), "--workloads", ",".join(workloads),
        "--concurrency", ",".join(levels), "--duration", str(args.duration),
        "--warmup", str(args.warmup), "--processes", str(args.processes), "--keys", args.keys,
        "--page-size", str(args.page_size), "--label", f"lookup-vs-{args.label}",
        "--tier", args.modelreg_tier, "--workers", str(args.modelreg_workers),
        "--out-dir", str(args.out_dir),
    ]  # fmt: skip
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)  # same sitting: MLflow is down
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=LOOKUP_TIMEOUT_S, env=os.environ.copy(),
        check=False,
    )  # fmt: skip
    sys.stderr.write(done.stdout)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    path = json.loads(last).get("file") if last.startswith("{") else None
    if not path:
        raise RuntimeError(f"lookup.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(path)


def add_ratios(rows: list[dict[str, Any]], modelreg_rows: list[dict[str, Any]]) -> None:
    """Quote each MLflow row against modelreg's equivalent workload at the same load."""
    ours = {
        (r["workload"], r["concurrency"], r["versions"]): r
        for r in modelreg_rows
        if r["system"] == "modelreg" and r.get("rate") is None and not r.get("batch_size")
    }
    for row in rows:
        mine = ours.get((row["equivalent"], row["concurrency"], row["versions"]))
        if not mine or not row["throughput_per_s"] or not mine["p50_ms"]:
            continue
        row["modelreg_speedup"] = round(mine["throughput_per_s"] / row["throughput_per_s"], 2)
        row["p50_vs_modelreg"] = round(row["p50_ms"] / mine["p50_ms"], 2)
        row["modelreg_p50_ms"] = mine["p50_ms"]
        row["modelreg_throughput_per_s"] = mine["throughput_per_s"]


def report(
    rows: list[dict[str, Any]], args: argparse.Namespace, seeded: dict[str, Any],
    compared: Path | None, path: Path | None = None,
) -> Path | None:  # fmt: skip
    """Print the table (and ratios), write or rewrite the result file, print one JSON line."""
    print(results.table(rows))
    ratios = [r for r in rows if "modelreg_speedup" in r]
    for r in ratios:
        print(
            f"{r['workload']:>22} c={r['concurrency']:<3} vs modelreg {r['equivalent']}: "
            f"modelreg throughput x{r['modelreg_speedup']}, MLflow p50 = {r['p50_vs_modelreg']}x"
        )
    if not args.no_write:
        if path is None:
            path = results.write(rows, args.label, args.out_dir)
        body = json.loads(path.read_text())
        body["rows"] = rows
        body.update(mlflow_seed=seeded, compared_with=str(compared) if compared else None,
                    mlflow_version=_mlflow_version(args.mlflow_python))  # fmt: skip
        path.write_text(json.dumps(body, indent=1) + "\n")
    keys = ("system", "workload", "equivalent", "concurrency", "p50_ms", "p99_ms", "p999_ms",
            "throughput_per_s", "errors", "modelreg_speedup", "p50_vs_modelreg")  # fmt: skip
    summary = [{k: r[k] for k in keys if r.get(k) is not None} for r in rows]
    print(json.dumps({"file": str(path) if path else None, "rows": summary}), flush=True)
    return path


def _mlflow_version(python: Path) -> str | None:
    code = "from importlib.metadata import version; print(version('mlflow'))"
    try:
        out = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, seeded = measure_mlflow(args)
    path = report(rows, args, seeded, None)  # MLflow's rows are kept even if modelreg fails
    compared = args.compare
    if args.modelreg:
        compared = run_modelreg(args)
    if compared:
        add_ratios(rows, json.loads(compared.read_text())["rows"])
        report(rows, args, seeded, compared, path)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
