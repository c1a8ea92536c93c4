"""The in-memory store keeps the transactional promises the domain relies on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from modelreg.domain.errors import NotFound
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.types import Event, Model, ModelVersion, Namespace
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

    async def write_then_fail() -> None:
        async with store.transaction() as tx:
            number = await tx.allocate_version_number(key=MODEL)
            await tx.insert_version(version=ModelVersion(VersionKey(MODEL, number)))
            await tx.claim_request(request_id="r", method="m", fingerprint="f")
            await tx.append_event(event=Event("version.created", "v", "a", "team", MODEL))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await write_then_fail()
    assert (await store.get_model(key=MODEL)).latest_version_number == 0
    assert [e.event.kind for e in store.events] == []
    async with store.transaction() as tx:
        assert await tx.claim_request(request_id="r", method="m", fingerprint="f") is None
        assert await tx.allocate_version_number(key=MODEL) == 1
    assert store.rollbacks == 1


async def test_a_transaction_cannot_be_used_after_it_ended() -> None:
    store = FakeStore()
    async with store.transaction() as tx:
        await tx.insert_namespace(namespace=Namespace("team"))
    with pytest.raises(RuntimeError, match="ended"):
        await tx.insert_namespace(namespace=Namespace("other"))


async def test_the_commit_listener_hears_committed_events_only() -> None:
    heard: list[str] = []

    async def listen(events: Sequence[Event]) -> None:
        heard.extend(e.kind for e in events)

    store = FakeStore(on_commit=listen)
    await seeded(store)  # no events appended: nothing to hear
    async with store.transaction() as tx:
        await tx.append_event(event=Event("model.updated", MODEL.name, "a", "team", MODEL))

    async def delete_then_fail() -> None:
        async with store.transaction() as tx:
            await tx.append_event(event=Event("model.deleted", MODEL.name, "a", "team", MODEL))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await delete_then_fail()
    assert heard == ["model.updated"]


async def test_a_hook_for_a_method_the_port_lacks_is_refused() -> None:
    async def hook() -> None:
        pass

    with pytest.raises(AttributeError):
        FakeStore().before("lock_everything", hook)
