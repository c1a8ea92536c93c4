"""Model rules (domain/models.py, namespaces.py) against the in-memory store: create once,
soft delete and restore, etags, masks and the listing's filters and orders."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from modelreg.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from modelreg.domain.models import Models
from modelreg.domain.names import ModelKey, Reference, VersionKey
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.types import Model, ModelQuery, ModelVersion, VersionState, etag_of
from modelreg.domain.versions import Versions
from tests.unit.fake_store import FakeStore

ACTOR = "alice"
MODEL = ModelKey("team", "resnet")


@pytest.fixture
async def store() -> FakeStore:
    store = FakeStore()
    await Namespaces(store).create(namespace_id="team", description="", actor=ACTOR)
    return store


async def test_a_model_is_created_once_in_an_existing_namespace(store: FakeStore) -> None:
    models = Models(store)
    made = await models.create(draft=Model(MODEL, tags=("b", "a")), actor=ACTOR)
    assert (made.revision, made.tags, made.latest_version_number) == (1, ("a", "b"), 0)
    with pytest.raises(AlreadyExists):
        await models.create(draft=Model(MODEL, description="again"), actor=ACTOR)
    with pytest.raises(NotFound) as caught:
        await models.create(draft=Model(ModelKey("nope", "resnet")), actor=ACTOR)
    assert caught.value.resource == "namespaces/nope"
    with pytest.raises(InvalidArgument) as bad_id:
        await models.create(draft=Model(ModelKey("team", "Bad_Id")), actor=ACTOR)
    assert bad_id.value.violations[0][0] == "model_id"
    assert (await store.get_model(key=MODEL)).description == ""


async def test_a_retried_create_returns_the_model_as_it_is_now(store: FakeStore) -> None:
    models = Models(store)
    made = await models.create(draft=Model(MODEL), actor=ACTOR, request_id="m-1")
    updated = await models.update(
        changes=dataclasses.replace(made, description="later"),
        mask=["description"],
        etag="",
        actor=ACTOR,
    )
    assert await models.create(draft=Model(MODEL), actor=ACTOR, request_id="m-1") == updated
    with pytest.raises(InvalidArgument):
        await models.create(draft=Model(MODEL, tags=("x",)), actor=ACTOR, request_id="m-1")


async def test_delete_hides_the_model_until_it_is_restored(store: FakeStore) -> None:
    models = Models(store)
    made = await models.create(draft=Model(MODEL), actor=ACTOR)
    await Versions(store).create(
        draft=ModelVersion(VersionKey(MODEL, 0), state=VersionState.READY), actor=ACTOR
    )
    deleted = await models.delete(key=MODEL, etag=etag_of(made.revision), actor=ACTOR)
    assert deleted.delete_time is not None
    with pytest.raises(FailedPrecondition) as hidden:
        await store.resolve(ref=Reference(MODEL))
    assert hidden.value.reason == "MODEL_DELETED"
    assert await models.get(key=MODEL) == deleted  # a get still shows it
    with pytest.raises(FailedPrecondition) as twice:
        await models.delete(key=MODEL, etag="", actor=ACTOR)
    assert twice.value.reason == "MODEL_DELETED"
    with pytest.raises(FailedPrecondition) as changed:
        await models.update(
            changes=dataclasses.replace(deleted, description="x"),
            mask=["description"],
            etag="",
            actor=ACTOR,
        )
    assert changed.value.reason == "MODEL_DELETED"
    with pytest.raises(Aborted):
        await models.undelete(key=MODEL, etag=etag_of(made.revision), actor=ACTOR)
    restored = await models.undelete(key=MODEL, etag=etag_of(deleted.revision), actor=ACTOR)
    assert restored.delete_time is None
    assert (await store.resolve(ref=Reference(MODEL))).key.number == 1
    with pytest.raises(FailedPrecondition) as active:
        await models.undelete(key=MODEL, etag="", actor=ACTOR)
    assert active.value.reason == "MODEL_NOT_DELETED"
    kinds = [e.kind for e in store.events_of(MODEL.name)]
    assert kinds == ["model.created", "model.deleted", "model.undeleted"]


async def test_an_update_changes_the_masked_fields_with_a_fresh_etag(store: FakeStore) -> None:
    models = Models(store)
    made = await models.create(draft=Model(MODEL, description="old", tags=("a",)), actor=ACTOR)
    changes = dataclasses.replace(made, description="new", tags=("z", "y"))
    updated = await models.update(
        changes=changes, mask=["tags"], etag=etag_of(made.revision), actor=ACTOR
    )
    assert (updated.description, updated.tags, updated.revision) == ("old", ("y", "z"), 2)
    with pytest.raises(Aborted):
        await models.update(
            changes=changes, mask=["description"], etag=etag_of(made.revision), actor=ACTOR
        )
    for mask in ([], ["delete_time"]):
        with pytest.raises(InvalidArgument) as caught:
            await models.update(changes=changes, mask=mask, etag="", actor=ACTOR)
        assert caught.value.violations[0][0] == "update_mask"
    with pytest.raises(InvalidArgument) as bad_label:
        await models.update(
            changes=dataclasses.replace(made, labels={"k": "v" * 1025}),
            mask=["labels"],
            etag="",
            actor=ACTOR,
        )
    assert bad_label.value.violations[0][0] == "model.labels[k]"
    assert await store.get_model(key=MODEL) == updated


async def test_listing_filters_orders_and_pages(store: FakeStore) -> None:
    models = Models(store)
    for name, tags in (("c", ("x",)), ("a", ("x", "y")), ("b", ()), ("ab", ("x",))):
        await models.create(draft=Model(ModelKey("team", name), tags=tags), actor=ACTOR)
    await models.delete(key=ModelKey("team", "b"), etag="", actor=ACTOR)

    async def names(order: str, **filters: Any) -> list[str]:
        query = dataclasses.replace(ModelQuery("team", order_by=order), **filters)
        seen, token = [], ""
        while True:
            page = await models.list(query=query, size=1, token=token)
            seen += [m.key.model for m in page.items]
            token = page.next_token
            if not token:
                return seen

    assert await names("") == ["a", "ab", "c"]
    assert await names("name", show_deleted=True) == ["a", "ab", "b", "c"]
    assert await names("create_time") == ["c", "a", "ab"]
    assert await names("create_time desc", show_deleted=True) == ["ab", "b", "a", "c"]
    assert await names("name", tags=("x",), name_prefix="a") == ["a", "ab"]
    assert await names("", tags=("y", "x")) == ["a"]
    with pytest.raises(InvalidArgument) as caught:
        await models.list(query=ModelQuery("team", order_by="size"), size=0, token="")
    assert caught.value.violations[0][0] == "order_by"
    first = await models.list(query=ModelQuery("team"), size=1, token="")
    with pytest.raises(InvalidArgument):
        await models.list(
            query=ModelQuery("team", order_by="create_time"), size=1, token=first.next_token
        )


async def test_namespaces_are_created_once_and_listed_in_id_order(store: FakeStore) -> None:
    namespaces = Namespaces(store)
    await namespaces.create(namespace_id="alpha", description="first", actor=ACTOR)
    with pytest.raises(AlreadyExists):
        await namespaces.create(namespace_id="alpha", description="", actor=ACTOR)
    again = await namespaces.create(
        namespace_id="zed", description="", actor=ACTOR, request_id="ns-1"
    )
    assert (
        await namespaces.create(namespace_id="zed", description="", actor=ACTOR, request_id="ns-1")
        == again
    )
    page = await namespaces.list(size=2, token="")
    rest = await namespaces.list(size=2, token=page.next_token)
    assert [n.id for n in page.items + rest.items] == ["alpha", "team", "zed"]
