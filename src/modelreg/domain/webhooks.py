"""Webhook subscriptions: what they are, the rules their fields obey, the ports they are
stored through, and the use cases behind WebhookService (docs/architecture.md, "Webhooks").

Delivery itself (the loop that follows the change log for each subscription) is in
domain/delivery.py; the HTTP sender that signs and posts is an adapter (webhooks/).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.events import Event, EventKind, change, passes_filter
from modelreg.domain.names import (
    AliasKey,
    ModelKey,
    WebhookKey,
    check_id,
    parse_alias_name,
    parse_model_name,
    parse_namespace_name,
    parse_webhook_key,
)
from modelreg.domain.paging import PageTokens, number_position, page_of, page_size, text_position
from modelreg.domain.rules import check_description
from modelreg.domain.types import Page

SECRET_PREFIX = "whsec_"  # Standard Webhooks: the secret is this, then base64
SECRET_BYTES = 32
MAX_URL = 2048
MAX_FILTER_ENTRIES = 100  # per list of a filter
ACTIVE = "ACTIVE"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WebhookFilter:
    """Which events a subscription receives: the subject in any of the scopes (no scope:
    every subject), and the kind among `kinds` (none: every kind) — as WatchRequest."""

    namespaces: tuple[str, ...] = ()
    models: tuple[ModelKey, ...] = ()
    aliases: tuple[AliasKey, ...] = ()
    kinds: tuple[EventKind, ...] = ()

    def matches(self, event: Event) -> bool:
        """Whether `event` is one this filter lets through (the rule of Watch's)."""
        return passes_filter(
            event,
            namespaces=self.namespaces,
            models=self.models,
            aliases=self.aliases,
            kinds=self.kinds,
        )

    def to_json(self) -> dict[str, list[str]]:
        """The stored form: resource names and kind strings."""
        return {
            "namespaces": [f"namespaces/{ns}" for ns in self.namespaces],
            "models": [m.name for m in self.models],
            "aliases": [a.name for a in self.aliases],
            "kinds": [str(k) for k in self.kinds],
        }

    @classmethod
    def parse(
        cls,
        *,
        namespaces: Sequence[str] = (),
        models: Sequence[str] = (),
        aliases: Sequence[str] = (),
        kinds: Sequence[str] = (),
        field: str = "webhook.filter",
    ) -> WebhookFilter:
        """A filter from resource names and kind strings (InvalidArgument naming the
        entry, e.g. `webhook.filter.models[2]`)."""
        lists = {"namespaces": namespaces, "models": models, "aliases": aliases, "kinds": kinds}
        for name, values in lists.items():
            if len(values) > MAX_FILTER_ENTRIES:
                raise InvalidArgument.field(
                    f"{field}.{name}", f"at most {MAX_FILTER_ENTRIES} entries"
                )
        return cls(
            namespaces=_unique(
                parse_namespace_name(v, f"{field}.namespaces[{i}]")
                for i, v in enumerate(namespaces)
            ),
            models=_unique(
                parse_model_name(v, f"{field}.models[{i}]") for i, v in enumerate(models)
            ),
            aliases=_unique(
                parse_alias_name(v, f"{field}.aliases[{i}]") for i, v in enumerate(aliases)
            ),
            kinds=_unique(_kind(v, f"{field}.kinds[{i}]") for i, v in enumerate(kinds)),
        )

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> WebhookFilter:
        """Read back what to_json stored."""
        return cls.parse(
            namespaces=stored.get("namespaces", ()),
            models=stored.get("models", ()),
            aliases=stored.get("aliases", ()),
            kinds=stored.get("kinds", ()),
        )


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription: where to POST which events, and how far delivery has got."""

    webhook_id: str
    url: str
    filter: WebhookFilter
    description: str = ""
    state: str = ACTIVE
    create_time: datetime | None = None
    delivered_revision: int = 0
    # Who created it, and their groups then: it delivers only the events that principal
    # may read at delivery time (domain/delivery.py).
    created_by: str = ""
    created_groups: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return f"webhooks/{self.webhook_id}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recorded attempt to deliver one event to one subscription."""

    delivery_id: int
    webhook_id: str
    revision: int
    event_index: int
    message_id: str
    kind: str
    attempt: int
    http_status: int
    error: str
    latency_seconds: float
    attempt_time: datetime
    next_attempt_time: datetime | None
    succeeded: bool

    @property
    def name(self) -> str:
        return f"webhooks/{self.webhook_id}/deliveries/{self.delivery_id}"


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """What CreateWebhook asks for, checked."""

    webhook_id: str
    url: str
    filter: WebhookFilter = field(default_factory=WebhookFilter)
    description: str = ""
    created_by: str = ""
    created_groups: frozenset[str] = frozenset()


class WebhookStore(Protocol):
    """Subscriptions as WebhookService reads and writes them."""

    async def create_webhook(self, *, webhook: NewWebhook, secret: bytes, actor: str) -> Webhook:
        """Store it with its cursor at the change log's head (AlreadyExists if the id is
        taken): it gets every change committed after it. Each write of this port appends
        its `webhook_event` in the same transaction."""
        ...

    async def get_webhook(self, *, webhook_id: str) -> Webhook:
        """One subscription (NotFound)."""
        ...

    async def list_webhooks(self, *, after: str | None, limit: int) -> list[Webhook]:
        """Subscriptions in id order after `after`."""
        ...

    async def delete_webhook(self, *, webhook_id: str, actor: str) -> None:
        """Delete it and its log (NotFound); its lease holder's next write is refused."""
        ...

    async def list_deliveries(
        self, *, webhook_id: str, before: int | None, limit: int
    ) -> list[Delivery]:
        """Attempts of one subscription, newest first, below the id `before`."""
        ...

    async def get_delivery(self, *, webhook_id: str, delivery_id: int) -> Delivery:
        """One attempt (NotFound)."""
        ...

    async def rewind(self, *, webhook_id: str, revision: int, actor: str) -> Webhook:
        """Move the cursor back to `revision` (never forward) and count the rewind, which
        the lease holder sees at its next renew (NotFound)."""
        ...

    async def queue_redelivery(
        self, *, webhook_id: str, revision: int, event_index: int, actor: str
    ) -> None:
        """Ask the lease holder to send one event again."""
        ...


class Webhooks:
    """The WebhookService use cases."""

    def __init__(
        self,
        *,
        store: WebhookStore,
        tokens: PageTokens,
        on_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        # Wakes this process's dispatcher: claim a new subscription, or act on a
        # redelivery now (other processes see it within a third of the lease).
        self._on_changed = on_changed

    async def create(
        self,
        *,
        webhook_id: str,
        url: str,
        filter: WebhookFilter,
        description: str,
        created_by: str = "",
        created_groups: frozenset[str] = frozenset(),
        actor: str,
    ) -> tuple[Webhook, str]:
        """Create a subscription; returns it and its secret (`whsec_...`), shown once."""
        draft = NewWebhook(
            webhook_id=check_id(webhook_id, "webhook_id") if webhook_id else _new_id(),
            url=check_url(url, "webhook.url"),
            filter=filter,
            description=check_description(description, "webhook.description"),
            created_by=created_by,
            created_groups=created_groups,
        )
        secret = secrets.token_bytes(SECRET_BYTES)
        created = await self._store.create_webhook(webhook=draft, secret=secret, actor=actor)
        self._on_changed()
        return created, secret_text(secret)

    async def get(self, *, webhook_id: str) -> Webhook:
        """One subscription."""
        return await self._store.get_webhook(webhook_id=webhook_id)

    async def list(self, *, size: int, token: str) -> Page[Webhook]:
        """Subscriptions in id order, a page at a time."""
        limit = page_size(size)
        after = self._tokens.decode(token, "webhooks", text_position)
        items = await self._store.list_webhooks(after=after, limit=limit + 1)
        return page_of(items, limit, lambda last: self._tokens.encode("webhooks", last.webhook_id))

    async def delete(self, *, webhook_id: str, actor: str) -> None:
        """Delete a subscription; nothing more is sent to it."""
        await self._store.delete_webhook(webhook_id=webhook_id, actor=actor)

    async def deliveries(self, *, webhook_id: str, size: int, token: str) -> Page[Delivery]:
        """A subscription's attempts, newest first, a page at a time."""
        limit = page_size(size)
        query = ["deliveries", webhook_id]
        before = self._tokens.decode(token, query, number_position)
        await self._store.get_webhook(webhook_id=webhook_id)  # NotFound for an unknown one
        items = await self._store.list_deliveries(
            webhook_id=webhook_id, before=before, limit=limit + 1
        )
        return page_of(items, limit, lambda last: self._tokens.encode(query, last.delivery_id))

    async def redeliver_one(self, *, webhook_id: str, delivery_id: int, actor: str) -> Webhook:
        """Send the event of one past delivery again."""
        past = await self._store.get_delivery(webhook_id=webhook_id, delivery_id=delivery_id)
        await self._store.queue_redelivery(
            webhook_id=webhook_id,
            revision=past.revision,
            event_index=past.event_index,
            actor=actor,
        )
        self._on_changed()
        return await self._store.get_webhook(webhook_id=webhook_id)

    async def redeliver_from(self, *, webhook_id: str, revision: int, actor: str) -> Webhook:
        """Send every matching event from `revision` on again, in order."""
        if revision < 1:
            raise InvalidArgument.field("from_revision", "must be at least 1")
        rewound = await self._store.rewind(
            webhook_id=webhook_id, revision=revision - 1, actor=actor
        )
        self._on_changed()
        return rewound


def webhook_event(
    kind: EventKind,
    webhook_id: str,
    actor: str,
    *,
    before: Webhook | None = None,
    after: Webhook | Mapping[str, Any] | None = None,
) -> Event:
    """The audit event of a write to a subscription (a Webhook holds no secret, so its
    snapshot cannot leak one)."""
    return change(
        kind, WebhookKey(webhook_id), actor, before=before, after=after, latest_moved=False
    )


def check_url(url: str, field: str) -> str:
    """An http(s) URL with a host and without credentials (they would be stored and
    shown in the clear; put them in the receiver's own check of the signature)."""
    if not url:
        raise InvalidArgument.field(field, "a URL is required")
    if len(url) > MAX_URL:
        raise InvalidArgument.field(field, f"at most {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidArgument.field(field, "must not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise InvalidArgument.field(field, f"is not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument.field(field, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidArgument.field(field, "must name a host")
    _check_host(parts.hostname, field)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument.field(field, "must not hold a user name or password")
    if parts.fragment:
        raise InvalidArgument.field(field, "must not have a #fragment")
    return url


def _check_host(host: str, field: str) -> None:
    """A host name the sender can resolve: an IP literal, or labels of 1 to 63 characters
    that encode to IDNA (what the HTTP client does before it connects)."""
    if host.startswith("[") or ":" in host:
        return  # an IPv6 literal; urlsplit has checked its brackets
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        raise InvalidArgument.field(
            field, "must name a valid host (labels of 1 to 63 characters, no empty one)"
        ) from exc
    if len(encoded.rstrip(b".")) > 253:
        raise InvalidArgument.field(field, "must name a host of at most 253 characters")


def parse_webhook_name(name: str, field: str = "name") -> str:
    """`webhooks/{webhook_id}` -> webhook_id."""
    return parse_webhook_key(name, field).webhook_id


def parse_delivery_name(name: str, field: str = "delivery") -> tuple[str, int]:
    """`webhooks/{webhook_id}/deliveries/{delivery_id}` -> (webhook_id, delivery_id)."""
    parts = name.split("/")
    shape = "must be webhooks/{webhook_id}/deliveries/{delivery_id}"
    if len(parts) != 4 or parts[0] != "webhooks" or parts[2] != "deliveries":
        raise InvalidArgument.field(field, shape)
    number = parts[3]
    if not (number.isascii() and number.isdigit()) or len(number) > 18 or number[0] == "0":
        raise InvalidArgument.field(field, shape)
    return check_id(parts[1], field, "webhook id"), int(number)


def secret_text(secret: bytes) -> str:
    """The Standard Webhooks form of a secret: `whsec_` then base64."""
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def message_id(webhook_id: str, revision: int, event_index: int) -> str:
    """The `webhook-id` of one event to one subscription: the same on every attempt and
    every redelivery, so a receiver can drop duplicates by it."""
    return f"msg_{webhook_id}_{revision}_{event_index}"


def _new_id() -> str:
    return f"wh-{secrets.token_hex(6)}"


def _kind(value: str, field: str) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:
        known = ", ".join(k.value for k in EventKind)
        raise InvalidArgument.field(field, f"unknown event kind; one of {known}") from None


def _unique(values: Iterable[T]) -> tuple[T, ...]:
    return tuple(dict.fromkeys(values))
