"""Webhook subscriptions in PostgreSQL (migrations/0009_webhooks.sql): the WebhookStore
port for WebhookService and the DeliveryStore port for the lease holder.

Secrets are sealed with AES-256-GCM (the `cryptography` package) under the deployment's
webhook key, kept in server_secrets like the page-token key; the webhook id is the
associated data. A dump of the webhooks table alone does not reveal them; whoever can
read server_secrets as well can (the same trust as the page-token key).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelreg.domain.delivery import Attempt, Lease, Redelivery, Undeliverable
from modelreg.domain.errors import AlreadyExists, InvalidArgument, NotFound
from modelreg.domain.events import Event, EventKind
from modelreg.domain.webhooks import (
    ACTIVE,
    Delivery,
    NewWebhook,
    Webhook,
    WebhookFilter,
    webhook_event,
)
from modelreg.store.errors import translated
from modelreg.store.postgres import PostgresStore

log = logging.getLogger(__name__)

KEY_NAME = "webhook_secrets"  # the server_secrets row whose value seals webhook secrets
_NONCE = 12
_COLUMNS = """webhook_id, url, filter, description, state, create_time, delivered_revision,
created_by, created_groups"""
_HEAD = "(SELECT coalesce(max(revision), 0) FROM events WHERE revision IS NOT NULL)"
_INSERT = f"""
INSERT INTO webhooks (webhook_id, url, filter, description, secret, delivered_revision,
                      created_by, created_groups)
VALUES ($1, $2, $3, $4, $5, {_HEAD}, $6, $7) RETURNING {_COLUMNS}"""
_GET = f"SELECT {_COLUMNS} FROM webhooks WHERE webhook_id = $1"
_LIST = f"""SELECT {_COLUMNS} FROM webhooks WHERE $1::text IS NULL OR webhook_id > $1
ORDER BY webhook_id LIMIT $2"""
_DELETE = f"DELETE FROM webhooks WHERE webhook_id = $1 RETURNING {_COLUMNS}"
_DELIVERY_COLUMNS = """delivery_id, webhook_id, revision, event_index, message_id, kind,
attempt, http_status, error, latency_seconds, attempt_time, next_attempt_time, succeeded"""
_DELIVERIES = f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE webhook_id = $1 AND ($2::bigint IS NULL OR delivery_id < $2)
ORDER BY delivery_id DESC LIMIT $3"""
_DELIVERY = f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries
WHERE webhook_id = $1 AND delivery_id = $2"""
# A rewind leaves the lease with its holder (no second sender while its request is in
# flight); the holder learns of it from the count, at its next renew or advance.
_REWIND = f"""UPDATE webhooks SET delivered_revision = least(delivered_revision, $2),
rewinds = rewinds + 1 WHERE webhook_id = $1 RETURNING {_COLUMNS}"""
_QUEUE = """INSERT INTO webhook_redeliveries (webhook_id, revision, event_index)
SELECT webhook_id, $2, $3 FROM webhooks WHERE webhook_id = $1"""

_CLAIMABLE = """SELECT webhook_id FROM webhooks
WHERE state = 'ACTIVE' AND (lease_owner IS NULL OR lease_until < now()) ORDER BY webhook_id"""
_CLAIM = f"""UPDATE webhooks SET lease_owner = $2, lease_until = now() + $3 * interval '1 second',
lease_token = nextval('webhook_lease_tokens')
WHERE webhook_id = $1 AND state = 'ACTIVE' AND (lease_owner IS NULL OR lease_until < now())
RETURNING {_COLUMNS}, secret, lease_token, rewinds"""
_RENEW = """UPDATE webhooks SET lease_until = now() + $3 * interval '1 second'
WHERE webhook_id = $1 AND lease_token = $2 RETURNING rewinds"""
_CURSOR = """SELECT delivered_revision, rewinds FROM webhooks
WHERE webhook_id = $1 AND lease_token = $2"""
# Touches the subscription's row only while the lease is held.
_HELD_CHECK = (
    "UPDATE webhooks SET lease_token = lease_token WHERE webhook_id = $1 AND lease_token = $2"
)
_HELD = "SELECT webhook_id FROM webhooks WHERE webhook_id = $1 AND lease_token = $2"
_RECORD = """WITH held AS (
    UPDATE webhooks SET lease_until = now() + $3 * interval '1 second'
    WHERE webhook_id = $1 AND lease_token = $2 RETURNING webhook_id
)
INSERT INTO webhook_deliveries (webhook_id, revision, event_index, message_id, kind, attempt,
    http_status, error, latency_seconds, next_attempt_time, succeeded, owner)
