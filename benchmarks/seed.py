"""Fill a registry database with N versions over M models, in bulk, through the real schema.

    PYTHONPATH=src .venv/bin/python benchmarks/seed.py --versions 1000000 --models 10000

With no --postgres-url it starts an embedded PostgreSQL in benchmarks/.data/pg-<N>
and leaves it stopped afterwards (--keep-running leaves it up). Models are
`bench/m000001`...; a manifest with every model's version count is written to
benchmarks/.data/pg-<N>.json (or --manifest) for the load generator. Running it
again on a partial or smaller seed extends it (--resume); --fresh starts over.
--huge-model N adds one more model (m<M+1>) holding N versions, for the
"a model with 1,000,000 versions is as fast as one with 10" comparison.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

import dataset
import pg
from dataset import ALIASES, NAMESPACE, VERSION_COLUMNS, Manifest

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Range = tuple[int, int, int]  # (model_id, first number, last number)

_SECONDARY = {
    "model_versions_pkey": (
        "ALTER TABLE model_versions ADD CONSTRAINT model_versions_pkey "
        "PRIMARY KEY (model_id, number)"
    ),
    "model_versions_ready": (
        "CREATE INDEX model_versions_ready ON model_versions (model_id, number DESC) "
        "WHERE state = 2"
    ),
    # search (migration 0015)
    "model_versions_labels": (
        "CREATE INDEX model_versions_labels ON model_versions USING gin (labels)"
    ),
    "model_versions_params": (
        "CREATE INDEX model_versions_params ON model_versions USING gin (params jsonb_path_ops)"
    ),
    "model_versions_tags": "CREATE INDEX model_versions_tags ON model_versions USING gin (tags)",
    "model_versions_run_id": (
        "CREATE INDEX model_versions_run_id"
        " ON model_versions (run_id, create_time, model_id, number)"
    ),
    "model_versions_created": (
        "CREATE INDEX model_versions_created ON model_versions (create_time, model_id, number)"
    ),
    "model_versions_updated": (
        "CREATE INDEX model_versions_updated ON model_versions (update_time, model_id, number)"
    ),
    "model_versions_state_created": (
        "CREATE INDEX model_versions_state_created"
        " ON model_versions (state, create_time, model_id, number)"
    ),
}
_BUMP = """
UPDATE models AS m SET last_version = u.last
FROM unnest($1::bigint[], $2::bigint[]) AS u(id, last) WHERE m.model_id = u.id
"""


@dataclass
class SeedReport:
    """What one run did; printed as a table and one JSON line."""

    versions: int
    models: int
    inserted: int
    lineage_edges: int
    load_s: float
    index_s: float
    total_s: float
    rows_per_s: float
    manifest: str
    postgres_url: str


def short(n: int) -> str:
    """10000000 -> '10m', 2000 -> '2k' (used in data directory names)."""
    for unit, size in (("m", 1_000_000), ("k", 1_000)):
        if n % size == 0 and n >= size:
            return f"{n // size}{unit}"
    return str(n)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--versions", type=int, default=10_000_000, help="total versions (N)")
    p.add_argument("--models", type=int, default=None, help="models (M); default N/100")
    p.add_argument("--postgres-url", help="seed this database instead of an embedded one")
    p.add_argument("--data-dir", type=Path, help="embedded data dir; default .data/pg-<N>")
    p.add_argument("--manifest", type=Path, help="key manifest path; default <data-dir>.json")
    p.add_argument("--connections", type=int, default=3, help="parallel COPY connections")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per COPY transaction")
    p.add_argument("--seed", type=int, default=1, help="random seed of the version mix")
    p.add_argument("--huge-model", type=int, default=0, metavar="N",
                   help="add one model (m<M+1>) of N versions after the planned ones")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="extend/finish an existing seed")
    p.add_argument("--fresh", action="store_true", help="delete an existing seed first")
    p.add_argument("--keep-indexes", action="store_true", help="never drop indexes to load")
    p.add_argument("--keep-running", action="store_true", help="leave embedded Postgres up")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.models = args.models or max(1, args.versions // 100)
    args.data_dir = args.data_dir or pg.DATA / f"pg-{short(args.versions)}"
    args.manifest = args.manifest or args.data_dir.with_suffix(".json")
    return args


class Progress:
    """A one-line progress bar on stderr with rows/s and ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = self.last = time.monotonic()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.5 or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            bar = "#" * int(30 * self.done / max(self.total, 1))
            done = f"{self.done:>11,}/{self.total:,}"
            sys.stderr.write(f"\r[{bar:<30}] {done} {rate:>9,.0f} rows/s eta {eta:5.0f}s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def planned_counts(args: argparse.Namespace) -> list[int]:
    """Versions per model: the planned mix, then the --huge-model one if asked for."""
    counts = dataset.plan_counts(args.versions, args.models, args.seed)
    return [*counts, args.huge_model] if args.huge_model else counts


async def prepare(
    conn: asyncpg.Connection, args: argparse.Namespace, models: int
) -> dict[str, tuple[int, int]]:
    """Schema, namespace and model rows; returns model name -> (model_id, last_version)."""
    applied = await pg.apply_migrations(conn)
    if applied:
        print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
    await conn.execute(
        "INSERT INTO namespaces (ns, description) VALUES ($1, 'benchmark seed') "
        "ON CONFLICT DO NOTHING",
        NAMESPACE,
    )
    existing = await _models(conn)
    if existing and args.fresh:
        await _delete_seed(conn)
        existing = {}
    elif existing and not args.resume:
        total = sum(last for _, last in existing.values())
        raise SystemExit(
            f"found a seed of {total:,} versions over {len(existing):,} models in namespace "
            f"{NAMESPACE!r}: pass --resume to extend it or --fresh to replace it"
        )
    missing = [dataset.model_name(i) for i in range(1, models + 1)]
    missing = [name for name in missing if name not in existing]
    if missing:
        await conn.copy_records_to_table(
            "models", records=[(NAMESPACE, n, "bench model") for n in missing],
            columns=("ns", "name", "description"),
        )  # fmt: skip
    return await _models(conn)


async def _models(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT name, model_id, last_version FROM models WHERE ns = $1", NAMESPACE
    )
    return {r["name"]: (r["model_id"], r["last_version"]) for r in rows}


async def _delete_seed(conn: asyncpg.Connection) -> None:
    ids = "SELECT model_id FROM models WHERE ns = $1"
    async with conn.transaction():
        await conn.execute(f"DELETE FROM aliases WHERE model_id IN ({ids})", NAMESPACE)
        await conn.execute(f"DELETE FROM model_versions WHERE model_id IN ({ids})", NAMESPACE)
        await conn.execute("DELETE FROM models WHERE ns = $1", NAMESPACE)


def work_ranges(models: dict[str, tuple[int, int]], counts: list[int]) -> list[Range]:
    """Versions still to insert, per model: last_version+1 .. planned count."""
    ranges = []
    for index, planned in enumerate(counts, start=1):
        model_id, last = models[dataset.model_name(index)]
        if planned > last:
            ranges.append((model_id, last + 1, planned))
    return ranges


def chunked(ranges: list[Range], rows: int) -> Iterator[list[Range]]:
    """Groups of whole model ranges of about `rows` rows: a model is never split, so
    each committed chunk leaves every model's last_version equal to its highest row."""
    chunk: list[Range] = []
    size = 0
    for r in ranges:
        chunk.append(r)
        size += r[2] - r[1] + 1
        if size >= rows:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


async def load(
    url: str, chunks: list[list[Range]], args: argparse.Namespace, bar: Progress
) -> None:
    """COPY the chunks over several connections; each chunk commits with its last_version bump."""
    queue: asyncio.Queue[list[Range]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    await asyncio.gather(*(_loader(url, queue, bar) for _ in range(args.connections)))


async def _loader(url: str, queue: asyncio.Queue[list[Range]], bar: Progress) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        while not queue.empty():
            chunk = queue.get_nowait()
            async with conn.transaction():
                await conn.copy_to_table(
                    "model_versions",
                    source=_lines(chunk, bar),
                    columns=VERSION_COLUMNS,
                    format="text",
                )
                await conn.execute(_BUMP, [r[0] for r in chunk], [r[2] for r in chunk])
    finally:
        await conn.close()


async def _lines(chunk: list[Range], bar: Progress) -> AsyncIterator[bytes]:
    for model_id, first, last in chunk:
        # a giant model is cut into pieces so no single buffer grows past ~10k rows
        for start in range(first, last + 1, 10_000):
            end = min(start + 9_999, last)
            yield dataset.version_lines(model_id, start, end)
            bar.add(end - start + 1)


async def missing_indexes(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'model_versions'")
    present = {r["indexname"] for r in rows}
    return [name for name in _SECONDARY if name not in present]


async def drop_indexes(conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE model_versions DROP CONSTRAINT IF EXISTS model_versions_pkey")
    for name in _SECONDARY:
        if name != "model_versions_pkey":
            await conn.execute(f"DROP INDEX IF EXISTS {name}")


async def build_indexes(url: str, names: list[str]) -> None:
    """Build the missing indexes, one connection each (they run in parallel)."""

    async def build(name: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET maintenance_work_mem = '1GB'")
            await conn.execute(_SECONDARY[name])
        finally:
            await conn.close()

    await asyncio.gather(*(build(name) for name in names))


async def set_aliases(conn: asyncpg.Connection, models: dict[str, tuple[int, int]]) -> None:
    """Point `production` and `staging` of every seeded model at READY versions."""
    ids = [model_id for model_id, _ in models.values()]
    rows = [
        (model_id, alias, number, "seed@bench")
        for model_id, last in models.values()
        for alias, number in dataset.alias_targets(last).items()
    ]
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM aliases WHERE model_id = ANY($1::bigint[]) AND alias = ANY($2::text[])",
            ids, list(ALIASES),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "aliases", records=rows, columns=("model_id", "alias", "number", "updater")
        )


async def set_lineage(conn: asyncpg.Connection, models: dict[str, tuple[int, int]]) -> int:
    """Lineage for the `dataset` search: every tenth version trained on one of
    dataset.DATASETS datasets (dataset.trained_on). Rebuilt whole each run (TRUNCATE: the
    append-only trigger guards rows, not the table); the edges' trigger fills
    version_datasets as they are copied. Returns the edges written."""
    datasets = [(i + 1, 2, *dataset.dataset_of(i)) for i in range(dataset.DATASETS)]
    versions: list[tuple[int, int, int]] = []
    edges: list[tuple[int, int, int, str]] = []
    next_id = dataset.DATASETS + 1
    for model_id, last in models.values():
        for number in range(1, last + 1, dataset.LINEAGE_EVERY):
            feeding = dataset.trained_on(model_id, number)
            if feeding is None:
                continue
            versions.append((next_id, model_id, number))
            edges.append((next_id, 4, feeding + 1, "seed@bench"))
            next_id += 1
    async with conn.transaction():
        await conn.execute("TRUNCATE lineage_edges, lineage_nodes, version_datasets")
        await conn.copy_records_to_table(
            "lineage_nodes", records=datasets, columns=("node_id", "kind", "identity", "uri")
        )
        await conn.copy_records_to_table(
            "lineage_nodes", records=[(i, 1, m, n) for i, m, n in versions],
            columns=("node_id", "kind", "model_id", "number"),
        )  # fmt: skip
        await conn.copy_records_to_table(
            "lineage_edges", records=edges, columns=("from_node", "kind", "to_node", "creator")
        )
        await conn.execute("SELECT setval('lineage_nodes_node_id_seq', $1)", next_id)
    await conn.execute("ANALYZE lineage_nodes; ANALYZE lineage_edges")
    return len(edges)


async def seed(args: argparse.Namespace, url: str) -> SeedReport:
    """Bring the database to the planned seed; return what was done."""
    started = time.monotonic()
    counts = planned_counts(args)
    conn = await asyncpg.connect(url)
    try:
        models = await prepare(conn, args, len(counts))
        ranges = work_ranges(models, counts)
        todo = sum(last - first + 1 for _, first, last in ranges)
        existing = sum(last for _, last in models.values())
        drop = not args.keep_indexes and todo > max(200_000, existing // 5)
        if drop:
            await drop_indexes(conn)
        bar = Progress(todo, enabled=not args.quiet)
        load_start = time.monotonic()
        await load(url, list(chunked(ranges, args.chunk_rows)), args, bar)
        bar.close()
        load_s = time.monotonic() - load_start
        index_start = time.monotonic()
        await build_indexes(url, await missing_indexes(conn))
        index_s = time.monotonic() - index_start
        models = await _models(conn)
        await set_aliases(conn, models)
        lineage_edges = await set_lineage(conn, models)
        await conn.execute("ANALYZE models; ANALYZE model_versions; ANALYZE aliases")
        await conn.execute("CHECKPOINT")  # recycles the load's WAL (GBs) before we stop
    finally:
        await conn.close()
    final = [models[dataset.model_name(i)][1] for i in range(1, len(counts) + 1)]
    Manifest(NAMESPACE, final).write(args.manifest)
    total_s = time.monotonic() - started
    return SeedReport(
        versions=sum(final), models=len(final), inserted=todo, lineage_edges=lineage_edges,
        load_s=round(load_s, 2),
        index_s=round(index_s, 2), total_s=round(total_s, 2),
        rows_per_s=round(todo / total_s, 1), manifest=str(args.manifest), postgres_url=url,
    )  # fmt: skip


def print_report(report: DataclassInstance) -> None:
    """A seed report (this one's or mlflow_seed's) as a table, then one JSON line."""
    for key, value in asdict(report).items():
        shown = f"{value:,}" if isinstance(value, int | float) else value
        print(f"{key:<14} {shown}")
    print(json.dumps({"seed": asdict(report)}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    if args.postgres_url:
        url = args.postgres_url
    else:
        server = pg.start_embedded(args.data_dir, keep_running=args.keep_running)
        url = server.get_uri()
    print_report(asyncio.run(seed(args, url)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
