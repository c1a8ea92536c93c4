"""Version rules (domain/versions.py, with the checks of rules.py and models.py) against
the in-memory store: dense numbers, the lifecycle, latest READY, idempotent creates."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

import pytest

from modelreg.domain.aliases import Aliases
from modelreg.domain.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from modelreg.domain.models import Models
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.types import Model, ModelVersion, VersionSource, VersionState, etag_of
from modelreg.domain.versions import Versions
from tests.unit.fake_store import FakeStore

ACTOR = "alice"
MODEL = ModelKey("team", "resnet")
LATEST = Reference(MODEL)
READY, PENDING = VersionState.READY, VersionState.PENDING


@pytest.fixture
async def store() -> FakeStore:
    store = FakeStore()
    await Namespaces(store).create(namespace_id="team", description="", actor=ACTOR)
    await Models(store).create(draft=Model(MODEL), actor=ACTOR)
    return store


def draft(state: VersionState = READY, **fields: Any) -> ModelVersion:
    return dataclasses.replace(ModelVersion(VersionKey(MODEL, 0), state=state), **fields)


async def create(store: FakeStore, state: VersionState = READY, **fields: Any) -> ModelVersion:
    return await Versions(store).create(draft=draft(state, **fields), actor=ACTOR)


async def set_state(store: FakeStore, number: int, state: VersionState) -> ModelVersion:
    """What finalize and FailModelVersion (domain/artifacts.py) leave behind."""
    async with store.transaction() as tx:
        current = await tx.lock_version(key=VersionKey(MODEL, number))
        return await tx.save_version(version=dataclasses.replace(current, state=state))


# --- numbering --------------------------------------------------------------------------------


async def test_numbers_are_dense_per_model_and_the_creator_is_the_actor(store: FakeStore) -> None:
    other = ModelKey("team", "bert")
    await Models(store).create(draft=Model(other), actor=ACTOR)
    first, second = await create(store), await create(store, PENDING)
    elsewhere = await Versions(store).create(draft=ModelVersion(VersionKey(other, 0)), actor="bob")
    third = await create(store)
    assert [v.key.number for v in (first, second, third)] == [1, 2, 3]
    assert elsewhere.key == VersionKey(other, 1)
    assert (elsewhere.creator, first.creator) == ("bob", ACTOR)
    assert (await store.get_model(key=MODEL)).latest_version_number == 3


async def test_a_create_that_fails_after_allocating_leaves_no_gap(store: FakeStore) -> None:
    await create(store)
    store.fail("append_event", Unavailable("the outbox is down"))
    with pytest.raises(Unavailable):
        await create(store, description="lost")
    assert store.rollbacks == 1
    with pytest.raises(NotFound):
        await store.get_version(key=VersionKey(MODEL, 2))
    assert (await create(store, description="kept")).key.number == 2
    assert [v.description for v in await _all(store)] == ["kept", ""]


async def test_concurrent_creates_get_distinct_dense_numbers(store: FakeStore) -> None:
    made = await asyncio.gather(*(create(store, description=str(i)) for i in range(20)))
    assert sorted(v.key.number for v in made) == list(range(1, 21))


async def test_only_pending_or_ready_can_be_created(store: FakeStore) -> None:
    for state in (VersionState.FAILED, VersionState.ARCHIVED):
        with pytest.raises(InvalidArgument) as caught:
            await create(store, state)
        assert caught.value.violations[0][0] == "version.state"
    assert [e.event.kind for e in store.events] == ["namespace.created", "model.created"]


async def test_creating_needs_an_active_model(store: FakeStore) -> None:
    with pytest.raises(NotFound) as missing:
        await Versions(store).create(
            draft=ModelVersion(VersionKey(ModelKey("team", "nope"), 0)), actor=ACTOR
        )
    assert missing.value.resource == "namespaces/team/models/nope"
    model = await store.get_model(key=MODEL)
    await Models(store).delete(key=MODEL, etag=etag_of(model.revision), actor=ACTOR)
    with pytest.raises(FailedPrecondition) as deleted:
        await create(store)
    assert deleted.value.reason == "MODEL_DELETED"
    assert (await store.get_model(key=MODEL)).latest_version_number == 0


async def test_a_create_normalises_and_checks_its_metadata(store: FakeStore) -> None:
    made = await create(store, tags=("b", "a", "b"), labels={"z": "1", "a": "2"}, digest="x")
    assert made.tags == ("a", "b")
    assert list(made.labels) == ["a", "z"]
    assert made.digest == ""  # set by finalize only
    bad: list[tuple[dict[str, Any], str]] = [
        ({"metrics": {"acc": math.nan}}, "version.metrics[acc]"),
        ({"labels": {"1x": "v"}}, "version.labels"),
        ({"tags": ("has space",)}, "version.tags"),
        ({"description": "d" * 4097}, "version.description"),
        ({"source": VersionSource(run_id="r" * 257)}, "version.source.run_id"),
    ]
    for fields, field in bad:
        with pytest.raises(InvalidArgument) as caught:
            await create(store, **fields)
        assert caught.value.violations[0][0] == field
    assert (await store.get_model(key=MODEL)).latest_version_number == 1


# --- idempotent creates -----------------------------------------------------------------------


async def test_a_retried_request_id_returns_the_original_version(store: FakeStore) -> None:
    versions = Versions(store)
    first = await versions.create(draft=draft(description="d"), actor=ACTOR, request_id="req-1")
    again = await versions.create(draft=draft(description="d"), actor=ACTOR, request_id="req-1")
    assert again == first
    assert (await store.get_model(key=MODEL)).latest_version_number == 1
    assert len(store.events_of(first.key.name)) == 1


async def test_a_request_id_reused_for_another_request_is_refused(store: FakeStore) -> None:
    versions = Versions(store)
    await versions.create(draft=draft(description="d"), actor=ACTOR, request_id="req-1")
    with pytest.raises(InvalidArgument) as caught:
        await versions.create(draft=draft(description="other"), actor=ACTOR, request_id="req-1")
    assert caught.value.violations == [("request_id", "was already used for a different request")]
    assert (await store.get_model(key=MODEL)).latest_version_number == 1


async def test_a_request_id_is_the_same_request_whoever_retries_it(store: FakeStore) -> None:
    versions = Versions(store)
    first = await versions.create(draft=draft(), actor=ACTOR, request_id="req-1")
    again = await versions.create(draft=draft(), actor="bob", request_id="req-1")
    assert again.creator == first.creator == ACTOR


async def test_concurrent_retries_of_one_request_id_make_one_version(store: FakeStore) -> None:
    versions = Versions(store)
    made = await asyncio.gather(
        *(versions.create(draft=draft(), actor=ACTOR, request_id="req-1") for _ in range(5))
    )
    assert {v.key.number for v in made} == {1}
    assert (await store.get_model(key=MODEL)).latest_version_number == 1


async def test_a_failed_create_does_not_keep_its_request_id(store: FakeStore) -> None:
    versions = Versions(store)
    store.fail("insert_version", Unavailable("connection lost"))
    with pytest.raises(Unavailable):
        await versions.create(draft=draft(), actor=ACTOR, request_id="req-1")
    made = await versions.create(draft=draft(), actor=ACTOR, request_id="req-1")
    assert made.key.number == 1


async def test_an_overlong_request_id_is_refused(store: FakeStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await Versions(store).create(draft=draft(), actor=ACTOR, request_id="r" * 129)
    assert caught.value.violations[0][0] == "request_id"


# --- lifecycle and latest ---------------------------------------------------------------------


async def test_latest_is_the_newest_ready_version(store: FakeStore) -> None:
    with pytest.raises(NotFound) as none:
        await store.resolve(ref=LATEST)
    assert none.value.reason == "NO_READY_VERSION"
    await create(store)
    await create(store)
    await create(store, PENDING)
    await create(store)
    await set_state(store, 4, VersionState.FAILED)
    assert (await store.resolve(ref=LATEST)).key.number == 2
    two = await store.get_version(key=VersionKey(MODEL, 2))
    await Versions(store).archive(key=two.key, etag=etag_of(two.revision), actor=ACTOR)
    assert (await store.resolve(ref=LATEST)).key.number == 1
    await set_state(store, 3, READY)  # finalized
    assert (await store.resolve(ref=LATEST)).key.number == 3


async def test_archive_and_restore_move_only_between_ready_and_archived(
    store: FakeStore,
) -> None:
    versions = Versions(store)
    ready = await create(store)
    archived = await versions.archive(key=ready.key, etag=etag_of(ready.revision), actor=ACTOR)
    assert archived.state == VersionState.ARCHIVED
    assert archived.revision == ready.revision + 1
    again = await versions.archive(key=ready.key, etag="", actor=ACTOR)
    assert again == archived  # archiving an archived version changes nothing
    restored = await versions.restore(key=ready.key, etag=etag_of(archived.revision), actor=ACTOR)
    assert restored.state == READY
    assert await versions.restore(key=ready.key, etag="", actor=ACTOR) == restored
    kinds = [e.kind for e in store.events_of(ready.key.name)]
    assert kinds == ["version.created", "version.archived", "version.restored"]


@pytest.mark.parametrize("state", [PENDING, VersionState.FAILED])
async def test_a_version_that_never_became_ready_is_neither_archived_nor_restored(
    store: FakeStore, state: VersionState
) -> None:
    version = await create(store, PENDING)
    if state != PENDING:
        version = await set_state(store, 1, state)
    versions = Versions(store)
    for change in (versions.archive, versions.restore):
        with pytest.raises(FailedPrecondition) as caught:
            await change(key=version.key, etag="", actor=ACTOR)
        assert caught.value.reason == "INVALID_VERSION_STATE"
        assert caught.value.metadata["state"] == state.name
    assert await store.get_version(key=version.key) == version


async def test_a_version_an_alias_points_at_cannot_be_archived(store: FakeStore) -> None:
    version = await create(store)
    await Aliases(store).set(
        key=AliasKey(MODEL, "prod"), number=1, etag="", expected=None, actor=ACTOR
    )
    await Aliases(store).set(
        key=AliasKey(MODEL, "canary"), number=1, etag="", expected=None, actor=ACTOR
    )
    with pytest.raises(FailedPrecondition) as caught:
        await Versions(store).archive(key=version.key, etag="", actor=ACTOR)
    assert caught.value.reason == "VERSION_HAS_ALIASES"
    assert caught.value.metadata["aliases"] == "canary,prod"
    await Aliases(store).delete(key=AliasKey(MODEL, "prod"), etag="", actor=ACTOR)
    await Aliases(store).delete(key=AliasKey(MODEL, "canary"), etag="", actor=ACTOR)
    archived = await Versions(store).archive(key=version.key, etag="", actor=ACTOR)
    assert archived.state == VersionState.ARCHIVED


async def test_a_stale_etag_changes_nothing(store: FakeStore) -> None:
    version = await create(store)
    versions = Versions(store)
    updated = await versions.update(
        changes=dataclasses.replace(version, description="new"),
        mask=["description"],
        etag=etag_of(version.revision),
        actor=ACTOR,
    )
    stale = etag_of(version.revision)
    with pytest.raises(Aborted) as caught:
        await versions.archive(key=version.key, etag=stale, actor=ACTOR)
    assert caught.value.metadata["current_etag"] == etag_of(updated.revision)
    with pytest.raises(Aborted):
        await versions.update(
            changes=dataclasses.replace(version, description="lost"),
            mask=["description"],
            etag=stale,
            actor=ACTOR,
        )
    assert await store.get_version(key=version.key) == updated


async def test_an_update_changes_only_the_masked_metadata(store: FakeStore) -> None:
    version = await create(store, description="old", tags=("a",))
    changes = dataclasses.replace(version, description="new", tags=("x",), state=PENDING)
    updated = await Versions(store).update(
        changes=changes, mask=["description"], etag="", actor=ACTOR
    )
    assert (updated.description, updated.tags, updated.state) == ("new", ("a",), READY)
    assert updated.revision == version.revision + 1
    (event,) = store.events_of(version.key.name)[1:]
    assert event.kind == "version.updated"
    assert event.before is not None
    assert event.after is not None
    assert (event.before["description"], event.after["description"]) == ("old", "new")
    for mask in ([], ["state"], ["digest"]):
        with pytest.raises(InvalidArgument) as caught:
            await Versions(store).update(changes=changes, mask=mask, etag="", actor=ACTOR)
        assert caught.value.violations[0][0] == "update_mask"


async def test_changing_a_missing_version_names_what_is_missing(store: FakeStore) -> None:
    with pytest.raises(NotFound) as version:
        await Versions(store).archive(key=VersionKey(MODEL, 9), etag="", actor=ACTOR)
    assert version.value.resource == "namespaces/team/models/resnet/versions/9"
    with pytest.raises(NotFound) as model:
        await Versions(store).archive(
            key=VersionKey(ModelKey("team", "nope"), 1), etag="", actor=ACTOR
        )
    assert model.value.resource == "namespaces/team/models/nope"


# --- listing ----------------------------------------------------------------------------------


async def test_listing_pages_newest_first_and_filters_by_state(store: FakeStore) -> None:
    for state in (READY, PENDING, READY, PENDING, READY):
        await create(store, state)
    versions = Versions(store)
    seen, token = [], ""
    while True:
        page = await versions.list(model=MODEL, order_by="", states=(), size=2, token=token)
        seen += [v.key.number for v in page.items]
        token = page.next_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    oldest = await versions.list(model=MODEL, order_by="number", states=[READY], size=2, token="")
    assert [v.key.number for v in oldest.items] == [1, 3]
    rest = await versions.list(
        model=MODEL, order_by="number", states=[READY], size=2, token=oldest.next_token
    )
    assert [v.key.number for v in rest.items] == [5]
    assert rest.next_token == ""
    with pytest.raises(InvalidArgument) as other_query:
        await versions.list(model=MODEL, order_by="", states=(), size=2, token=oldest.next_token)
    assert other_query.value.violations[0][0] == "page_token"
    with pytest.raises(InvalidArgument):
        await versions.list(model=MODEL, order_by="state", states=(), size=2, token="")


async def _all(store: FakeStore) -> list[ModelVersion]:
    return (await Versions(store).list(model=MODEL, order_by="", states=(), size=0, token="")).items
