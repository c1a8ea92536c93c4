"""No gap, no duplicate, no reordering: writers on several connections commit in random
order, some transactions held open while later ones commit, while watchers on two
`modelreg serve` processes read. One watcher stays on each server; one is cut and resumed
at random points, hopping between the servers; one follows through the SDK while its
server is SIGKILLed and restarted. Each ends with exactly the committed transactions,
in commit order."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from modelreg.client import AsyncClient
from modelreg.domain.names import ModelKey
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.v1 import watch_service_pb2 as ws
from tests.conftest import DatabaseFactory
from tests.integration.serverproc import ServerProcess
from tests.integration.writers import Writer, write

MODEL = ModelKey("default", "ordered")
WRITERS_PER_ROUND = 10
ROUNDS = 3
WAIT = 20  # seconds for a watcher to reach the head: past it, something is stuck


@dataclass
class Cluster:
    """Two server processes on one database, and a store to write through."""

    url: str
    store: PostgresStore
    servers: list[ServerProcess]


@pytest.fixture
async def cluster(new_database: DatabaseFactory, tmp_path: Path) -> AsyncIterator[Cluster]:
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    servers = [
        ServerProcess(tmp_path / f"server{i}.log", MODELREG_POSTGRES_URL=url) for i in range(2)
    ]
    pool = await create_pool(url, min_size=WRITERS_PER_ROUND, max_size=WRITERS_PER_ROUND + 2)
    try:
        await asyncio.gather(*(asyncio.to_thread(s.wait_serving) for s in servers))
        yield Cluster(url, PostgresStore(pool), servers)
    finally:
        for server in servers:
            server.stop()
        await pool.close()


async def _round(
    store: PostgresStore, rng: random.Random, clock: itertools.count[int], first: int
) -> list[Writer]:
    """Open WRITERS_PER_ROUND transactions one after the other, then commit them in
    random chunks, holding three of the first half open until the others committed."""
    writers = [
        Writer(first + i, events=rng.randint(1, 3), rollback=rng.random() < 0.15)
        for i in range(WRITERS_PER_ROUND)
    ]
    tasks = []
    for writer in writers:
        tasks.append(asyncio.create_task(write(store, writer, clock, MODEL)))
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
    for writer in held:
        writer.go.set()
    await asyncio.gather(*tasks)
    return writers


class Watcher:
    """Collects what one watcher yields until it passes `target`, the head once the
    writers are done (a last transaction commits after it)."""

    def __init__(self) -> None:
        self.changes: list[ws.WatchResponse] = []
        self.position = 0
        self.resumes = 0

    def take(self, message: ws.WatchResponse, target: asyncio.Future[int]) -> bool:
        """Keep `message`; True once the watcher passed the target."""
        if message.events:
            self.changes.append(message)
        self.position = message.revision
        return target.done() and message.revision > target.result()


async def _follow(target: str, start: int, watcher: Watcher, until: asyncio.Future[int]) -> None:
    """One SDK watch, left to resume by itself whatever happens to its server."""
    async with AsyncClient(target) as client:
        stream = client.watch(
            models=[MODEL.name], after_revision=start, bookmarks=True, bookmark_interval=0.2
        )
        async for message in stream:
            if watcher.take(message, until):
                return


async def _hop(
    targets: Sequence[str],
    *,
    start: int,
    watcher: Watcher,
    until: asyncio.Future[int],
    rng: random.Random,
    down: set[str],
) -> None:
    """Cut after a random number of messages, resume after the last one on a server
    picked at random (one that is up)."""
    watcher.position = start
    while True:
        server = rng.choice([t for t in targets if t not in down] or list(targets))
        async with AsyncClient(server) as client:
            stream = client.watch(
                models=[MODEL.name],
                after_revision=watcher.position,
                bookmarks=True,
                bookmark_interval=0.2,
            )
            budget = rng.randint(1, 4)
            async for message in stream:
                if watcher.take(message, until):
                    return
                budget -= 1
                if not budget:
                    break
            await stream.aclose()
        watcher.resumes += 1


def _defects(changes: Sequence[ws.WatchResponse], writers: Sequence[Writer]) -> Counter[str]:
    """Gaps, duplicates and reorderings of `changes` against what the writers committed."""
    committed = {w.index: w for w in writers if w.acked >= 0}
    defects: Counter[str] = Counter()
    order: list[int] = []
    for earlier, later in itertools.pairwise([0, *(c.revision for c in changes)]):
        if later <= earlier:
            defects["reordered"] += 1  # revisions must rise strictly
    for change in changes:
        seen = [int(e.after.fields["writer"].number_value) for e in change.events]
        ns = [int(e.after.fields["n"].number_value) for e in change.events]
        if len(set(seen)) != 1 or ns != list(range(len(ns))):
            defects["split or reordered transaction"] += 1
        order.append(seen[0])
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
async def test_watchers_on_two_servers_see_exactly_the_committed_transactions(
    cluster: Cluster, tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    clock = itertools.count()
    a, b = (server.target for server in cluster.servers)
    start = await cluster.store._pool.fetchval("SELECT coalesce(max(revision), 0) FROM events")
    until: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    on_a, on_b, hopping = Watcher(), Watcher(), Watcher()  # on_b's server is killed
    down: set[str] = set()
    tasks = [
        asyncio.create_task(_follow(a, start, on_a, until)),
        asyncio.create_task(_follow(b, start, on_b, until)),
        asyncio.create_task(
            _hop((a, b), start=start, watcher=hopping, until=until, rng=rng, down=down)
        ),
    ]
    writers: list[Writer] = []
    try:
        writers += await _round(cluster.store, rng, clock, 0)
        # SIGKILL server b mid-stream, write a round while it is down, restart it.
        down.add(b)
        victim = cluster.servers[1]
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        writers += await _round(cluster.store, rng, clock, 100)
        restarted = ServerProcess(
            tmp_path / "server1-again.log",
            MODELREG_ADDRESS=victim.target,
            MODELREG_POSTGRES_URL=cluster.url,
        )
        cluster.servers.append(restarted)
        await asyncio.to_thread(restarted.wait_serving)
        down.discard(b)
        for first in range(200, 100 * (ROUNDS + 1), 100):
            writers += await _round(cluster.store, rng, clock, first)
        until.set_result(await cluster.store._pool.fetchval("SELECT max(revision) FROM events"))
        last = Writer(999, events=1, rollback=False)  # one past the target: all must get it
        last.go.set()
        await write(cluster.store, last, clock, MODEL)
        writers.append(last)
        done, pending = await asyncio.wait(tasks, timeout=WAIT)
        assert not pending, (
            f"head {until.result()}; positions {[w.position for w in (on_a, on_b, hopping)]};"
            f" done {[t in done for t in tasks]}"
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    committed = sum(1 for w in writers if w.acked >= 0)
    assert sum(w.rollback for w in writers) > 0
    assert hopping.resumes >= 5
    for watcher in (on_a, on_b, hopping):
        assert _defects(watcher.changes, writers) == Counter()
        assert len(watcher.changes) == committed
