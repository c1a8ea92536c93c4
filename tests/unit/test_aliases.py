"""Alias rules (domain/aliases.py) against the in-memory store: moves with their previous
target, compare-and-set, rollback as a move back, history, and what a refused move leaves."""

from __future__ import annotations

import dataclasses

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
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey, parse_alias_name
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.types import Alias, Model, ModelVersion, VersionState, etag_of
from modelreg.domain.versions import Versions
from tests.unit.fake_store import FakeStore

ACTOR = "alice"
MODEL = ModelKey("team", "resnet")
PROD = AliasKey(MODEL, "prod")


@pytest.fixture
async def store() -> FakeStore:
    """A model with versions 1-3 READY and 4 PENDING."""
    store = FakeStore()
    await Namespaces(store).create(namespace_id="team", description="", actor=ACTOR)
    await Models(store).create(draft=Model(MODEL), actor=ACTOR)
    versions = Versions(store)
    for state in (VersionState.READY,) * 3 + (VersionState.PENDING,):
        await versions.create(draft=ModelVersion(VersionKey(MODEL, 0), state=state), actor=ACTOR)
    return store


async def point(
    store: FakeStore,
    number: int,
    *,
    key: AliasKey = PROD,
    etag: str = "",
    expected: int | None = None,
    actor: str = ACTOR,
) -> tuple[Alias, int]:
    return await Aliases(store).set(
        key=key, number=number, etag=etag, expected=expected, actor=actor
    )


async def target(store: FakeStore, key: AliasKey = PROD) -> int:
    return (await store.resolve(ref=Reference(key.model, alias=key.alias))).key.number


async def moves(store: FakeStore, key: AliasKey = PROD) -> list[tuple[int, int]]:
    page = await Aliases(store).history(key=key, size=0, token="")
    return [(e.previous_number, e.number) for e in page.items]


# --- moving -----------------------------------------------------------------------------------


async def test_a_move_reports_the_previous_target_and_is_recorded(store: FakeStore) -> None:
    created, previous = await point(store, 1)
    assert (created.number, created.revision, created.updater, previous) == (1, 1, ACTOR, 0)
    moved, previous = await point(store, 2, actor="bob")
    assert (moved.number, moved.revision, moved.updater, previous) == (2, 2, "bob", 1)
    assert await target(store) == 2
    assert await moves(store) == [(1, 2), (0, 1)]
    set_events = store.events_of(PROD.name)
    assert [e.kind for e in set_events] == ["alias.set", "alias.set"]
    assert (set_events[0].before, set_events[0].after) == (None, {"version_number": 1})
    assert (set_events[1].before, set_events[1].after) == (
        {"version_number": 1},
        {"version_number": 2},
    )
    assert set_events[1].model == MODEL


async def test_pointing_where_it_already_points_is_a_no_op(store: FakeStore) -> None:
    first, _ = await point(store, 1)
    again, previous = await point(store, 1, etag='W/"99"', expected=7)
    assert (again, previous) == (first, 1)
    assert await moves(store) == [(0, 1)]


@pytest.mark.parametrize(
    ("number", "reason"),
    [(4, "VERSION_NOT_READY"), (5, "NOT_FOUND")],
)
async def test_an_alias_points_only_at_an_existing_ready_version(
    store: FakeStore, number: int, reason: str
) -> None:
    await point(store, 1)
    with pytest.raises((FailedPrecondition, NotFound)) as caught:
        await point(store, number)
    assert caught.value.reason == reason
    assert await target(store) == 1
    assert await moves(store) == [(0, 1)]


async def test_archived_and_failed_versions_take_no_alias(store: FakeStore) -> None:
    version = await store.get_version(key=VersionKey(MODEL, 3))
    await Versions(store).archive(key=version.key, etag="", actor=ACTOR)
    async with store.transaction() as tx:  # what FailModelVersion leaves behind
        two = await tx.lock_version(key=VersionKey(MODEL, 2))
        await tx.save_version(version=dataclasses.replace(two, state=VersionState.FAILED))
    for number, state in ((3, "ARCHIVED"), (2, "FAILED")):
        with pytest.raises(FailedPrecondition) as caught:
            await point(store, number)
        assert caught.value.metadata["state"] == state
    with pytest.raises(NotFound):
        await target(store)