SELECT webhook_id, $4, $5, $6, $7, $8, $9, $10, $11,
    now() + $12 * interval '1 second', $13, $14 FROM held"""
_ADVANCE = """UPDATE webhooks SET delivered_revision = greatest(delivered_revision, $3)
WHERE webhook_id = $1 AND lease_token = $2 AND rewinds = $4"""
_QUEUED = f"""SELECT redelivery_id, revision, event_index FROM webhook_redeliveries
WHERE webhook_id = $1 AND EXISTS ({_HELD}) ORDER BY redelivery_id LIMIT $3"""
_DEQUEUE = f"""DELETE FROM webhook_redeliveries
WHERE redelivery_id = $3 AND webhook_id = $1 AND EXISTS ({_HELD})"""
_RELEASE = """UPDATE webhooks SET lease_owner = NULL, lease_until = NULL
WHERE webhook_id = $1 AND lease_token = $2"""
_PRUNE = f"""DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND EXISTS ({_HELD})
AND delivery_id <= (SELECT delivery_id FROM webhook_deliveries WHERE webhook_id = $1
                    ORDER BY delivery_id DESC OFFSET $3 LIMIT 1)"""
_LAST_ATTEMPT = """SELECT coalesce(max(attempt), 0) FROM webhook_deliveries
WHERE webhook_id = $1 AND message_id = $2"""
_EVENT_TIME = "SELECT min(time) FROM events WHERE revision = $1"


class SecretBox:
    """Seals and opens webhook secrets under the deployment's key (32 bytes)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, webhook_id: str, secret: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, secret, webhook_id.encode())

    def open(self, webhook_id: str, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], webhook_id.encode())


