"""The outbox's events: every kind, what each is about, and the JSON snapshots stored
as before/after.

An event names its subject with a typed key (a namespace, model, version or alias),
and says whether the mutation may have changed what `latest` resolves to: the domain
rule that made the change decides that, so followers of the log (cache invalidation
in cache/keys.py, and later Watch streams and webhooks) act on types, never on the
spelling of a resource name.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import UnionType
from typing import Any, TypeAlias

from modelreg.domain.names import (
    AliasKey,
    ModelKey,
    NamespaceKey,
    PrincipalKey,
    RegistryKey,
    VersionKey,
    WebhookKey,
)

# PrincipalKey, RegistryKey and WebhookKey are subjects of events about what belongs to no
# namespace (keys, global grants, subscriptions): their events' namespace is "".
Subject: TypeAlias = (
    NamespaceKey | ModelKey | VersionKey | AliasKey | PrincipalKey | RegistryKey | WebhookKey
)
# A role binding's scope: one namespace, or the whole registry (a global binding).
SCOPE = NamespaceKey | RegistryKey


class EventKind(enum.StrEnum):
    """Every kind of event; the values are what the `events.kind` column stores, so they
    never change (rows written by earlier releases must still read)."""

    NAMESPACE_CREATED = "namespace.created"
    MODEL_CREATED = "model.created"
    MODEL_UPDATED = "model.updated"
    MODEL_DELETED = "model.deleted"
    MODEL_UNDELETED = "model.undeleted"
    VERSION_CREATED = "version.created"
    VERSION_UPDATED = "version.updated"
    VERSION_FINALIZED = "version.finalized"
    VERSION_FAILED = "version.failed"
    VERSION_ARCHIVED = "version.archived"
    VERSION_RESTORED = "version.restored"
    # a file joined a PENDING version: the subject is the version, the file is in `after`
    FILE_ADDED = "version.file_added"
    ALIAS_SET = "alias.set"
    ALIAS_DELETED = "alias.deleted"
    # webhook subscriptions (their snapshots never hold the secret)
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_DELETED = "webhook.deleted"
    # a redelivery was asked for: one past delivery, or every event from a revision on
    WEBHOOK_REDELIVERY_REQUESTED = "webhook.redelivery_requested"
    # protected aliases (domain/approvals.py): policies, and change requests about an alias
    ALIAS_POLICY_SET = "alias_policy.set"
    NAMESPACE_ALIAS_POLICY_SET = "alias_policy.namespace_set"
    CHANGE_REQUEST_CREATED = "change_request.created"
    CHANGE_REQUEST_APPROVED = "change_request.approved"
    CHANGE_REQUEST_REJECTED = "change_request.rejected"
    CHANGE_REQUEST_EXPIRED = "change_request.expired"
    CHANGE_REQUEST_ABORTED = "change_request.aborted"
    # a role binding was made or removed: the subject is its scope, the binding is in
    # `after` (granted) or `before` (revoked)
    ACCESS_GRANTED = "access.granted"
    ACCESS_REVOKED = "access.revoked"
    # an API key was made or revoked: the subject is its principal, the key's public
    # record (key_id, never the secret nor its hash) is in `after`
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    # a lineage edge was recorded: the subject is the version it goes from, the edge's
    # kind and target are in `after` (domain/lineage.py)
    LINEAGE_ADDED = "lineage.added"

    @property
    def subject_type(self) -> type[Subject] | UnionType:
        """The type of key every event of this kind is about."""
        return _SUBJECT_TYPES[self]


_SUBJECT_TYPES: Mapping[EventKind, type[Subject] | UnionType] = {
    EventKind.NAMESPACE_CREATED: NamespaceKey,
    EventKind.MODEL_CREATED: ModelKey,
    EventKind.MODEL_UPDATED: ModelKey,
    EventKind.MODEL_DELETED: ModelKey,
    EventKind.MODEL_UNDELETED: ModelKey,
    EventKind.VERSION_CREATED: VersionKey,
    EventKind.VERSION_UPDATED: VersionKey,
    EventKind.VERSION_FINALIZED: VersionKey,
    EventKind.VERSION_FAILED: VersionKey,
    EventKind.VERSION_ARCHIVED: VersionKey,
    EventKind.VERSION_RESTORED: VersionKey,
    EventKind.FILE_ADDED: VersionKey,
    EventKind.ALIAS_SET: AliasKey,
    EventKind.ALIAS_DELETED: AliasKey,
    EventKind.WEBHOOK_CREATED: WebhookKey,
    EventKind.WEBHOOK_DELETED: WebhookKey,
    EventKind.WEBHOOK_REDELIVERY_REQUESTED: WebhookKey,
    EventKind.ALIAS_POLICY_SET: ModelKey,
    EventKind.NAMESPACE_ALIAS_POLICY_SET: NamespaceKey,
    EventKind.CHANGE_REQUEST_CREATED: AliasKey,
    EventKind.CHANGE_REQUEST_APPROVED: AliasKey,
    EventKind.CHANGE_REQUEST_REJECTED: AliasKey,
    EventKind.CHANGE_REQUEST_EXPIRED: AliasKey,
    EventKind.CHANGE_REQUEST_ABORTED: AliasKey,
    EventKind.ACCESS_GRANTED: SCOPE,
    EventKind.ACCESS_REVOKED: SCOPE,
    EventKind.KEY_CREATED: PrincipalKey,
    EventKind.KEY_REVOKED: PrincipalKey,
    EventKind.LINEAGE_ADDED: VersionKey,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the event log (outbox), written in the mutation's transaction.

    `latest_moved`: after this event, a lookup of the model's latest READY version may
    answer differently — a version entered or left READY, or the model was deleted or
    restored. The rule that made the change decides it, and every event must say it
    (no default: a forgotten True would leave followers serving an old `latest`). It is
    stored with the row (migration 0007) so followers in other processes read it back.
    """

    kind: EventKind
    subject: Subject
    actor: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    latest_moved: bool = field(kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.subject, self.kind.subject_type):
            raise TypeError(
                f"a {self.kind} event is about a {_type_name(self.kind.subject_type)},"
                f" not a {type(self.subject).__name__}"
            )

    @property
    def resource(self) -> str:
        """The subject's resource name, as stored in the row."""
        return self.subject.name

    @property
    def model(self) -> ModelKey | None:
        """The model the subject belongs to; None for a namespace."""
        return model_of(self.subject)

    @property
    def namespace(self) -> str:
        """The namespace the subject belongs to ("" for what belongs to none)."""
        return namespace_of(self.subject)


