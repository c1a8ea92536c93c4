"""Fill MLflow's own model-registry tables with the shape of data seed.py gives modelreg.

    PYTHONPATH=src .venv/bin/python benchmarks/mlflow_seed.py --versions 1000000

Needs MLflow's schema in the database first (`mlflow db upgrade`; mlflow_bench.py
runs it). Same model names (`m000001`...), the same version counts
(dataset.plan_counts with the same N, M and seed), `production`/`staging` aliases
on the same numbers, states mapped to MLflow's (READY, PENDING_REGISTRATION,
FAILED_REGISTRATION; ARCHIVED is stage `Archived`). Version tags, labels and the
lineage-shaped fields MLflow has no column for (framework, code_commit) become
`model_version_tags` rows; metrics and params live on runs in MLflow, so they are
not seeded. Rows go as COPY text over several connections, whole models per
transaction. Without --postgres-url it uses the `mlflow` database of the embedded
PostgreSQL in benchmarks/.data/pg-<N> (the one modelreg's seed of N lives in).
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

import dataset
import pg
from dataset import ARCHIVED, FAILED, PENDING, Manifest, model_name
from seed import Progress, Range, chunked, print_report, short

WORKSPACE = "default"
TABLES = (
    "registered_model_aliases", "model_version_tags", "model_versions",
    "registered_model_tags", "registered_models",
)  # fmt: skip
VERSION_COLUMNS = (
    "workspace", "name", "version", "creation_time", "last_updated_time", "description",
    "user_id", "current_stage", "source", "run_id", "status", "status_message", "run_link",
    "storage_location",
)  # fmt: skip
TAG_COLUMNS = ("workspace", "key", "value", "name", "version")
_STATUS = {PENDING: "PENDING_REGISTRATION", FAILED: "FAILED_REGISTRATION"}
_EPOCH_MS = 1_735_689_600_000  # 2025-01-01, dataset's epoch
_TAG_KEYS = [tuple(t.strip("{}").split(",")) if t != "{}" else () for t in dataset._TAGS]
# modelreg's labels are MLflow version tags (what `modelreg import mlflow` maps back)
_LABEL_TAGS = [tuple(json.loads(labels).items()) for labels in dataset._LABELS]
_FRAMEWORKS = [f"{name} {version}" for name, version in dataset._FRAMEWORKS]
_HEX = dataset._HEX
MLFLOW_PYTHON = pg.DATA / "mlflow-venv" / "bin" / "python"


@dataclass
class MlflowSeedReport:
    """What one run did; printed as a table and one JSON line."""

    versions: int
    models: int
    version_rows: int
    tag_rows: int
    alias_rows: int
    load_s: float
    total_s: float
    rows_per_s: float
    manifest: str
    skipped: bool


def sqlalchemy_url(postgres_url: str) -> str:
    """The URL MLflow (SQLAlchemy 2.1 defaults postgresql:// to psycopg 3) should use."""
    return postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)


def version_lines(
    index: int, first: int, last: int, workspace: bool = True
) -> tuple[bytes, bytes, int]:
    """COPY text rows of `model_versions` and `model_version_tags` for numbers first..last
    of the index-th model; returns (versions, tags, tag row count). `workspace`: the
    schema has MLflow's workspace columns (newer 3.x), always first in *_COLUMNS."""
    ws = f"{WORKSPACE}\t" if workspace else ""
    name = model_name(index)
    framework = _FRAMEWORKS[index & 3]
    versions, tags = [], []
    for n in range(first, last + 1):
        k = index * 31 + n
        state = dataset.state_of(n)
        stamp = _EPOCH_MS + (n & 4095) * 60_000
        stage = "Archived" if state == ARCHIVED else "None"
        versions.append(
            f"{ws}{name}\t{n}\t{stamp}\t{stamp}\t\t{dataset._CREATORS[k & 3]}\t"
            f"{stage}\ts3://bench/{name}/{n}\t{_HEX[k & 1023][:32]}\t"
            f"{_STATUS.get(state, 'READY')}\t\\N\t\\N\t\\N\n"
        )
        row_tags = [(key, "") for key in _TAG_KEYS[k % 6]] + list(_LABEL_TAGS[k % 48])
        row_tags += [("framework", framework), ("code_commit", _HEX[(k >> 3) & 1023][:40])]
        tags += [f"{ws}{key}\t{value}\t{name}\t{n}\n" for key, value in row_tags]
    return "".join(versions).encode(), "".join(tags).encode(), len(tags)