async def test_a_version_number_must_be_positive(store: FakeStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await point(store, 0)
    assert caught.value.violations[0][0] == "version_number"


async def test_aliases_of_a_deleted_model_do_not_move(store: FakeStore) -> None:
    await point(store, 1)
    model = await store.get_model(key=MODEL)
    await Models(store).delete(key=MODEL, etag=etag_of(model.revision), actor=ACTOR)
    for change in (
        point(store, 2),
        Aliases(store).rollback(key=PROD, etag="", actor=ACTOR),
        Aliases(store).delete(key=PROD, etag="", actor=ACTOR),
    ):
        with pytest.raises(FailedPrecondition) as caught:
            await change
        assert caught.value.reason == "MODEL_DELETED"
    assert await moves(store) == [(0, 1)]


async def test_a_move_whose_event_cannot_be_written_does_not_happen(store: FakeStore) -> None:
    await point(store, 1)
    store.fail("append_event", Unavailable("the outbox is down"))
    with pytest.raises(Unavailable):
        await point(store, 2)
    assert await target(store) == 1
    assert (await Aliases(store).list(model=MODEL))[0].revision == 1
    moved, previous = await point(store, 2)
    assert (moved.revision, previous) == (2, 1)


# --- compare-and-set --------------------------------------------------------------------------


async def test_a_stale_etag_is_aborted_and_moves_nothing(store: FakeStore) -> None:
    first, _ = await point(store, 1)
    second, _ = await point(store, 2, etag=etag_of(first.revision))
    with pytest.raises(Aborted) as caught:
        await point(store, 3, etag=etag_of(first.revision))
    assert caught.value.metadata == {"resource": PROD.name, "current_etag": etag_of(2)}
    assert await target(store) == 2
    assert second.revision == 2


async def test_an_etag_for_an_alias_that_is_gone_is_aborted(store: FakeStore) -> None:
    first, _ = await point(store, 1)
    await Aliases(store).delete(key=PROD, etag=etag_of(first.revision), actor=ACTOR)
    with pytest.raises(Aborted):
        await point(store, 2, etag=etag_of(first.revision))
    assert (await Aliases(store).list(model=MODEL)) == []


async def test_expected_target_is_compared_before_the_move(store: FakeStore) -> None:
    await point(store, 1, expected=0)  # 0: must not exist yet
    with pytest.raises(Aborted) as exists:
        await point(store, 2, expected=0)
    assert (exists.value.reason, exists.value.metadata["version_number"]) == ("ALIAS_MOVED", "1")
    with pytest.raises(Aborted) as moved:
        await point(store, 2, expected=3)
    assert moved.value.reason == "ALIAS_MOVED"
    assert await target(store) == 1
    assert (await point(store, 2, expected=1))[1] == 1


# --- rollback, history, delete ----------------------------------------------------------------


async def test_rollback_moves_back_to_the_previous_target(store: FakeStore) -> None:
    await point(store, 1)
    moved, _ = await point(store, 3)
    back, previous = await Aliases(store).rollback(
        key=PROD, etag=etag_of(moved.revision), actor="bob"
    )
    assert (back.number, back.updater, previous) == (1, "bob", 3)
    assert await target(store) == 1
    # A rollback is a move like any other: rolling back again returns to 3.
    forth, previous = await Aliases(store).rollback(key=PROD, etag="", actor=ACTOR)
    assert (forth.number, previous) == (3, 1)
    assert await moves(store) == [(1, 3), (3, 1), (1, 3), (0, 1)]


async def test_rollback_needs_an_earlier_target(store: FakeStore) -> None:
    with pytest.raises(NotFound):
        await Aliases(store).rollback(key=PROD, etag="", actor=ACTOR)
    first, _ = await point(store, 1)
    with pytest.raises(FailedPrecondition) as caught:
        await Aliases(store).rollback(key=PROD, etag="", actor=ACTOR)
    assert caught.value.reason == "NO_PREVIOUS_VERSION"
    await point(store, 2)
    with pytest.raises(Aborted):
        await Aliases(store).rollback(key=PROD, etag=etag_of(first.revision), actor=ACTOR)
    assert await target(store) == 2


async def test_rollback_to_a_version_archived_since_is_refused(store: FakeStore) -> None:
    await point(store, 1)
    await point(store, 2)
    version = await store.get_version(key=VersionKey(MODEL, 1))
    await Versions(store).archive(key=version.key, etag="", actor=ACTOR)
    with pytest.raises(FailedPrecondition) as caught:
        await Aliases(store).rollback(key=PROD, etag="", actor=ACTOR)
    assert caught.value.reason == "VERSION_NOT_READY"
    assert await target(store) == 2


async def test_a_retried_rollback_returns_the_first_result(store: FakeStore) -> None:
    await point(store, 1)
    moved, _ = await point(store, 2)
    etag = etag_of(moved.revision)
    aliases = Aliases(store)
    first = await aliases.rollback(key=PROD, etag=etag, actor=ACTOR, request_id="rb-1")
    again = await aliases.rollback(key=PROD, etag=etag, actor=ACTOR, request_id="rb-1")
    assert first == again
    assert first[0].number == 1
    assert await moves(store) == [(2, 1), (1, 2), (0, 1)]
    with pytest.raises(InvalidArgument) as caught:
        await aliases.rollback(key=PROD, etag="", actor=ACTOR, request_id="rb-1")
    assert caught.value.violations[0][0] == "request_id"
    assert await target(store) == 1


async def test_delete_keeps_the_history(store: FakeStore) -> None:
    await point(store, 1)
    moved, _ = await point(store, 2)
    with pytest.raises(Aborted):
        await Aliases(store).delete(key=PROD, etag=etag_of(1), actor=ACTOR)
    deleted = await Aliases(store).delete(key=PROD, etag=etag_of(moved.revision), actor=ACTOR)
    assert deleted == moved
    assert await Aliases(store).list(model=MODEL) == []
    assert await moves(store) == [(2, 0), (1, 2), (0, 1)]
    assert [e.kind for e in store.events_of(PROD.name)][-1] == "alias.deleted"
    with pytest.raises(NotFound):
        await Aliases(store).delete(key=PROD, etag="", actor=ACTOR)
    with pytest.raises(NotFound):
        await Aliases(store).rollback(key=PROD, etag="", actor=ACTOR)
    recreated, previous = await point(store, 3)
    assert (recreated.revision, previous) == (1, 0)


async def test_history_pages_newest_first_per_alias(store: FakeStore) -> None:
    for number in (1, 2, 3, 1, 2):
        await point(store, number)
    await point(store, 3, key=AliasKey(MODEL, "canary"))
    aliases = Aliases(store)
    seen, token = [], ""
    while True:
        page = await aliases.history(key=PROD, size=2, token=token)
        assert len(page.items) <= 2
        seen += [e.number for e in page.items]
        token = page.next_token
        if not token:
            break
    assert seen == [2, 1, 3, 2, 1]
    first = await aliases.history(key=PROD, size=2, token="")
    with pytest.raises(InvalidArgument) as caught:
        await aliases.history(key=AliasKey(MODEL, "canary"), size=2, token=first.next_token)
    assert caught.value.violations[0][0] == "page_token"


async def test_list_gives_every_alias_of_the_model_by_id(store: FakeStore) -> None:
    for alias, number in (("staging", 2), ("canary", 3), ("prod", 1)):
        await point(store, number, key=AliasKey(MODEL, alias))
    found = await Aliases(store).list(model=MODEL)
    assert [(a.key.alias, a.number) for a in found] == [("canary", 3), ("prod", 1), ("staging", 2)]
    with pytest.raises(NotFound):
        await Aliases(store).list(model=ModelKey("team", "nope"))


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["7", "0042", "latest", "Prod", "-x", ""])
def test_an_alias_is_an_id_that_cannot_be_mistaken_for_a_number(alias: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_alias_name(f"{MODEL.name}/aliases/{alias}")
    assert caught.value.violations[0][0] == "name"


@pytest.mark.parametrize("alias", ["v7", "7a", "prod", "rc-1.2_b"])
def test_ids_with_a_letter_name_aliases(alias: str) -> None:
    assert parse_alias_name(f"{MODEL.name}/aliases/{alias}") == AliasKey(MODEL, alias)


# --- protected aliases (domain/approvals.py) --------------------------------------------------


async def test_a_protected_alias_refuses_every_direct_change_and_changes_nothing(
    store: FakeStore,
) -> None:
    await point(store, 1)
    await point(store, 2)
    store.protect("team", "resnet", ("prod",), 2)
    log = len(store.events)
    aliases = Aliases(store)
    refusals = [
        point(store, 3),
        aliases.rollback(key=PROD, etag="", actor=ACTOR),
        aliases.delete(key=PROD, etag="", actor=ACTOR),
    ]
    for refused in refusals:
        with pytest.raises(FailedPrecondition) as caught:
            await refused
        assert caught.value.reason == "APPROVAL_REQUIRED"
        assert caught.value.metadata["change_requests"] == f"{PROD.name}/changeRequests"
        assert caught.value.metadata["approvals_needed"] == "2"
    assert await target(store) == 2
    assert len(store.events) == log


async def test_the_model_policy_overrides_the_namespace_default(store: FakeStore) -> None:
    store.protect("team", "", ("prod", "staging"), 1)
    with pytest.raises(FailedPrecondition):
        await point(store, 1)
    with pytest.raises(FailedPrecondition):
        await point(store, 1, key=AliasKey(MODEL, "staging"))
    store.protect("team", "resnet", ("staging",), 1)  # the model's own: prod is free here
    await point(store, 1)
    with pytest.raises(FailedPrecondition):
        await point(store, 1, key=AliasKey(MODEL, "staging"))
    await point(store, 1, key=AliasKey(MODEL, "canary"))
