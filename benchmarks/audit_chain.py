"""What the audit chain (migration 0013) adds to a mutation, in one run.

Each mutation is what the store does for a real one: a transaction that updates one
model row, appends one event with a ~0.5 KiB snapshot and ends with the change log's
stamp (PostgresStore.transaction). --clients of them run at once for --seconds per
round, rounds alternating between the stamps below on the same database, so machine
load falls on all of them alike:

- 0007: the stamp of migration 0007 (revision only), without 0013's triggers and
  ListEvents indexes: the registry before the audit log;
- chain: migration 0013 as shipped (the previous hash read by one backward index step,
  the append-only trigger, the three ListEvents indexes);
- head: 0013 with the previous hash kept in a one-row head table instead (the
  alternative the migration's comment names);
- no-trigger, no-index: 0013 without its append-only UPDATE trigger, or without its
  three ListEvents indexes, to show what each part costs.

After each round, --stamps single-event inserts and stamps on one connection are timed
and rolled back: with no commit flush and no lock wait, `stamp µs` is the database work
per mutation (the lowest median over the rounds), `+ µs` what the stamp adds over 0007.

Prints a table and one JSON line (mutations/s and latency p50/p99 per stamp).

    PYTHONPATH=src .venv/bin/python benchmarks/audit_chain.py
    PYTHONPATH=src .venv/bin/python benchmarks/audit_chain.py --clients 16 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey
from modelreg.embedded import start_postgres
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool

MIGRATIONS = Path(__file__).resolve().parent.parent / "src" / "modelreg" / "store" / "migrations"
_INDEXES = ("events_ns_revision", "events_model_revision", "events_actor_revision")
_INDEX_SQL = """
CREATE INDEX events_ns_revision ON events (ns, revision, event_id) WHERE revision IS NOT NULL;
CREATE INDEX events_model_revision ON events (model_id, revision, event_id)
    WHERE revision IS NOT NULL;
CREATE INDEX events_actor_revision ON events (actor, revision, event_id)
    WHERE revision IS NOT NULL;
"""
_HEAD_STAMP = """
CREATE TABLE IF NOT EXISTS bench_chain_head (one boolean PRIMARY KEY, hash bytea NOT NULL);
INSERT INTO bench_chain_head SELECT true, coalesce(
    (SELECT hash FROM events WHERE revision IS NOT NULL ORDER BY revision DESC, event_id DESC
     LIMIT 1), modelreg_chain_genesis())
