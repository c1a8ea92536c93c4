"""Reproduce the headline table from nothing: seed every size, measure, report.

    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py              # ~20 min on 2 cores
    PYTHONPATH=src .venv/bin/python benchmarks/run_all.py --sizes 10000,1000000 --duration 3

Seeds benchmarks/.data/pg-<N> (an existing seed is reused or extended), then for
each size starts the embedded Postgres and `modelreg serve`, measures the
empty-RPC ceiling, resolve-alias and get-by-number at concurrency 1, 8 and 64
(label headline-<N>); at the largest size also batch-get (label extra-<N>), the
mix closed and open loop (label mix-<N>), and each cache tier (l1, l2, postgres; label
cache-<N>; the largest seed gets one extra model of 1,000,000 versions for the
big-model/small-model comparison). Finishes with report.py. Every step is a
subprocess with a time limit; the run stops at the first failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from seed import short

HERE = Path(__file__).resolve().parent
STEP_TIMEOUT_S = 900
# the cache tiers at the largest size: L1 hits, L2 (Redis) hits, PostgreSQL, each next to
# the ceiling measured just before it; and the biggest model against one of ten versions
CACHE = ("--tier", "l1,l2,postgres", "--batch-size", "100",
         "--workloads", "resolve-alias,get-by-number,batch-get,big-model,small-model")  # fmt: skip


def step(script: str, *args: str) -> None:
    """Run one benchmark program, streaming its output; raise on failure."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=STEP_TIMEOUT_S, env=os.environ.copy())
    print(f"({time.monotonic() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,1000000,10000000", help="versions, comma list")
    p.add_argument("--duration", default="8", help="measured seconds per row")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--rate", default="200,500", help="open-loop rates at the largest size")
    p.add_argument("--saturate", default="64", help="the cache run's saturating concurrency")
    p.add_argument("--huge-model", default="1000000",
                   help="versions of the one extra model seeded at the largest size")  # fmt: skip
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    for n in sizes:
        huge = ["--huge-model", args.huge_model] if n == max(sizes) else []
        step("seed.py", "--versions", str(n), "--resume", *huge)
    common = ["--start", "--duration", args.duration, "--warmup", "2"]
    lookups = ["--workloads", "resolve-alias,get-by-number", "--concurrency", args.concurrency]
    for n in sizes:
        step(
            "lookup.py", *common, *lookups, "--versions", str(n), "--label", f"headline-{short(n)}"
        )
    biggest = max(sizes)
    # Open-loop rates are for single lookups (the mix): a batch of 100 cold lookups at
    # 200 calls/s is 20,000 lookups/s, past what one worker's Postgres path can serve.
    batch = ["--workloads", "batch-get", "--batch-size", "100", "--concurrency", "64"]
    step("lookup.py", *common, *batch, "--versions", str(biggest),
         "--label", f"extra-{short(biggest)}")  # fmt: skip
    mix = ["--workloads", "mix", "--concurrency", "64", "--rate", args.rate]
    step("lookup.py", *common, *mix, "--versions", str(biggest),
         "--label", f"mix-{short(biggest)}")  # fmt: skip
    step("lookup.py", *common, *CACHE, "--concurrency", f"1,{args.saturate}",
         "--versions", str(biggest), "--label", f"cache-{short(biggest)}")  # fmt: skip
    step("report.py")
    print(f"\nrun_all finished in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
