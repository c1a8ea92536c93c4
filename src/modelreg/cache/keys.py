"""Every cache key and Redis name, in one place.

A lookup walks at most three entries of one model: its state, a pointer (alias or
`latest`) and a version. L1 uses the keys as written here; L2 prefixes them with
`mr:{epoch}:` so that bumping the epoch orphans everything written before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TypeVar, assert_never

from modelreg.domain.events import Event, EventKind, Subject
from modelreg.domain.names import LATEST, AliasKey, ModelKey, Reference, VersionKey

S = TypeVar("S", bound=Subject)

# the model's state for lookups: b"A" active, b"D"+error deleted, b"N"+error missing
MODEL_STATE = "M|"
# GetModel's answer: b"V"+encoded model, or b"N"+error
MODEL = "G|"
# alias or `latest` of a model -> b"V"+version number, or b"N"+error
POINTER = "P|"
# one version -> b"V"+encoded version, or b"N"+error
VERSION = "V|"
# L2 only, per model: bumped by every committed write; fills compare-and-set on it
COUNTER = "C|"
# L2 only: the current epoch (see above)
EPOCH = "mr:epoch"
# L2 only: pub/sub channel of keys every process drops from its L1; b"*" drops all
CHANNEL = "mr:invalidate"


def model_id(model: ModelKey) -> str:
    """The model part of every key of that model."""
    return model.short


def state_key(model: ModelKey) -> str:
    return MODEL_STATE + model.short


def model_key(model: ModelKey) -> str:
    return MODEL + model.short


def pointer_key(model: ModelKey, name: str) -> str:
    return f"{POINTER}{model.short}@{name}"


def version_key(model: ModelKey, number: int) -> str:
    return f"{VERSION}{model.short}:{number}"


def pointer_of(ref: Reference) -> str | None:
    """The pointer a reference goes through, or None for a lookup by number."""
    if ref.number is not None:
        return None
    return pointer_key(ref.model, ref.alias or LATEST)


def invalidated_by(committed: Iterable[Event]) -> dict[str, list[str]]:
    """The keys each committed event makes stale, grouped by model."""
    stale: dict[str, list[str]] = defaultdict(list)
    for event in committed:
        keys = stale_keys(event)
        if keys and event.model is not None:  # every cached entry belongs to one model
            stale[model_id(event.model)] += keys
    return dict(stale)


def stale_keys(event: Event) -> list[str]:
    """The cached entries one event makes stale: one row per kind, checked complete by
    tests/unit/test_event_keys.py (and by mypy: a kind without a row fails assert_never)."""
    kind = event.kind
    match kind:
        case (
            EventKind.NAMESPACE_CREATED  # lookups cache nothing about a namespace itself
            | EventKind.FILE_ADDED  # no entry lists a version's files; its row is unchanged
            | EventKind.WEBHOOK_CREATED  # nor anything about subscriptions
            | EventKind.WEBHOOK_DELETED
            | EventKind.WEBHOOK_REDELIVERY_REQUESTED
            # policies and change requests: no lookup reads them (an applied request's
            # move is an ordinary ALIAS_SET event)
            | EventKind.ALIAS_POLICY_SET
            | EventKind.NAMESPACE_ALIAS_POLICY_SET
            | EventKind.CHANGE_REQUEST_CREATED
            | EventKind.CHANGE_REQUEST_APPROVED
            | EventKind.CHANGE_REQUEST_REJECTED
            | EventKind.CHANGE_REQUEST_EXPIRED
            | EventKind.CHANGE_REQUEST_ABORTED
            # nor any grant (the grant cache follows the access events itself:
            # domain/grants.py)
            | EventKind.ACCESS_GRANTED
            | EventKind.ACCESS_REVOKED
            # nor any key (the key cache follows the log itself: KeyCacheApplier)
            | EventKind.KEY_CREATED
            | EventKind.KEY_REVOKED
            # nor lineage (no lookup answer shows it)
            | EventKind.LINEAGE_ADDED
        ):
            return []
        case (
            EventKind.MODEL_CREATED
            | EventKind.MODEL_UPDATED
            | EventKind.MODEL_DELETED
            | EventKind.MODEL_UNDELETED
        ):
            # every walk reads the state first: a deletion needs nothing dropped below it
            model = _subject(event, ModelKey)
            return [state_key(model), model_key(model)]
        case EventKind.VERSION_CREATED:
            # ends a cached NOT_FOUND of the number; GetModel shows the last number allocated
            version = _subject(event, VersionKey)
            return [*_version_entries(event, version), model_key(version.model)]
        case (
            EventKind.VERSION_UPDATED
            | EventKind.VERSION_FINALIZED
            | EventKind.VERSION_FAILED
            | EventKind.VERSION_ARCHIVED
            | EventKind.VERSION_RESTORED
        ):
            return _version_entries(event, _subject(event, VersionKey))
        case EventKind.ALIAS_SET | EventKind.ALIAS_DELETED:
            alias = _subject(event, AliasKey)
            return [pointer_key(alias.model, alias.alias)]
    assert_never(kind)


def _version_entries(event: Event, version: VersionKey) -> list[str]:
    entries = [version_key(version.model, version.number)]
    if event.latest_moved:
        entries.append(pointer_key(version.model, LATEST))
    return entries


def _subject(event: Event, expected: type[S]) -> S:
    subject = event.subject
    if not isinstance(subject, expected):  # Event refuses this at construction already
        raise TypeError(f"a {event.kind} event about a {type(subject).__name__}")
    return subject