async def has_workspaces(conn: asyncpg.Connection) -> bool:
    """Whether MLflow's schema has the workspace columns (added during MLflow 3.x)."""
    found = await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'model_versions' AND column_name = 'workspace'"
    )
    return bool(found)


def _cols(columns: tuple[str, ...], workspace: bool) -> tuple[str, ...]:
    return columns if workspace else columns[1:]


async def existing(conn: asyncpg.Connection) -> tuple[int, int]:
    """(registered models, model versions) already in the database."""
    models = await conn.fetchval("SELECT count(*) FROM registered_models")
    versions = await conn.fetchval("SELECT count(*) FROM model_versions")
    return int(models), int(versions)


async def truncate(conn: asyncpg.Connection) -> None:
    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")


async def _loader(
    url: str, queue: asyncio.Queue[list[Range]], bar: Progress, tag_rows: list[int], ws: bool
) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        while not queue.empty():
            chunk = queue.get_nowait()
            tags: list[bytes] = []

            async def versions(
                chunk: list[Range] = chunk, tags: list[bytes] = tags
            ) -> AsyncIterator[bytes]:
                for index, first, last in chunk:
                    for start in range(first, last + 1, 10_000):
                        end = min(start + 9_999, last)
                        rows, tag_lines, n_tags = version_lines(index, start, end, ws)
                        tags.append(tag_lines)
                        tag_rows.append(n_tags)
                        bar.add(end - start + 1)
                        yield rows

            async with conn.transaction():
                await conn.copy_to_table(
                    "model_versions", source=versions(), columns=_cols(VERSION_COLUMNS, ws),
                    format="text",
                )  # fmt: skip
                await conn.copy_to_table(
                    "model_version_tags", source=_iterate(tags), columns=_cols(TAG_COLUMNS, ws),
                    format="text",
                )  # fmt: skip
    finally:
        await conn.close()


