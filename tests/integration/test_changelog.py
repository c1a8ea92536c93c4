"""The change log is commit-ordered: readers by keyset and pushed followers end with
exactly the committed transactions, in commit order, whatever order they took their ids
in, however long some stayed open, and whether or not the listener was lost meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import pytest

from modelreg.domain.changelog import Change, Follower
from modelreg.domain.names import ModelKey
from modelreg.store.changelog import PostgresChangeLog
from modelreg.store.listener import APPLICATION_NAME, PostgresChangeListener
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool
from tests.conftest import DatabaseFactory
from tests.integration.writers import Rollback, Writer, write

MODEL = ModelKey("team", "resnet")
WRITERS_PER_ROUND = 10


@dataclass
class Log:
    """A migrated database of its own, a pool and the change log on it."""

    url: str
    server_url: str  # the server's own database, to close this one to new connections
    pool: asyncpg.Pool
    store: PostgresStore
    changes: PostgresChangeLog


@pytest.fixture
async def log(new_database: DatabaseFactory) -> AsyncIterator[Log]:
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    # every connection open from the start, so a database closed to new ones still writes
    pool = await create_pool(url, min_size=WRITERS_PER_ROUND + 2, max_size=WRITERS_PER_ROUND + 2)
    yield Log(url, new_database.server_url, pool, PostgresStore(pool), PostgresChangeLog(pool))
    await pool.close()


class Collected:
    """A follower's `apply`: keeps every change it is given."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    async def __call__(self, changes: Sequence[Change]) -> None:
        self.changes += changes


