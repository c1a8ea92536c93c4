"""The in-memory store keeps the transactional promises the domain relies on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from modelreg.domain.errors import NotFound
from modelreg.domain.events import Event
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.types import Model, ModelVersion, Namespace
from modelreg.domain.versions import Versions
from tests.unit.fake_store import FakeStore

MODEL = ModelKey("team", "resnet")


async def seeded(store: FakeStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_namespace(namespace=Namespace("team"))
        await tx.insert_model(model=Model(MODEL))


async def test_writes_are_seen_outside_only_after_commit() -> None:
    store = FakeStore()
    async with store.transaction() as tx:
        await tx.insert_namespace(namespace=Namespace("team"))
        with pytest.raises(NotFound):
            await store.get_namespace(namespace="team")
        assert (await tx.insert_model(model=Model(MODEL))).key == MODEL
    assert (await store.get_namespace(namespace="team")).id == "team"
    assert (await store.get_model(key=MODEL)).revision == 1
    assert (store.commits, store.rollbacks) == (1, 0)


async def test_a_transaction_that_raises_leaves_nothing() -> None:
    store = FakeStore()
    await seeded(store)
    store.fail("finish_request", RuntimeError("boom"))  # the last write of a create
    versions = Versions(store)
    with pytest.raises(RuntimeError, match="boom"):
        await versions.create(draft=ModelVersion(VersionKey(MODEL, 0)), actor="a", request_id="r")
    assert (await store.get_model(key=MODEL)).latest_version_number == 0
    assert store.events == []
    with pytest.raises(NotFound):
        await store.get_version(key=VersionKey(MODEL, 1))
    again = await versions.create(
        draft=ModelVersion(VersionKey(MODEL, 0)), actor="a", request_id="r"
    )
    assert again.key.number == 1
    assert (store.commits, store.rollbacks) == (2, 1)


async def test_a_transaction_cannot_be_used_after_it_ended() -> None:
    store = FakeStore()
    async with store.transaction() as tx:
        await tx.insert_namespace(namespace=Namespace("team"))
    with pytest.raises(RuntimeError, match="ended"):
        await tx.insert_namespace(namespace=Namespace("other"))


async def test_the_commit_listener_hears_committed_events_only() -> None:
    heard: list[str] = []

    async def listen(events: Sequence[Event]) -> None:
        heard.extend(e.resource for e in events)

    store = FakeStore(on_commit=listen)
    await seeded(store)  # no events appended: nothing to hear
    versions = Versions(store)
    await versions.create(draft=ModelVersion(VersionKey(MODEL, 0)), actor="a")
    store.fail("finish_request", RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await versions.create(draft=ModelVersion(VersionKey(MODEL, 0)), actor="a", request_id="r")
    assert heard == [VersionKey(MODEL, 1).name]


async def test_a_hook_for_a_method_the_port_lacks_is_refused() -> None:
    async def hook() -> None:
        pass

    with pytest.raises(AttributeError):
        FakeStore().before("lock_everything", hook)
