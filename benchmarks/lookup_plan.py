"""What lookup.py measures: the runs of one tier (ceiling first, then each workload at each
load) and how a run's load is split over the client processes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from dataset import Manifest
from loadgen import ONE_MODEL, ClientSpec

CEILING = "empty-rpc"
CEILING_BATCH = "empty-batch"  # the empty server's batch-get: a pre-serialized batch of that size
TIERS = ("l1", "l2", "postgres")
HOT_KEYS = 10_000  # default hot set of the l1 and l2 tiers (fits L1's default 100k entries)
L1_TTL = 600.0  # the l1 tier's L1 TTL: long enough that the measured window is all hits


@dataclass(frozen=True)
class Run:
    """One measurement to take."""

    system: str  # modelreg | empty
    workload: str
    target: str
    concurrency: int | None = None
    rate: float | None = None
    batch_size: int | None = None
    tier: str | None = None  # the server configuration (--tier), None = as started/targeted
    model: int | None = None  # the one model of big-model / small-model
    auth: str | None = None  # the server's MODELREG_AUTH (--auth), None = as targeted


def ints(text: str) -> list[int]:
    """The numbers of a comma list ('' is none)."""
    return [int(x) for x in text.split(",") if x]


def hot_keys(args: argparse.Namespace, tier: str | None) -> int:
    """The hot set size of a tier: the caches can only be measured on keys they hold."""
    if args.hot_keys is not None:
        return int(args.hot_keys)
    return HOT_KEYS if tier in ("l1", "l2") and not args.strong else 0


def one_models(manifest: Manifest) -> dict[str, int]:
    """Indexes of the model with the most versions and of one with ten (or the closest)."""
    counts = manifest.counts
    big = max(range(len(counts)), key=counts.__getitem__)
    small = min(range(len(counts)), key=lambda i: (abs(counts[i] - 10), i))
    return {"big-model": big, "small-model": small}


def plan(
    args: argparse.Namespace,
    targets: dict[str, str],
    tier: str | None = None,
    manifest: Manifest | None = None,
    auth: str | None = None,
) -> list[Run]:
    """One tier's measurements: the ceiling first (the empty batch too if batch-get is
    measured), then each workload."""
    loads: list[tuple[int | None, float | None]] = [(c, None) for c in ints(args.concurrency)]
    loads += [(None, float(r)) for r in args.rate.split(",") if r]
    models = one_models(manifest) if manifest is not None else {}
    runs = []
    if "empty" in targets:
        runs += [Run("empty", CEILING, targets["empty"], c, r, tier=tier, auth=auth)
                 for c, r in loads]  # fmt: skip
        if "batch-get" in args.workloads and "modelreg" in targets:
            runs += [Run("empty", CEILING_BATCH, targets["empty"], c, r, b, tier=tier, auth=auth)
                     for b in ints(args.batch_size) for c, r in loads]  # fmt: skip
    for w in args.workloads if "modelreg" in targets else []:
        sizes: list[int | None] = list(ints(args.batch_size)) if w == "batch-get" else [None]
        model = models.get(w) if w in ONE_MODEL else None
        runs += [Run("modelreg", w, targets["modelreg"], c, r, b, tier, model, auth)
                 for b in sizes for c, r in loads]  # fmt: skip
    return runs


def client_specs(run: Run, args: argparse.Namespace) -> list[ClientSpec]:
    """Split a run's concurrency or rate over the client processes."""
    base = ClientSpec(
        target=run.target, workload=run.workload, manifest_path=str(args.manifest),
        keys=args.keys, zipf_s=args.zipf_s, duration=args.duration, warmup=args.warmup,
        batch_size=run.batch_size or 1, page_size=args.page_size, strong=args.strong,
        hot_keys=hot_keys(args, run.tier) if run.system == "modelreg" else 0, model=run.model,
    )  # fmt: skip
    if run.rate:
        n = args.processes
        return [replace(base, rate=run.rate / n, seed=i) for i in range(n)]
    c = run.concurrency or 1
    n = min(args.processes, c)
    return [replace(base, concurrency=c // n + (i < c % n), seed=i) for i in range(n)]