async def _stamped_then_rolled_back(pool: asyncpg.Pool) -> None:
    """A transaction that took its revision and then failed to commit: a hole."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO events (ns, resource, kind, actor, after)"
                    " VALUES ('team', 'namespaces/team', 'namespace.created', 't', '{}')"
                )
                await conn.fetchval("SELECT modelreg_stamp_revision(ARRAY[false])")
                raise Rollback
        except Rollback:
            pass


async def _round(
    lg: Log, rng: random.Random, clock: itertools.count[int], first: int, polled: list[Change]
) -> list[Writer]:
    """Open WRITERS_PER_ROUND transactions one after the other (so their event ids follow
    their index), then commit them in random chunks, holding three of the first half open
    until the others committed; a keyset read follows every chunk."""
    writers = [
        Writer(first + i, events=rng.randint(1, 3), rollback=rng.random() < 0.15)
        for i in range(WRITERS_PER_ROUND)
    ]
    tasks = []
    for writer in writers:
        tasks.append(asyncio.create_task(write(lg.store, writer, clock, MODEL)))
        await writer.ready.wait()
    held = rng.sample(writers[: WRITERS_PER_ROUND // 2], 3)
    rest = [w for w in writers if w not in held]
    rng.shuffle(rest)
    while rest:
        size = rng.randint(1, 3)
        chunk, rest = rest[:size], rest[size:]
        for writer in chunk:
            writer.go.set()
        await asyncio.gather(*(tasks[writers.index(w)] for w in chunk))
        if rng.random() < 0.3:
            await _stamped_then_rolled_back(lg.pool)
        await _poll(lg.changes, polled)
    for writer in held:
        writer.go.set()
    await asyncio.gather(*tasks)
    await _poll(lg.changes, polled)
    return writers


async def _poll(changes: PostgresChangeLog, polled: list[Change]) -> None:
    """A reader keyed on the last revision it saw, in pages of two events."""
    while True:
        cursor = polled[-1].revision if polled else 0
        page = await changes.changes_after(revision=cursor, limit=2)
        if not page:
            return
        polled += page


def _defects(changes: Sequence[Change], writers: Sequence[Writer]) -> Counter[str]:
    """Gaps, duplicates and reorderings of `changes` against what the writers committed."""
    committed = {w.index: w for w in writers if w.acked >= 0}
    defects: Counter[str] = Counter()
    order: list[int] = []
    # each change with the one before it (None before the first)
    for previous, change in zip([None, *changes], changes, strict=False):
        if previous is not None and change.revision <= previous.revision:
            defects["reordered"] += 1  # revisions must rise strictly
        seen = [(e.after or {}).get("writer") for e in change.events]
        ns = [(e.after or {}).get("n") for e in change.events]
        if len(set(seen)) != 1 or ns != list(range(len(ns))):
            defects["split or reordered transaction"] += 1
        order.append(-1 if seen[0] is None else seen[0])  # -1: no writer's, so never committed
    counts = Counter(order)
    defects["duplicated"] = sum(n - 1 for n in counts.values())
    defects["rolled back but delivered"] = sum(1 for i in counts if i not in committed)
    defects["gap"] = sum(1 for i in committed if i not in counts)
    for i, wi in enumerate(order):  # the log order must agree with real time
        for wj in order[i + 1 :]:
            if wi in committed and wj in committed and committed[wj].acked < committed[wi].began:
                defects["reordered"] += 1
    for change, index in zip(changes, order, strict=True):
        if index in committed and len(change.events) != committed[index].events:
            defects["events missing from a transaction"] += 1
    return +defects


@pytest.mark.slow
async def test_followers_see_exactly_the_committed_transactions_in_commit_order(
    log: Log,
) -> None:
    rng = random.Random(20261203)
    clock = itertools.count()
    pushed = Collected()
    follower = Follower(log=log.changes, apply=pushed, batch=3)
    listener = PostgresChangeListener(log.url, retry_seconds=0.05)
    listener.subscribe(follower.wake)
    await listener.connect()
    await follower.start()
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(follower.run())]
    polled: list[Change] = []
    writers: list[Writer] = []
    try:
        writers += await _round(log, rng, clock, 0, polled)
        writers += await _round(log, rng, clock, 100, polled)
        await asyncio.wait_for(follower.reached(await log.changes.head()), 60)
        # Lose the listener and keep it away while the last round commits: those
        # notifications are never heard; only the reconnect can wake the follower.
        reconnects = listener.reconnects
        await _close_database(log, allow=False)
        await _terminate_listener(log)
        writers += await _round(log, rng, clock, 200, polled)
        assert listener.reconnects == reconnects  # nobody listened during that round
        await _close_database(log, allow=True)
        await asyncio.wait_for(follower.reached(await log.changes.head()), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.close()
    assert listener.reconnects > reconnects
    assert sum(w.rollback for w in writers) > 0
    assert _defects(polled, writers) == Counter()
    assert _defects(pushed.changes, writers) == Counter()
    assert [c.revision for c in pushed.changes] == [c.revision for c in polled]
    assert len(polled) == sum(1 for w in writers if not w.rollback)


async def test_a_reader_keyed_on_event_ids_would_skip_the_late_commits(log: Log) -> None:
    """The same schedule read as `event_id > cursor` loses the transactions held open:
    the test above can fail, and revisions are what keeps it passing."""
    rng = random.Random(7)
    writers = await _round(log, rng, itertools.count(), 0, [])
    by_id: list[int] = []
    ids = await log.pool.fetch("SELECT event_id, revision FROM events ORDER BY revision, event_id")
    cursor = 0
    # replay what an id-keyed reader saw at each revision: all ids committed so far
    for row in ids:
        if row["event_id"] > cursor:
            by_id.append(row["event_id"])
            cursor = row["event_id"]
    committed_events = sum(w.events for w in writers if not w.rollback)
    assert len(by_id) < committed_events


async def test_a_revision_is_never_visible_before_the_ones_below_it(log: Log) -> None:
    """The first transaction to stamp holds the log's lock until its commit is visible: a
    second one waits in its stamp, so no reader sees its revision while the first one's
    can still appear."""
    first, second = await log.pool.acquire(), await log.pool.acquire()
    try:
        await first.execute("BEGIN")
        await _insert_event(first)
        low = await first.fetchval("SELECT modelreg_stamp_revision(ARRAY[false])")
        await second.execute("BEGIN")
        await _insert_event(second)
        stamping = asyncio.create_task(
            second.fetchval("SELECT modelreg_stamp_revision(ARRAY[false])")
        )
        await _waiting_for_the_log_lock(log.pool, second.get_server_pid())
        assert await log.changes.changes_after(revision=low - 1, limit=10) == []
        await first.execute("COMMIT")
        high = await stamping
        await second.execute("COMMIT")
    finally:
        await log.pool.release(first)
        await log.pool.release(second)
    seen = await log.changes.changes_after(revision=low - 1, limit=10)
    assert [c.revision for c in seen] == [low, high]
    assert high > low


async def _insert_event(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO events (ns, resource, kind, actor)"
        " VALUES ('team', 'namespaces/team', 'namespace.created', 't')"
    )


async def _waiting_for_the_log_lock(pool: asyncpg.Pool, pid: int) -> None:
    for _ in range(1000):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'"
            " AND NOT granted",
            pid,
        )
        if waiting:
            return
        await asyncio.sleep(0.01)  # waiting for the other backend to reach the lock
    raise AssertionError("the second stamp never waited for the log's lock")


async def _close_database(lg: Log, *, allow: bool) -> None:
    name = await lg.pool.fetchval("SELECT current_database()")
    conn = await asyncpg.connect(lg.server_url)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
    finally:
        await conn.close()


async def _terminate_listener(lg: Log) -> None:
    ended = await lg.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    assert ended == 1
