"""Where a server's time goes: shares of py-spy samples by component.

    PYTHONPATH=src .venv/bin/python benchmarks/profile_share.py benchmarks/results/profile-*.txt

Reads py-spy `record --format raw --native` files (collapsed stacks, one
`frame;frame;... count` line each, as `lookup.py --profile-dir` writes them) and
attributes every sample to the component of its innermost recognised frame:
asyncpg, the Redis client, protobuf, our cache walk, our interceptor, our other
code, grpc (its Cython layer and C core; the wheel is stripped, so the two cannot
be told apart) and the event loop (uvloop/asyncio). Frames of the interpreter
and libc are skipped, so their time counts for the component that called them;
a sample whose innermost frame is epoll counts as idle. Prints a table per file and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# (component, substrings of a frame that belong to it); the first component that matches wins
COMPONENTS = (
    ("asyncpg", ("asyncpg",)),
    ("redis client", ("redis/", "hiredis")),
    ("protobuf", ("google/protobuf", "_upb", "upb_", "libprotobuf")),
    ("modelreg cache", ("modelreg/cache/",)),
    ("modelreg interceptor", ("modelreg/api/interceptors",)),
    ("modelreg encoding", ("modelreg/api/convert", "modelreg/api/wire", "modelreg/api/encod")),
    ("modelreg reference parsing", ("modelreg/domain/names",)),
    ("modelreg store (rows to objects)", ("modelreg/store/",)),
    ("modelreg other", ("modelreg/",)),
    ("grpc", ("grpc",)),
    ("event loop", ("uvloop", "loop.c", "core.c", "asyncio", "_asynciomodule", "selectors")),
)
OTHER = "other (interpreter, libc, startup)"
IDLE = "idle (event loop waiting in epoll)"


def component(frame: str) -> str | None:
    for name, needles in COMPONENTS:
        if any(n in frame for n in needles):
            return name
    return None


def parse(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per component, and per innermost recognised frame ("component: frame")."""
    shares: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if "epoll" in frames[-1]:  # py-spy --native keeps a thread blocked in epoll as a sample
            shares[IDLE] += int(count)
            continue
        for frame in reversed(frames):
            name = component(frame)
            if name is not None:
                shares[name] += int(count)
                leaves[f"{name}: {frame.split(' (')[0]}"] += int(count)
                break
        else:
            shares[OTHER] += int(count)
    return shares, leaves


def summary(path: Path, top: int) -> dict[str, object]:
    shares, leaves = parse(path)
    total = sum(shares.values()) or 1
    return {
        "file": path.name,
        "samples": sum(shares.values()),
        "shares": {k: round(v / total, 3) for k, v in shares.most_common()},
        "top": {k: round(v / total, 3) for k, v in leaves.most_common(top)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="py-spy raw files")
    p.add_argument("--top", type=int, default=8, help="innermost frames to list")
    args = p.parse_args(argv)
    out = [summary(path, args.top) for path in args.files]
    for s in out:
        print(f"{s['file']} ({s['samples']} samples)")
        for name, share in s["shares"].items():  # type: ignore[attr-defined]
            print(f"  {share:6.1%}  {name}")
        print("  top frames:")
        for name, share in s["top"].items():  # type: ignore[attr-defined]
            print(f"  {share:6.1%}  {name}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