async def _iterate(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def seed(
    url: str, counts: list[int], *, connections: int = 3, chunk_rows: int = 50_000,
    fresh: bool = False, quiet: bool = False, manifest: Path,
) -> MlflowSeedReport:  # fmt: skip
    """Bring MLflow's registry tables to `counts` versions per model (or leave an equal seed)."""
    started = time.monotonic()
    total = sum(counts)
    conn = await asyncpg.connect(url)
    try:
        models, versions = await existing(conn)
        if (models, versions) == (len(counts), total) and not fresh:
            Manifest(dataset.NAMESPACE, counts).write(manifest)
            return MlflowSeedReport(total, len(counts), 0, 0, 0, 0.0, 0.0, 0.0, str(manifest), True)
        if models or versions:
            if not fresh:
                raise SystemExit(
                    f"MLflow database holds {versions:,} versions over {models:,} models, not "
                    f"the planned {total:,} over {len(counts):,}: pass --fresh to replace them"
                )
            await truncate(conn)
        ws = await has_workspaces(conn)
        now = _EPOCH_MS
        models_rows = [(WORKSPACE, model_name(i), now, now, "bench model")
                       for i in range(1, len(counts) + 1)]  # fmt: skip
        await conn.copy_records_to_table(
            "registered_models", records=[r if ws else r[1:] for r in models_rows],
            columns=_cols(("workspace", "name", "creation_time", "last_updated_time",
                           "description"), ws),
        )  # fmt: skip
        bar = Progress(total, enabled=not quiet)
        queue: asyncio.Queue[list[Range]] = asyncio.Queue()
        ranges = [(i, 1, count) for i, count in enumerate(counts, start=1)]
        for chunk in chunked(ranges, chunk_rows):
            queue.put_nowait(chunk)
        tag_rows: list[int] = []
        load_start = time.monotonic()
        await asyncio.gather(*(_loader(url, queue, bar, tag_rows, ws) for _ in range(connections)))
        bar.close()
        load_s = time.monotonic() - load_start
        aliases = [
            (WORKSPACE, alias, number, model_name(i))[0 if ws else 1 :]
            for i, count in enumerate(counts, start=1)
            for alias, number in dataset.alias_targets(count).items()
        ]
        await conn.copy_records_to_table(
            "registered_model_aliases", records=aliases,
            columns=_cols(("workspace", "alias", "version", "name"), ws),
        )  # fmt: skip
        await conn.execute("ANALYZE " + ", ".join(TABLES))
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    Manifest(dataset.NAMESPACE, counts).write(manifest)
    total_s = time.monotonic() - started
    rows = len(counts) + total + sum(tag_rows) + len(aliases)
    return MlflowSeedReport(
        versions=total, models=len(counts), version_rows=total, tag_rows=sum(tag_rows),
        alias_rows=len(aliases), load_s=round(load_s, 2), total_s=round(total_s, 2),
        rows_per_s=round(rows / total_s, 1), manifest=str(manifest), skipped=False,
    )  # fmt: skip


def add_seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--versions", type=int, default=1_000_000, help="total versions (N)")
    p.add_argument("--models", type=int, default=None, help="models (M); default N/100")
    p.add_argument("--seed", type=int, default=1, help="random seed of the version mix")
    p.add_argument("--data-dir", type=Path, help="embedded data dir; default .data/pg-<N>")
    p.add_argument("--postgres-url", help="an existing MLflow database instead (plain libpq URL)")
    p.add_argument("--manifest", type=Path, help="key manifest; default .data/mlflow-<N>.json")
    p.add_argument("--connections", type=int, default=3, help="parallel COPY connections")
    p.add_argument("--fresh", action="store_true", help="replace an existing MLflow seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--mlflow-python", type=Path, default=MLFLOW_PYTHON,
                   help="python of a venv with mlflow (not this one)")  # fmt: skip


def finish_seed_args(args: argparse.Namespace) -> None:
    args.models = args.models or max(1, args.versions // 100)
    args.data_dir = args.data_dir or pg.DATA / f"pg-{short(args.versions)}"
    args.manifest = args.manifest or pg.DATA / f"mlflow-{short(args.versions)}.json"


def mlflow_database_url(server: object) -> str:
    """Create the `mlflow` database on an embedded server if missing; return its URL."""
    listed = server.psql("SELECT 1 FROM pg_database WHERE datname = 'mlflow';")  # type: ignore[attr-defined]
    if "(1 row)" not in listed:
        server.psql("CREATE DATABASE mlflow;")  # type: ignore[attr-defined]
    uri: str = server.get_uri()  # type: ignore[attr-defined]
    return "postgresql://postgres@/mlflow?host=" + uri.split("host=", 1)[1]


def db_upgrade(mlflow_python: Path, postgres_url: str) -> None:
    """Create or upgrade MLflow's schema with MLflow's own migrations."""
    if not mlflow_python.exists():
        raise SystemExit(
            f"no {mlflow_python}: python3 -m venv {pg.DATA / 'mlflow-venv'} && "
            f"{pg.DATA / 'mlflow-venv'}/bin/pip install mlflow gunicorn psycopg2-binary"
        )
    cmd = [str(mlflow_python), "-m", "mlflow", "db", "upgrade", sqlalchemy_url(postgres_url)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mlflow db upgrade failed:\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_seed_args(p)
    args = p.parse_args(argv)
    finish_seed_args(args)
    server = None
    if args.postgres_url:
        url = args.postgres_url
    else:
        server = pg.start_embedded(args.data_dir)
        url = mlflow_database_url(server)
    try:
        db_upgrade(args.mlflow_python, url)
        counts = dataset.plan_counts(args.versions, args.models, args.seed)
        report = asyncio.run(
            seed(url, counts, connections=args.connections, fresh=args.fresh,
                 quiet=args.quiet, manifest=args.manifest)
        )  # fmt: skip
    finally:
        if server is not None:
            server.cleanup()
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
