"""Event kind -> stale cache keys: a table held complete (STYLE.md rule 15).

Every kind must have a row here and in `cache/keys.py`; a kind added to
`domain/events.EventKind` without both fails `test_every_kind_maps_to_keys` and
`test_the_table_has_a_row_for_every_kind` (and mypy, at `assert_never`).
"""

from __future__ import annotations

from types import UnionType

import pytest

from modelreg.cache import keys
from modelreg.domain.events import SCOPE, Event, EventKind, Subject, change
from modelreg.domain.names import (
    AliasKey,
    ModelKey,
    NamespaceKey,
    PrincipalKey,
    RegistryKey,
    VersionKey,
    WebhookKey,
)
from modelreg.domain.types import ModelVersion, VersionState
from modelreg.domain.versions import moves_latest

NAMESPACE = NamespaceKey("team")
MODEL = ModelKey("team", "resnet")
VERSION = VersionKey(MODEL, 7)
ALIAS = AliasKey(MODEL, "production")
SAMPLES: dict[type | UnionType, Subject] = {
    NamespaceKey: NAMESPACE,
    SCOPE: NAMESPACE,  # a role binding's scope (a namespace, or RegistryKey: global)
    ModelKey: MODEL,
    VersionKey: VERSION,
    AliasKey: ALIAS,
    PrincipalKey: PrincipalKey("alice"),
    RegistryKey: RegistryKey(),
    WebhookKey: WebhookKey("deploys"),
}

STATE, GET_MODEL = "M|team/resnet", "G|team/resnet"
LATEST, PRODUCTION = "P|team/resnet@latest", "P|team/resnet@production"
NUMBER_7 = "V|team/resnet:7"

# (kind, latest_moved) -> the keys it makes stale; `latest_moved` as the domain sets it
STALE: dict[tuple[EventKind, bool], list[str]] = {
    (EventKind.NAMESPACE_CREATED, False): [],
    (EventKind.MODEL_CREATED, False): [STATE, GET_MODEL],
    (EventKind.MODEL_UPDATED, False): [STATE, GET_MODEL],
    (EventKind.MODEL_DELETED, True): [STATE, GET_MODEL],
    (EventKind.MODEL_UNDELETED, True): [STATE, GET_MODEL],
    (EventKind.VERSION_CREATED, False): [NUMBER_7, GET_MODEL],  # created PENDING
    (EventKind.VERSION_CREATED, True): [NUMBER_7, LATEST, GET_MODEL],  # created READY
    (EventKind.VERSION_UPDATED, False): [NUMBER_7],
    (EventKind.VERSION_FINALIZED, True): [NUMBER_7, LATEST],
    (EventKind.VERSION_FAILED, False): [NUMBER_7],
    (EventKind.VERSION_ARCHIVED, True): [NUMBER_7, LATEST],
    (EventKind.VERSION_RESTORED, True): [NUMBER_7, LATEST],
    (EventKind.FILE_ADDED, False): [],
    (EventKind.ALIAS_SET, False): [PRODUCTION],
    (EventKind.ALIAS_DELETED, False): [PRODUCTION],
    (EventKind.WEBHOOK_CREATED, False): [],
    (EventKind.WEBHOOK_DELETED, False): [],
    (EventKind.WEBHOOK_REDELIVERY_REQUESTED, False): [],
    (EventKind.ALIAS_POLICY_SET, False): [],
    (EventKind.NAMESPACE_ALIAS_POLICY_SET, False): [],
    (EventKind.CHANGE_REQUEST_CREATED, False): [],
    (EventKind.CHANGE_REQUEST_APPROVED, False): [],
    (EventKind.CHANGE_REQUEST_REJECTED, False): [],
    (EventKind.CHANGE_REQUEST_EXPIRED, False): [],
    (EventKind.CHANGE_REQUEST_ABORTED, False): [],
    (EventKind.ACCESS_GRANTED, False): [],
    (EventKind.ACCESS_REVOKED, False): [],
    (EventKind.KEY_CREATED, False): [],  # lookups cache no key (the key cache follows it)
    (EventKind.KEY_REVOKED, False): [],
    (EventKind.LINEAGE_ADDED, False): [],  # no lookup answer shows lineage
}

