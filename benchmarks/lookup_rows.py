"""lookup.py's result rows: the clients' histograms merged into one row per run, the tier
that served it, the ratios to the ceiling of the same tier and load, the table and the one
JSON line."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

from hdrh.histogram import HdrHistogram

import results
from dataset import Manifest
from loadgen import MAX_LATENCY_US, ClientResult
from lookup_plan import CEILING, CEILING_BATCH, Run, hot_keys

DOMINANT = 0.95  # a tier serving at least this share of a window's lookups names the row
SUMMARY = ("system", "workload", "tier", "auth", "round", "cache_tier", "concurrency", "rate",
           "batch_size",
           "p50_ms", "p99_ms", "p999_ms", "throughput_per_s", "errors",
           "ceiling_ratio")  # fmt: skip


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
        "tier": run.tier, "auth": run.auth, "cache_tier": cache_tier(run, args, counts), **counts,
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


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Quote each modelreg row against the ceiling of its tier at the same load: a batch
    against the empty server's batch of the same size, anything else against the empty RPC."""
    ceiling = {
        (*_phase(r), r["workload"], r["concurrency"], r["rate"], r["batch_size"]): r
        for r in rows
        if r["system"] == "empty"
    }
    for row in rows:
        batched = row["workload"] == "batch-get"
        key = (*_phase(row), CEILING_BATCH if batched else CEILING, row["concurrency"],
               row["rate"], row["batch_size"] if batched else None)  # fmt: skip
        base = ceiling.get(key)
        if row["system"] != "modelreg" or not base or not base["throughput_per_s"]:
            continue
        for stat in ("p50", "p99", "p999"):
            row[f"{stat}_vs_ceiling"] = round(row[f"{stat}_ms"] / max(base[f"{stat}_ms"], 1e-6), 2)
        if row["rate"] is None:  # open loop: throughput is the rate, so only latency compares
            row["ceiling_ratio"] = round(row["throughput_per_s"] / base["throughput_per_s"], 3)


def _phase(row: dict[str, Any]) -> tuple[Any, ...]:
    """The server start a row was measured in: its ceiling is the empty RPC of the same one."""
    return (row.get("tier"), row.get("auth"), row.get("round"))


def auth_costs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each modelreg load measured with authentication on and off (--auth on,off, the same
    seed and load), paired round by round (--rounds): the medians over the rounds of
    throughput on/off, of the same ratio with each side taken against the empty RPC of its
    own server start (`vs_ceiling`, which cancels drift between starts), and of what
    authentication adds at p50 and p99."""
    off = {_load(r): r for r in rows if r["system"] == "modelreg" and r.get("auth") == "off"}
    pairs: dict[tuple[Any, ...], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for on in (r for r in rows if r["system"] == "modelreg" and r.get("auth") == "on"):
        base = off.get(_load(on))
        if base is not None and base["throughput_per_s"]:
            pairs.setdefault(_load(on)[:-1], []).append((on, base))
    return [_auth_cost(measured) for measured in pairs.values()]


def _auth_cost(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    def median(f: Callable[[dict[str, Any], dict[str, Any]], float]) -> float:
        return statistics.median(f(on, off) for on, off in pairs)

    on = pairs[0][0]
    cost = {
        "workload": on["workload"], "tier": on["tier"], "cache_tier": on.get("cache_tier"),
        "concurrency": on["concurrency"], "rate": on["rate"], "batch_size": on["batch_size"],
        "rounds": len(pairs),
        "throughput_on_per_s": median(lambda a, b: a["throughput_per_s"]),
        "throughput_off_per_s": median(lambda a, b: b["throughput_per_s"]),
        "throughput_ratio": round(median(lambda a, b: a["throughput_per_s"]
                                                / b["throughput_per_s"]), 3),
        "p50_added_us": round(median(lambda a, b: 1000 * (a["p50_ms"] - b["p50_ms"])), 1),
        "p99_added_us": round(median(lambda a, b: 1000 * (a["p99_ms"] - b["p99_ms"])), 1),
    }  # fmt: skip
    if all(a.get("ceiling_ratio") and b.get("ceiling_ratio") for a, b in pairs):
        ratio = median(lambda a, b: a["ceiling_ratio"] / b["ceiling_ratio"])
        cost["throughput_ratio_vs_ceiling"] = round(ratio, 3)
    return cost


def _load(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["workload"], row["tier"], row["concurrency"], row["rate"], row["batch_size"],
            row.get("round"))  # fmt: skip


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the table, write the result file (unless --no-write), print the JSON line."""
    print(results.table(rows))
    costs = auth_costs(rows)
    for cost in costs:
        print(
            f"auth on/off {cost['workload']} c={cost['concurrency']}: throughput"
            f" {cost['throughput_on_per_s']:,.0f}/{cost['throughput_off_per_s']:,.0f}/s"
            f" = {cost['throughput_ratio']:.3f}"
            f" ({cost.get('throughput_ratio_vs_ceiling', '-')} against each start's empty RPC),"
            f" p50 {cost['p50_added_us']:+} us, p99 {cost['p99_added_us']:+} us;"
            f" medians of {cost['rounds']} round(s)"
        )
    path = None if args.no_write else results.write(rows, args.label, args.out_dir)
    summary = [{k: r[k] for k in SUMMARY if r.get(k) is not None} for r in rows]
    print(json.dumps({"file": str(path) if path else None, "rows": summary, "auth": costs}))