class PostgresWebhookStore:
    """The WebhookStore port: reads on the primary's pool, writes in the store's
    transactions, each with its audit event (so they are in the change log too)."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox, store: PostgresStore) -> None:
        self._pool, self._box, self._store = pool, box, store

    async def create_webhook(self, *, webhook: NewWebhook, secret: bytes, actor: str) -> Webhook:
        sealed = self._box.seal(webhook.webhook_id, secret)
        args = (
            webhook.url,
            webhook.filter.to_json(),
            webhook.description,
            sealed,
            webhook.created_by,
            sorted(webhook.created_groups),
        )
        async with self._store.transaction() as tx:
            try:
                row = await tx.connection.fetchrow(_INSERT, webhook.webhook_id, *args)
            except asyncpg.UniqueViolationError as exc:
                raise AlreadyExists(f"webhooks/{webhook.webhook_id}") from exc
            created = webhook_of(row)
            await tx.append_event(
                event=webhook_event(
                    EventKind.WEBHOOK_CREATED, created.webhook_id, actor, after=created
                )
            )
        return created

    async def get_webhook(self, *, webhook_id: str) -> Webhook:
        async with translated():
            row = await self._pool.fetchrow(_GET, webhook_id)
        if row is None:
            raise NotFound(f"webhooks/{webhook_id}")
        return webhook_of(row)

    async def list_webhooks(self, *, after: str | None, limit: int) -> list[Webhook]:
        async with translated():
            rows = await self._pool.fetch(_LIST, after, limit)
        return [webhook_of(row) for row in rows]

    async def delete_webhook(self, *, webhook_id: str, actor: str) -> None:
        async with self._store.transaction() as tx:
            row = await tx.connection.fetchrow(_DELETE, webhook_id)
            if row is None:
                raise NotFound(f"webhooks/{webhook_id}")
            event = webhook_event(
                EventKind.WEBHOOK_DELETED, webhook_id, actor, before=webhook_of(row)
            )
            await tx.append_event(event=event)

    async def list_deliveries(
        self, *, webhook_id: str, before: int | None, limit: int
    ) -> list[Delivery]:
        async with translated():
            rows = await self._pool.fetch(_DELIVERIES, webhook_id, before, limit)
        return [delivery_of(row) for row in rows]

    async def get_delivery(self, *, webhook_id: str, delivery_id: int) -> Delivery:
        async with translated():
            row = await self._pool.fetchrow(_DELIVERY, webhook_id, delivery_id)
        if row is None:
            raise NotFound(f"webhooks/{webhook_id}/deliveries/{delivery_id}")
        return delivery_of(row)

    async def rewind(self, *, webhook_id: str, revision: int, actor: str) -> Webhook:
        async with self._store.transaction() as tx:
            row = await tx.connection.fetchrow(_REWIND, webhook_id, revision)
            if row is None:
                raise NotFound(f"webhooks/{webhook_id}")
            rewound = webhook_of(row)
            asked = {"from_revision": revision + 1}
            await tx.append_event(event=_redelivery(webhook_id, actor, asked))
        return rewound

    async def queue_redelivery(
        self, *, webhook_id: str, revision: int, event_index: int, actor: str
    ) -> None:
        async with self._store.transaction() as tx:
            status = await tx.connection.execute(_QUEUE, webhook_id, revision, event_index)
            if status == "INSERT 0 0":
                raise NotFound(f"webhooks/{webhook_id}")
            asked = {"revision": revision, "event_index": event_index}
            await tx.append_event(event=_redelivery(webhook_id, actor, asked))


def _redelivery(webhook_id: str, actor: str, asked: dict[str, int]) -> Event:
    return webhook_event(EventKind.WEBHOOK_REDELIVERY_REQUESTED, webhook_id, actor, after=asked)


class PostgresDeliveryStore:
    """The DeliveryStore port on the primary's pool: every write of a holder is
    conditioned on its lease token."""

    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self._pool, self._box = pool, box

    async def claimable(self) -> list[str]:
        async with translated():
            rows = await self._pool.fetch(_CLAIMABLE)
        return [row["webhook_id"] for row in rows]

    async def claim(self, *, webhook_id: str, owner: str, seconds: float) -> Lease | None:
        async with translated():
            row = await self._pool.fetchrow(_CLAIM, webhook_id, owner, seconds)
        if row is None:
            return None
        try:
            webhook = webhook_of(row)
            secret = self._box.open(webhook_id, row["secret"])
        except (InvalidArgument, InvalidTag) as exc:
            async with translated():
                await self._pool.execute(_RELEASE, webhook_id, row["lease_token"])
            if isinstance(exc, InvalidArgument):
                raise Undeliverable(f"its stored filter does not read: {exc.message}") from exc
            raise Undeliverable(
                f"its secret does not open with this deployment's key (was server_secrets"
                f" {KEY_NAME!r} replaced?); delete and create the webhook again"
            ) from exc
        return Lease(webhook, secret, row["lease_token"], owner, row["rewinds"])

    async def renew(self, *, lease: Lease, seconds: float) -> int | None:
        async with translated():
            rewinds: int | None = await self._pool.fetchval(
                _RENEW, lease.webhook.webhook_id, lease.token, seconds
            )
        return rewinds

    async def cursor(self, *, lease: Lease) -> tuple[int, int] | None:
        async with translated():
            row = await self._pool.fetchrow(_CURSOR, lease.webhook.webhook_id, lease.token)
        return None if row is None else (row["delivered_revision"], row["rewinds"])

    async def record(self, *, lease: Lease, attempt: Attempt, seconds: float) -> bool:
        answer = attempt.answer
        return await self._write(
            _RECORD,
            lease,
            seconds,
            attempt.revision,
            attempt.event_index,
            attempt.message_id,
            attempt.kind,
            attempt.attempt,
            answer.status,
            answer.error[:1000],
            attempt.latency_seconds,
            attempt.next_attempt_seconds,
            answer.succeeded,
            lease.owner,
        )

    async def advance(self, *, lease: Lease, revision: int, rewinds: int) -> bool:
        return await self._write(_ADVANCE, lease, revision, rewinds)

    async def queued(self, *, lease: Lease, limit: int) -> list[Redelivery]:
        async with translated():
            rows = await self._pool.fetch(_QUEUED, lease.webhook.webhook_id, lease.token, limit)
        return [Redelivery(r["redelivery_id"], r["revision"], r["event_index"]) for r in rows]

    async def dequeue(self, *, lease: Lease, redelivery_id: int) -> bool:
        if not await self._write(_HELD_CHECK, lease):
            return False
        await self._write(_DEQUEUE, lease, redelivery_id)
        return True

    async def release(self, *, lease: Lease) -> None:
        await self._write(_RELEASE, lease)

    async def prune(self, *, lease: Lease, keep: int) -> None:
        await self._write(_PRUNE, lease, keep)

    async def last_attempt(self, *, lease: Lease, message_id: str) -> int:
        async with translated():
            found: int = await self._pool.fetchval(
                _LAST_ATTEMPT, lease.webhook.webhook_id, message_id
            )
        return found

    async def event_time(self, *, revision: int) -> datetime:
        async with translated():
            time: datetime = await self._pool.fetchval(_EVENT_TIME, revision)
        return time

    async def _write(self, sql: str, lease: Lease, *args: Any) -> bool:
        """Run a statement guarded by the lease; whether it touched a row."""
        async with translated():
            status: str = await self._pool.execute(
                sql, lease.webhook.webhook_id, lease.token, *args
            )
        return not status.endswith(" 0")


def webhook_of(row: asyncpg.Record) -> Webhook:
    return Webhook(
        webhook_id=row["webhook_id"],
        url=row["url"],
        filter=WebhookFilter.from_json(row["filter"]),
        description=row["description"],
        state=row["state"] or ACTIVE,
        create_time=row["create_time"],
        delivered_revision=row["delivered_revision"],
        created_by=row["created_by"],
        created_groups=frozenset(row["created_groups"]),
    )


def delivery_of(row: asyncpg.Record) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        revision=row["revision"],
        event_index=row["event_index"],
        message_id=row["message_id"],
        kind=row["kind"],
        attempt=row["attempt"],
        http_status=row["http_status"],
        error=row["error"],
        latency_seconds=row["latency_seconds"],
        attempt_time=row["attempt_time"],
        next_attempt_time=row["next_attempt_time"],
        succeeded=row["succeeded"],
    )