# What the events table holds: rows written by earlier releases must still read.
STORED_KINDS = {
    "namespace.created",
    "model.created",
    "model.updated",
    "model.deleted",
    "model.undeleted",
    "version.created",
    "version.updated",
    "version.finalized",
    "version.failed",
    "version.archived",
    "version.restored",
    "version.file_added",
    "alias.set",
    "alias.deleted",
    "webhook.created",
    "webhook.deleted",
    "webhook.redelivery_requested",
    "access.granted",
    "access.revoked",
}


def _event(kind: EventKind, *, latest_moved: bool = False) -> Event:
    return Event(kind, SAMPLES[kind.subject_type], "alice", latest_moved=latest_moved)


@pytest.mark.parametrize("kind", list(EventKind), ids=str)
def test_every_kind_maps_to_keys(kind: EventKind) -> None:
    for latest_moved in (False, True):
        stale = keys.stale_keys(_event(kind, latest_moved=latest_moved))
        assert all(isinstance(key, str) and key for key in stale)


def test_the_table_has_a_row_for_every_kind() -> None:
    assert {kind for kind, _ in STALE} == set(EventKind)


@pytest.mark.parametrize(("kind", "latest_moved"), list(STALE), ids=str)
def test_keys_of_each_kind(kind: EventKind, latest_moved: bool) -> None:
    event = _event(kind, latest_moved=latest_moved)
    assert keys.stale_keys(event) == STALE[kind, latest_moved]


def test_stored_kind_strings_never_change() -> None:
    assert {kind.value for kind in EventKind} >= STORED_KINDS


@pytest.mark.parametrize("kind", list(EventKind), ids=str)
def test_an_event_refuses_a_subject_of_another_type(kind: EventKind) -> None:
    for subject in SAMPLES.values():
        if not isinstance(subject, kind.subject_type):
            with pytest.raises(TypeError, match=kind.value):
                Event(kind, subject, "alice", latest_moved=False)


def test_events_keep_the_resource_and_model_the_row_stores() -> None:
    rows = [(e.resource, e.namespace, e.model) for e in map(_event, EventKind)]
    assert set(rows) == {
        ("namespaces/team", "team", None),
        ("namespaces/team/models/resnet", "team", MODEL),
        ("namespaces/team/models/resnet/versions/7", "team", MODEL),
        ("namespaces/team/models/resnet/aliases/production", "team", MODEL),
        ("webhooks/deploys", "", None),
        ("principals/alice", "", None),
    }


def test_invalidated_by_groups_keys_by_model_and_skips_namespaces() -> None:
    other = ModelKey("team", "bert")
    committed = [
        _event(EventKind.NAMESPACE_CREATED),
        _event(EventKind.VERSION_FINALIZED, latest_moved=True),
        Event(EventKind.MODEL_UPDATED, other, "alice", latest_moved=False),
        _event(EventKind.ALIAS_SET),
        _event(EventKind.FILE_ADDED),
    ]
    assert keys.invalidated_by(committed) == {
        "team/resnet": [NUMBER_7, LATEST, PRODUCTION],
        "team/bert": ["M|team/bert", "G|team/bert"],
    }


def _version(state: VersionState) -> ModelVersion:
    return ModelVersion(key=VERSION, state=state)


P, R, F, A = (VersionState.PENDING, VersionState.READY, VersionState.FAILED, VersionState.ARCHIVED)


@pytest.mark.parametrize(
    ("before", "after", "moved"),
    [
        (None, P, False),  # created PENDING
        (None, R, True),  # created READY
        (P, R, True),  # finalized
        (P, F, False),  # failed
        (R, A, True),  # archived
        (A, R, True),  # restored
        (R, R, False),  # metadata updated
        (P, P, False),  # metadata updated, or a file added
    ],
    ids=str,
)
def test_latest_moves_when_a_version_enters_or_leaves_ready(
    before: VersionState | None, after: VersionState, moved: bool
) -> None:
    old = None if before is None else _version(before)
    assert moves_latest(old, _version(after)) is moved


def test_change_snapshots_before_and_after() -> None:
    event = change(
        EventKind.VERSION_FINALIZED,
        VERSION,
        "alice",
        before=_version(P),
        after=_version(R),
        latest_moved=True,
    )
    assert event.before is not None
    assert event.after is not None
    assert (event.before["state"], event.after["state"]) == ("PENDING", "READY")
    assert event.before["key"] == VERSION.name
