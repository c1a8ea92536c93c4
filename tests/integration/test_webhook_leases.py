"""The webhook lease in PostgreSQL (store/webhooks.py) against a real database, with
holders driven directly: the fencing token is never reused, so a holder of a deleted
subscription is refused every write on a subscription created again with the same id."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from modelreg.domain.delivery import Answer, Attempt, Undeliverable
from modelreg.domain.webhooks import NewWebhook
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.store.webhooks import PostgresDeliveryStore, PostgresWebhookStore, SecretBox
from tests.conftest import DatabaseFactory


@dataclass
class Stores:
    webhooks: PostgresWebhookStore
    deliveries: PostgresDeliveryStore
    pool: asyncpg.Pool


@pytest.fixture
async def stores(new_database: DatabaseFactory) -> AsyncIterator[Stores]:
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(url, min_size=1, max_size=4)
    box = SecretBox(os.urandom(32))
    try:
        yield Stores(
            PostgresWebhookStore(pool, box, PostgresStore(pool)),
            PostgresDeliveryStore(pool, box),
            pool,
        )
    finally:
        await pool.close()


def _attempt(attempt: int) -> Attempt:
    return Attempt(1, 0, "msg_w_1_0", "namespace.created", attempt, Answer(500), 0.01, 1.0)


async def test_a_holder_of_a_deleted_subscription_is_fenced_off_its_recreation(
    stores: Stores,
) -> None:
    new = NewWebhook(webhook_id="w", url="http://hooks.example/w")
    await stores.webhooks.create_webhook(webhook=new, secret=b"s" * 32, actor="t")
    old = await stores.deliveries.claim(webhook_id="w", owner="a", seconds=30)
    assert old is not None
    await stores.webhooks.delete_webhook(webhook_id="w", actor="t")
    await stores.webhooks.create_webhook(webhook=new, secret=b"t" * 32, actor="t")
    violations = 0
    for round_ in range(3):  # each claim of the new row must mint a token never held before
        current = await stores.deliveries.claim(webhook_id="w", owner=f"b{round_}", seconds=30)
        assert current is not None
        assert current.token != old.token
        violations += await stores.deliveries.renew(lease=old, seconds=30) is not None
        violations += await stores.deliveries.record(lease=old, attempt=_attempt(1), seconds=30)
        violations += await stores.deliveries.advance(lease=old, revision=99, rewinds=0)
        violations += await stores.deliveries.cursor(lease=old) is not None
        assert await stores.deliveries.renew(lease=current, seconds=30) == 0
        assert await stores.deliveries.record(lease=current, attempt=_attempt(2), seconds=30)
        await stores.deliveries.release(lease=current)
    assert violations == 0
    owners = await stores.pool.fetch("SELECT owner FROM webhook_deliveries ORDER BY delivery_id")
    assert [r["owner"] for r in owners] == ["b0", "b1", "b2"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("UPDATE webhooks SET secret = '\\x00'::bytea || secret", "secret does not open"),
        ("""UPDATE webhooks SET filter = '{"kinds": ["model.exploded"]}'""", "filter"),
    ],
    ids=["secret", "filter"],
)
async def test_a_claim_that_cannot_read_its_subscription_gives_the_lease_back(
    stores: Stores, damage: str, reason: str
) -> None:
    new = NewWebhook(webhook_id="w", url="http://hooks.example/w")
    await stores.webhooks.create_webhook(webhook=new, secret=b"s" * 32, actor="t")
    await stores.pool.execute(damage)
    with pytest.raises(Undeliverable, match=reason):
        await stores.deliveries.claim(webhook_id="w", owner="a", seconds=30)
    owner = await stores.pool.fetchval("SELECT lease_owner FROM webhooks")
    assert owner is None  # free for a process that can read it, at once
    assert await stores.deliveries.claimable() == ["w"]