ON CONFLICT (one) DO UPDATE SET hash = excluded.hash;
CREATE OR REPLACE FUNCTION modelreg_stamp_revision(moved boolean[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    stamped bigint := 0;
    rev bigint;
    previous bytea;
    r events;
BEGIN
    PERFORM pg_advisory_xact_lock(7885631859322548071);
    rev := nextval('event_revisions');
    SELECT hash INTO previous FROM bench_chain_head WHERE one;
    FOR r IN
        SELECT * FROM events WHERE revision IS NULL AND xmin = pg_current_xact_id()::xid
        ORDER BY event_id
    LOOP
        stamped := stamped + 1;
        r.revision := rev;
        r.latest_moved := moved[stamped];
        UPDATE events
        SET revision = rev, latest_moved = r.latest_moved, prev_hash = previous,
            hash = modelreg_event_hash(previous, r)
        WHERE event_id = r.event_id
        RETURNING hash INTO previous;
    END LOOP;
    UPDATE bench_chain_head SET hash = previous WHERE one;
    PERFORM pg_notify('modelreg_changes', rev::text);
    RETURN rev;
END
$$;
"""
_TRIGGER_SQL = """
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION modelreg_events_append_only();
"""


def _stamp_of(migration: str) -> str:
    """The CREATE [OR REPLACE] FUNCTION modelreg_stamp_revision statement of a migration."""
    text = (MIGRATIONS / migration).read_text()
    start = text.rindex("CREATE", 0, text.index("FUNCTION modelreg_stamp_revision(moved"))
    end = text.index("$$;", start) + 3
    return text[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


async def use(conn: asyncpg.Connection, mode: str) -> None:
    """Switch the database to one stamp (see the module docstring)."""
    await conn.execute("DROP TRIGGER IF EXISTS events_no_update ON events")
    for index in _INDEXES:
        await conn.execute(f"DROP INDEX IF EXISTS {index}")
    if mode == "0007":
        await conn.execute(_stamp_of("0007_revisions.sql"))
        return
    await conn.execute(_HEAD_STAMP if mode == "head" else _stamp_of("0013_audit.sql"))
    if mode != "no-index":
        await conn.execute(_INDEX_SQL)
    if mode != "no-trigger":
        await conn.execute(_TRIGGER_SQL)


async def mutate(store: PostgresStore, model_id: int, n: int) -> None:
    """One mutation: a model row updated, one event, the stamp (in tx's commit)."""
    subject = AliasKey(ModelKey("bench", f"m{model_id}"), "production")
    after = {"alias": "production", "version": n, "labels": {"k": "v" * 400}, "updater": "bench"}
    async with store.transaction() as tx:
        await tx._conn.execute(
            "UPDATE models SET revision = revision + 1 WHERE model_id = $1", model_id
        )
        await tx.append_event(
            event=Event(EventKind.ALIAS_SET, subject, "bench", after=after, latest_moved=False)
        )


async def round_of(store: PostgresStore, models: list[int], seconds: float) -> list[float]:
    """--clients loops of mutations for `seconds`; every mutation's latency."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client(model_id: int) -> None:
        n = 0
        while time.monotonic() < stop:
            began = time.perf_counter()
            await mutate(store, model_id, n)
            latencies.append(time.perf_counter() - began)
            n += 1

    await asyncio.gather(*(client(m) for m in models))
    return latencies


async def stamp_cost(conn: asyncpg.Connection, model_id: int, count: int) -> float:
    """Median µs of one event's insert and stamp on one connection, rolled back (no
    commit flush, no lock wait: the database work the stamp adds, without the disk)."""
    after = json.dumps({"alias": "production", "labels": {"k": "v" * 400}})
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            "INSERT INTO events (model_id, ns, resource, kind, actor, after)"
            " VALUES ($1, 'bench', 'namespaces/bench/models/m1/aliases/production',"
            " 'alias.set', 'bench', $2::jsonb)",
            model_id,
            after,
        )
        await conn.fetchval("SELECT modelreg_stamp_revision(ARRAY[false])")
        samples.append(time.perf_counter() - began)
        await transaction.rollback()  # leave nothing behind
    return statistics.median(samples) * 1e6


async def run(args: argparse.Namespace, url: str) -> dict[str, dict[str, float]]:
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.execute(
        "INSERT INTO namespaces (ns) VALUES ('bench') ON CONFLICT DO NOTHING;"
        "INSERT INTO models (ns, name) SELECT 'bench', 'm' || g FROM generate_series(1, $1) g"
        " ON CONFLICT DO NOTHING".replace("$1", str(args.clients))
    )
    models = [
        r["model_id"]
        for r in await conn.fetch("SELECT model_id FROM models LIMIT $1", args.clients)
    ]
    pool = await create_pool(url, min_size=args.clients, max_size=args.clients)
    store = PostgresStore(pool)
    modes = ["0007", "chain", "head", "no-trigger", "no-index"]
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    elapsed: dict[str, float] = dict.fromkeys(modes, 0.0)
    costs: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        await use(conn, "chain")
        await round_of(store, models, 1.0)  # warm-up: caches, prepared statements
        for _ in range(args.rounds):
            for mode in modes:
                await use(conn, mode)
                await pool.expire_connections()  # no plan cached from another stamp
                results[mode] += await round_of(store, models, args.seconds)
                elapsed[mode] += args.seconds
                costs[mode].append(await stamp_cost(conn, models[0], args.stamps))
        await use(conn, "chain")  # leave the schema as migrated
        await conn.execute("DROP TABLE IF EXISTS bench_chain_head")
    finally:
        await pool.close()
        await conn.close()
    return {
        mode: {
            "mutations_per_s": round(len(results[mode]) / elapsed[mode], 1),
            "p50_ms": round(statistics.median(results[mode]) * 1000, 3),
            "p99_ms": round(statistics.quantiles(results[mode], n=100)[98] * 1000, 3),
            "stamp_us": round(min(costs[mode]), 1),
        }
        for mode in modes
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent mutations")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and stamp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--stamps", type=int, default=500, help="rolled-back stamps timed per round and stamp"
    )
    parser.add_argument("--postgres-url", help="an empty database (default: embedded, temporary)")
    args = parser.parse_args()
    directory = None
    if args.postgres_url:
        url = args.postgres_url
    else:
        directory = Path(tempfile.mkdtemp(prefix="modelreg-bench-audit-"))
        embedded = start_postgres(directory / "data", delete_on_stop=True)
        url = embedded.url
    try:
        table = asyncio.run(run(args, url))
    finally:
        if directory is not None:
            embedded.stop()
            shutil.rmtree(directory, ignore_errors=True)
    base = table["0007"]["mutations_per_s"]
    print(
        f"{'stamp':<12}{'mutations/s':>14}{'vs 0007':>10}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'stamp µs':>10}{'+ µs':>8}"
    )
    for mode, row in table.items():
        share = row["mutations_per_s"] / base - 1
        print(
            f"{mode:<12}{row['mutations_per_s']:>14}{share:>+10.1%}"
            f"{row['p50_ms']:>10}{row['p99_ms']:>10}{row['stamp_us']:>10}"
            f"{row['stamp_us'] - table['0007']['stamp_us']:>+8.0f}"
        )
    print(json.dumps({"benchmark": "audit_chain", "clients": args.clients, "results": table}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