def _type_name(kind: type[Subject] | UnionType) -> str:
    if isinstance(kind, UnionType):
        return " or ".join(each.__name__ for each in kind.__args__)
    return kind.__name__


def passes_filter(
    event: Event,
    *,
    namespaces: Collection[str],
    models: Collection[ModelKey],
    aliases: Collection[AliasKey],
    kinds: Collection[EventKind],
) -> bool:
    """The one event filter of Watch streams and webhooks: the event's subject is in any
    of the scopes (no scope: every subject) and, if `kinds` is not empty, its kind is one
    of them. Matching is on the typed subject, never on the spelling of its name.

    Events that belong to no namespace (webhooks, keys, global grants) are about running
    the registry, not its models: they pass only a filter that names their kind, so a
    subscription never hears of its own creation unless it asks to."""
    if kinds and event.kind not in kinds:
        return False
    if not event.namespace:
        return bool(kinds)
    if not (namespaces or models or aliases):
        return True
    return event.namespace in namespaces or event.model in models or event.subject in aliases


def namespace_of(subject: Subject) -> str:
    """The namespace a subject belongs to ("" for a principal, the registry, a webhook)."""
    match subject:
        case VersionKey() | AliasKey():
            return subject.model.namespace
        case NamespaceKey() | ModelKey():
            return subject.namespace
        case PrincipalKey() | RegistryKey() | WebhookKey():
            return ""


def model_of(subject: Subject) -> ModelKey | None:
    """The model a subject belongs to (itself, for a model); None for what belongs to no
    model (a namespace, a principal, the registry, a webhook)."""
    match subject:
        case NamespaceKey() | PrincipalKey() | RegistryKey() | WebhookKey():
            return None
        case ModelKey():
            return subject
        case VersionKey() | AliasKey():
            return subject.model


def change(
    kind: EventKind,
    subject: Subject,
    actor: str,
    *,
    before: Any = None,
    after: Any = None,
    latest_moved: bool,
) -> Event:
    """An event about `subject`, with snapshots of its state before and after."""
    return Event(
        kind,
        subject,
        actor,
        before=None if before is None else snapshot(before),
        after=None if after is None else snapshot(after),
        latest_moved=latest_moved,
    )


def snapshot(value: Any) -> dict[str, Any]:
    """A JSON-ready dict of a resource dataclass, for an event's before/after."""
    result = _plain(value)
    if not isinstance(result, dict):
        raise TypeError(f"cannot snapshot {type(value).__name__}")
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, ModelKey | VersionKey | AliasKey):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):  # a snapshot is the same whatever the set's order
        return sorted(_plain(v) for v in value)
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, datetime):
        return value.isoformat()
    return value
