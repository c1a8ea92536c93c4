"""The Watch hub against an in-memory change log (a fake of our own port): one read per
wake-up whatever the number of streams, a full buffer overflows into catch-up reads and
rejoins, nothing is lost or repeated on the way, and filters match typed subjects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from modelreg.domain.changelog import Change
from modelreg.domain.errors import InvalidArgument, OutOfRange, Unavailable
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey, NamespaceKey, VersionKey
from modelreg.domain.watch import ChangeHub, Delivery, watch_spec

Wake = Callable[[int | None], None]
M = ModelKey("team", "m")


class MemoryLog:
    """The KeptLog port over a list; counts the reads of changes."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.sequence = 0
        self.reads = 0
        self.broken = False  # then a read fails as a bug would
        self.wakes: list[Wake] = []

    def commit(self, *events: Event) -> int:
        self.sequence += 1
        revision = self.sequence
        self.changes.append(Change(revision, events))
        for wake in self.wakes:
            wake(revision)
        return revision

    async def changes_after(self, *, revision: int, limit: int) -> list[Change]:
        self.reads += 1
        if self.broken:
            raise RuntimeError("a bug in the reader")
        page, count = [], 0
        for change in self.changes:
            if change.revision > revision and count < limit:
                page.append(change)
                count += len(change.events)
        return page

    async def head(self) -> int:
        return self.changes[-1].revision if self.changes else 0  # 0 once rows are deleted

    async def oldest(self) -> int:
        return self.changes[0].revision if self.changes else 0

    def subscribe(self, wake: Wake) -> Callable[[], None]:
        self.wakes.append(wake)
        return lambda: self.wakes.remove(wake)


def alias_set(model: ModelKey = M, alias: str = "prod", n: int = 0) -> Event:
    return Event(EventKind.ALIAS_SET, AliasKey(model, alias), "t", after={"n": n})


@pytest.fixture
async def hub() -> AsyncIterator[tuple[ChangeHub, MemoryLog]]:
    log = MemoryLog()
    made = ChangeHub(log=log, subscribe=log.subscribe, buffer_events=4, page_events=3)
    yield made, log
    await made.close()


async def _until(hub: ChangeHub, revision: int) -> None:
    """Let the hub's follower run until it handed out `revision`."""
    for _ in range(1000):
        if hub.position >= revision:
            return
        await asyncio.sleep(0)  # one turn of the loop for the follower task
    raise AssertionError(f"the hub never reached {revision}")


async def test_many_streams_cost_one_read_per_wake_up(hub: tuple[ChangeHub, MemoryLog]) -> None:
    changes, log = hub
    streams = [aiter(await changes.open(watch_spec())) for _ in range(50)]
    for stream in streams:
        assert (await anext(stream)).bookmark
    reads = log.reads
    revision = log.commit(alias_set())
    await _until(changes, revision)
    assert log.reads == reads + 1
    for stream in streams:
        assert (await anext(stream)).revision == revision


async def test_a_full_buffer_overflows_into_catch_up_and_rejoins(
    hub: tuple[ChangeHub, MemoryLog],
) -> None:
    changes, log = hub
    stream = await changes.open(watch_spec())
    deliveries = aiter(stream)
    await anext(deliveries)  # the opening bookmark; now the consumer pauses
    committed = [log.commit(alias_set(n=n), alias_set(n=n)) for n in range(10)]
    await _until(changes, committed[-1])
    assert changes.counters["watch.overflows"] == 1
    assert not stream.live  # two transactions buffered (4 events), the rest left in the log
    got = [(await anext(deliveries)).revision for _ in committed]
    assert got == committed
    later = log.commit(alias_set())
    assert (await anext(deliveries)).revision == later
    assert stream.live  # caught up: the hub hands it changes again
    assert changes.counters["watch.catch_ups"] == 1


async def test_a_catch_up_over_deleted_rows_ends(hub: tuple[ChangeHub, MemoryLog]) -> None:
    changes, log = hub
    first = aiter(await changes.open(watch_spec()))
    await anext(first)
    for n in range(3):
        log.commit(alias_set(n=n))
    await _until(changes, 3)
    log.changes.clear()  # an operator removed rows the hub already handed out
    behind = await changes.open(watch_spec(after_revision=1))
    deliveries = aiter(behind)
    assert (await anext(deliveries)).revision == 1
    waiting = asyncio.ensure_future(anext(deliveries))  # reads nothing after 1, yet 3 was out
    for _ in range(100):
        if behind.live:
            break
        await asyncio.sleep(0)  # one turn of the loop for the reading stream
    assert behind.live  # it skipped what is gone and rejoined the hub
    new = log.commit(alias_set())
    assert (await waiting).revision == new


async def test_a_hub_that_fails_cuts_its_streams_and_the_next_one_restarts_it(
    hub: tuple[ChangeHub, MemoryLog],
) -> None:
    changes, log = hub
    stream = aiter(await changes.open(watch_spec()))
    await anext(stream)
    log.broken = True
    log.commit(alias_set())
    with pytest.raises(Unavailable):
        await anext(stream)
    log.broken = False
    again = aiter(await changes.open(watch_spec()))
    await anext(again)
    revision = log.commit(alias_set())
    assert (await anext(again)).revision == revision


async def test_out_of_range_and_above_the_head(hub: tuple[ChangeHub, MemoryLog]) -> None:
    changes, log = hub
    for n in range(5):
        log.commit(alias_set(n=n))
    del log.changes[:2]  # oldest kept: 3
    with pytest.raises(OutOfRange) as caught:
        await changes.open(watch_spec(after_revision=1))
    assert caught.value.metadata == {"oldest_revision": "3"}
    assert (await anext(aiter(await changes.open(watch_spec(after_revision=2))))).revision == 2
    with pytest.raises(InvalidArgument) as above:
        await changes.open(watch_spec(after_revision=6))
    assert above.value.violations[0][0] == "after_revision"


def test_filters_match_typed_subjects_not_name_prefixes() -> None:
    team, team2 = ModelKey("team", "m1"), ModelKey("team2", "m1")
    events = [
        Event(EventKind.NAMESPACE_CREATED, NamespaceKey("team2"), "t"),
        Event(EventKind.MODEL_CREATED, ModelKey("team", "m10"), "t"),
        Event(EventKind.VERSION_CREATED, VersionKey(team, 1), "t"),
        alias_set(team, "prod"),
        alias_set(team2, "prod"),
    ]
    by_namespace = watch_spec(namespaces=["namespaces/team"]).filter
    assert [e for e in events if by_namespace.matches(e)] == events[1:4]
    by_model = watch_spec(models=["namespaces/team/models/m1"]).filter
    assert [e for e in events if by_model.matches(e)] == events[2:4]
    by_alias = watch_spec(aliases=["namespaces/team2/models/m1/aliases/prod"]).filter
    assert [e for e in events if by_alias.matches(e)] == events[4:]
    by_kind = watch_spec(models=["namespaces/team/models/m1"], kinds=["alias.set"]).filter
    assert [e for e in events if by_kind.matches(e)] == [events[3]]


def test_bad_specs_name_every_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        watch_spec(namespaces=["team"], kinds=["x"], after_revision=-1, bookmark_seconds=0)
    fields = [field for field, _ in caught.value.violations]
    assert fields == ["namespaces[0]", "kinds[0]", "after_revision", "bookmark_interval"]


def test_a_bookmark_is_a_delivery_without_events() -> None:
    assert Delivery(7).bookmark
    assert not Delivery(7, (alias_set(),)).bookmark
