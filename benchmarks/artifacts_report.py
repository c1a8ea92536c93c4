"""artifacts.py's rows: a system's speeds, CPU and memory with its ratios to the ceilings
measured in the same rounds, and the table printed per size."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from artifacts_memory import memory
from artifacts_systems import System

COLUMNS = {
    "up MB/s": "upload_mb_s",
    "down best": "download_best_mb_s",
    "down med": "download_median_mb_s",
    "med/ceil": "download_vs_ceiling",
    "best/best": "download_best_vs_ceiling_best",
    "s3/direct": "download_vs_s3_direct",
    "srv s/GiB": "download_server_cpu_s_per_gib",
    "cli s/GiB": "download_client_cpu_s_per_gib",
    "s3 s/GiB": "download_s3_endpoint_cpu_s_per_gib",
    "pull MB/s": "sdk_pull_mb_s",
    "peak MiB": "server_peak_rss_mib",
    "peak-idle": "server_peak_over_idle_mib",
}
LEGEND = (
    "MB/s: best and median of the rounds; med/ceil, s3/direct: median over rounds of the ratio\n"
    "within a round; best/best: best over best raw; s/GiB: CPU of the server, this client and\n"
    "the S3 endpoint in the median round; peak, peak-idle: server VmHWM, less its idle VmHWM"
)


def row(system: System, size_mib: int, raw: System, direct: System | None) -> dict[str, Any]:
    """One system's result row at one size."""
    speeds = [s.mb_s for s in system.samples]
    middle = sorted(system.samples, key=lambda s: s.mb_s)[(len(speeds) - 1) // 2]
    out: dict[str, Any] = {
        "system": system.name,
        "size_mib": size_mib,
        "upload_mb_s": _rounded(system.upload_mb_s, 1),
        "download_best_mb_s": round(max(speeds), 1),
        "download_median_mb_s": round(statistics.median(speeds), 1),
        "download_mb_s_rounds": [round(x, 1) for x in speeds],
        "download_server_cpu_s_per_gib": _rounded(middle.server_cpu, 2),
        "download_client_cpu_s_per_gib": round(middle.client_cpu, 2),
        "download_s3_endpoint_cpu_s_per_gib": _rounded(middle.endpoint_cpu, 2),
    }
    if system is not raw:
        out |= _versus(system, raw, "ceiling")
    if system.upload_mb_s is not None and system is not raw:
        out["upload_vs_ceiling"] = round(system.upload_mb_s / (raw.upload_mb_s or 1), 2)
    if system.name == "modelreg s3" and direct is not None:
        out |= _versus(system, direct, "s3_direct")
    if system.pull_mb_s is not None:
        out["sdk_pull_mb_s"] = round(system.pull_mb_s, 1)
    return out | memory(system)


def _versus(system: System, base: System, label: str) -> dict[str, float]:
    """The median over rounds of the ratio within each round, and best over best."""
    pairs = zip(system.samples, base.samples, strict=True)
    best = max(s.mb_s for s in system.samples) / max(s.mb_s for s in base.samples)
    return {
        f"download_vs_{label}": round(statistics.median(s.mb_s / b.mb_s for s, b in pairs), 2),
        f"download_best_vs_{label}_best": round(best, 2),
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def print_table(size_mib: int, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The rows of one size, one line per system, blank where a row has no value."""
    print(f"\n{size_mib} MiB: {args.repeat} rounds after {args.warmup} warm-up")
    print(f"{'system':<20}" + "".join(f"{title:>11}" for title in COLUMNS))
    for r in rows:
        cells = (r.get(key) for key in COLUMNS.values())
        print(f"{r['system']:<20}" + "".join(f"{'' if c is None else c:>11}" for c in cells))
