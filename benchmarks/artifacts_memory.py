"""artifacts.py's memory: a server's peak RSS (VmHWM) at idle, after the upload and at the
end, reset between the upload and the downloads, and how peak over idle grew with the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from artifacts_systems import System


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far (or since its reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def note_rss(system: System, moment: str, *, reset: bool = False) -> None:
    """Note a modelreg or raw server's VmHWM; `reset` then sets it back to the current RSS
    (Linux 4.0+), so the next note is the peak of what came in between."""
    if system.kind == "direct" or system.pid is None:
        return
    system.rss[moment] = peak_rss_mib(system.pid)
    if reset:
        try:
            Path(f"/proc/{system.pid}/clear_refs").write_text("5")
        except OSError:  # not allowed here: the next note is the peak since the start
            return
        system.rss_reset = True


def memory(system: System) -> dict[str, float | None]:
    """Peak RSS over the whole run, and over idle: in all, in the upload, in the downloads."""
    rss = system.rss
    if "end" not in rss:
        return {}
    peak, idle = max(rss["upload"], rss["end"]), rss["idle"]
    download = round(rss["end"] - idle, 1) if system.rss_reset else None
    return {
        "server_idle_rss_mib": round(idle, 1),
        "server_peak_rss_mib": round(peak, 1),
        "server_peak_over_idle_mib": round(peak - idle, 1),
        "server_upload_peak_over_idle_mib": round(rss["upload"] - idle, 1),
        "server_download_peak_over_idle_mib": download,
    }


def memory_growth(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per modelreg store: how peak over idle RSS grew from the smallest size to the largest,
    in all and in each phase."""
    growth: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["system"] for r in rows if r["system"].startswith("modelreg")):
        mine = sorted((r for r in rows if r["system"] == name), key=lambda r: r["size_mib"])
        small, large = mine[0], mine[-1]
        growth[name] = {
            "from_size_mib": small["size_mib"],
            "to_size_mib": large["size_mib"],
            "peak_over_idle_mib": [
                small["server_peak_over_idle_mib"],
                large["server_peak_over_idle_mib"],
            ],
        } | {
            f"{phase}growth_mib": _grew(small, large, f"server_{phase}peak_over_idle_mib")
            for phase in ("", "upload_", "download_")
        }
    return growth


def _grew(small: dict[str, Any], large: dict[str, Any], key: str) -> float | None:
    if small[key] is None or large[key] is None:
        return None
    return round(float(large[key] - small[key]), 1)


def print_growth(growth: dict[str, dict[str, Any]]) -> None:
    """One line per modelreg store: peak over idle at the smallest and the largest size."""
    for name, g in growth.items():
        (small, large), ratio = g["peak_over_idle_mib"], g["to_size_mib"] / g["from_size_mib"]
        print(
            f"{name}: peak over idle RSS {small} MiB at {g['from_size_mib']} MiB, {large} MiB "
            f"at {g['to_size_mib']} MiB: {g['growth_mib']:+} MiB for a {ratio:g}x larger file "
            f"(upload peak {_signed(g['upload_growth_mib'])}, "
            f"download peak {_signed(g['download_growth_mib'])})"
        )


def _signed(mib: float | None) -> str:
    return "unknown" if mib is None else f"{mib:+} MiB"
