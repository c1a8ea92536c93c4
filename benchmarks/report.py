"""Turn result files into a markdown table and PNG plots in benchmarks/results/.

    PYTHONPATH=src .venv/bin/python benchmarks/report.py                # every results/*.json
    PYTHONPATH=src .venv/bin/python benchmarks/report.py results/2026-11-29-headline-*.json

Writes report.md (closed-loop rows, newest file per label wins), latency_vs_size.png
(p50/p99/p99.9 at concurrency 1 against dataset size) and throughput_vs_concurrency.png
(for the largest dataset). Prints the table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import results

COLUMNS = (
    ("label", "{}"), ("system", "{}"), ("workload", "{}"), ("tier", "{}"), ("cache_tier", "{}"),
    ("versions", "{:,}"), ("concurrency", "{}"), ("rate", "{}"), ("batch_size", "{}"),
    ("p50_ms", "{:.3f}"), ("p99_ms", "{:.3f}"), ("p999_ms", "{:.3f}"),
    ("throughput_per_s", "{:,.0f}"), ("lookups_per_s", "{:,.0f}"), ("errors", "{}"),
    ("ceiling_ratio", "{:.2f}"), ("p50_vs_ceiling", "{:.2f}"), ("p99_vs_ceiling", "{:.2f}"),
)  # fmt: skip
LATENCY_WORKLOADS = ("resolve-alias", "get-by-number", "empty-rpc")


def load_rows(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of every lookup result file, each tagged with its file's label and time (a file
    another program wrote, such as artifacts.py's `"benchmark": "artifacts"`, is skipped)."""
    rows = []
    for path in sorted(paths):
        body = json.loads(path.read_text())
        if "rows" not in body or body.get("benchmark", "lookup") != "lookup":
            continue
        for row in body["rows"]:
            rows.append({**row, "label": body.get("label"), "time": body.get("time")})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(results.cell(r.get(n), f) for n, f in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _series(row: dict[str, Any]) -> str:
    """A plot line: system and workload, and the cache tier the server was configured for."""
    tier = f" [{row['tier']}]" if row.get("tier") else ""
    return f"{row['system']} {row['workload']}{tier}"


def plot_latency(rows: list[dict[str, Any]], path: Path) -> bool:
    """p50/p99/p99.9 at concurrency 1 against dataset size, one line per workload and stat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for r in rows:
        if r.get("concurrency") == 1 and r["workload"] in LATENCY_WORKLOADS:
            series[_series(r)].append((r["versions"], r))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        xs = [x for x, _ in points]
        for stat, style in (("p50_ms", "-o"), ("p99_ms", "--s"), ("p999_ms", ":^")):
            ax.plot(xs, [r[stat] for _, r in points], style, label=f"{name} {stat[:-3]}")
    ax.set(xscale="log", yscale="log", xlabel="versions in the registry", ylabel="latency (ms)")
    ax.set_title("Lookup latency at concurrency 1 vs dataset size")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_throughput(rows: list[dict[str, Any]], path: Path) -> bool:
    """Throughput against concurrency for the largest dataset, one line per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = [r for r in rows if r.get("concurrency") and not r.get("batch_size")]
    if not closed:
        return False
    biggest = max(r["versions"] for r in closed)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in closed:
        if r["versions"] == biggest:
            series[_series(r)].append((r["concurrency"], r["throughput_per_s"]))
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in sorted(series.items()):
        points.sort()
        ax.plot([c for c, _ in points], [t for _, t in points], "-o", label=name)
    ax.set(xscale="log", xlabel="concurrency (requests in flight)", ylabel="requests/s")
    ax.set_title(f"Throughput vs concurrency at {biggest:,} versions")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


TIER_ORDER = {None: 0, "l1": 1, "l2": 2, "postgres": 3}


def _order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Within a file: by tier, the ceiling first, then workload and load."""
    load = (row.get("batch_size") or 0, row.get("concurrency") or 0, row.get("rate") or 0)
    return (TIER_ORDER.get(row.get("tier"), 9), row["system"] != "empty", row["workload"], *load)


def latest_per_label(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only the newest file's rows for each label."""
    newest: dict[str, str] = {}
    for r in rows:
        label = r.get("label") or ""
        newest[label] = max(newest.get(label, ""), r.get("time") or "")
    return [r for r in rows if (r.get("time") or "") == newest[r.get("label") or ""]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="*", type=Path, help="result files; default results/*.json")
    p.add_argument("--out-dir", type=Path, default=results.RESULTS)
    args = p.parse_args(argv)
    files = args.files or sorted(results.RESULTS.glob("*.json"))
    rows = latest_per_label(load_rows(files))
    rows.sort(key=lambda r: (r["versions"], r.get("label") or "", _order(r)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (args.out_dir / "report.md").write_text(f"# Lookup benchmark results\n\n{table}\n")
    plots = {
        "latency_vs_size.png": plot_latency(rows, args.out_dir / "latency_vs_size.png"),
        "throughput_vs_concurrency.png": plot_throughput(
            rows, args.out_dir / "throughput_vs_concurrency.png"
        ),
    }
    print(table)
    print(json.dumps({"rows": len(rows), "files": len(files), "plots": plots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
