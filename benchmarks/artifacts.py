"""Artifact throughput: upload and download MB/s of one file through a real `modelreg serve`,
on the filesystem store and on S3 (moto's server, or --s3-endpoint-url), next to two
ceilings measured in the same rounds: a raw grpc.aio stream of the same bytes, and the same
S3 object read straight from the endpoint with aioboto3. With the servers' peak RSS per size.

    PYTHONPATH=src .venv/bin/python benchmarks/artifacts.py --size-mib 128,1024 --repeat 5

For each size, fresh processes start and are all up together: the raw server, moto, one
`modelreg serve` per store. The file is uploaded once to each, streamed from disk in 256 KiB
messages: one upload MB/s each, set against the raw upload (a single sample, so that ratio
is only as steady as the machine). Then --warmup rounds, not counted, and --repeat rounds,
each downloading the file once from every system in turn: raw grpc, modelreg fs, modelreg
s3, s3 endpoint direct. The client checks the sha256 of every download but the raw one,
hashing on the event loop; modelreg's are read through the SDK's `AsyncClient.download_file`,
the direct one is aioboto3's get_object with no gRPC and no modelreg: the ceiling of the S3
endpoint itself on this machine (moto is a Python server on the same cores).

Per system: the best and the median download MB/s. `med/ceil` is the median over rounds of
(the system's MB/s / the raw MB/s of the same round): on a noisy machine only numbers taken
seconds apart compare, not runs minutes apart. `best/best` is the best over the best raw.
The s3 row is also set against the direct read (`s3/direct`; best over best in the JSON).
CPU seconds per GiB of the server (moto for the direct row), this client and the S3 endpoint
behind modelreg s3 (when started here) are of each system's median round (the lower middle
for an even --repeat). `sdk pull` is one `AsyncClient.pull` after the rounds: download,
sha256, write, fsync, rename.

Peak RSS is a server's VmHWM over the run; `peak-idle` subtracts its VmHWM once up, before
the first upload. VmHWM is reset after the uploads (/proc/<pid>/clear_refs), so the JSON has
the upload's and the downloads' peaks apart. With several sizes, a line per modelreg store
says how peak-idle grew from the smallest size to the largest: the memory an upload or a
download holds should not grow with the file. Prints a table per size, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys

import results
from artifacts_ceilings import raw_server
from artifacts_memory import memory_growth, print_growth
from artifacts_report import LEGEND, print_table
from artifacts_rounds import measure
from artifacts_systems import CHUNK, MiB

STORES = ("fs", "s3")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes are positive whole MiB, like 128,1024: {text}")
    return sizes


def _stores(text: str) -> list[str]:
    stores = text.split(",")
    if not stores or any(store not in STORES for store in stores):
        raise argparse.ArgumentTypeError(f"stores are fs and s3: {text}")
    return stores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-mib", type=_sizes, default=[1024], help="file sizes, comma-separated (1024)"
    )
    parser.add_argument("--stores", type=_stores, default=list(STORES), help="fs,s3 (both)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of one download from each system (5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="rounds first, not counted: connections, caches (1)"
    )
    parser.add_argument("--s3-endpoint-url", default="", help="S3 endpoint; unset = start moto")
    parser.add_argument("--raw-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1, --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    if args.raw_server:
        asyncio.run(raw_server(args.raw_server, args.size_mib[0] * MiB))
        return
    load_start, rows = os.getloadavg(), []
    for size_mib in args.size_mib:
        measured = measure(size_mib, args)
        print_table(size_mib, args, measured)
        rows += measured
    print(LEGEND)
    growth = memory_growth(rows) if len(set(args.size_mib)) > 1 else {}
    print_growth(growth)
    load_end = os.getloadavg()
    print(f"load average: {_load(load_start)} at start, {_load(load_end)} at end, "
          f"on {os.cpu_count()} cores")  # fmt: skip
    result = {
        "benchmark": "artifacts",
        "sizes_mib": args.size_mib,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "chunk": CHUNK,
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "commit": results.git_commit(short=True),
        "command": shlex.join(sys.argv),
        "rows": rows,
        "memory_growth": growth,
    }
    print(json.dumps(result))


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
