"""Webhooks against a real HTTP receiver on loopback (tests/integration/receiver.py) and
real modelreg servers, in-process and as `modelreg serve` processes sharing a database:
every matching event arrives at least once, in commit order, signed (checked with the
Standard Webhooks library), duplicates carry the same webhook-id and body, nothing is
lost across a SIGKILL mid-delivery, and no two processes deliver one subscription at
the same time (the receiver counts overlapping requests; zero)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import webhook_service_pb2 as wh
from modelreg.v1 import webhook_service_pb2_grpc as wh_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import authed_channel, make_model, make_version
from tests.integration.receiver import FAIL, HANG, Receiver, payload, retry_after
from tests.integration.serverproc import ServerProcess
from tests.integration.test_push_pull import run_cli

M = "namespaces/default/models/m"
# Short on purpose, so retries and a takeover after SIGKILL fit in a few seconds.
FAST = {
    # The timeout is a quarter of the lease (config.py requires at most half), so a
    # renew delayed by a loaded machine still leaves the request inside its lease.
    "webhooks_lease_seconds": 4.0,
    "webhooks_timeout_seconds": 1.0,
    "webhooks_first_backoff_seconds": 0.1,
    "webhooks_max_backoff_seconds": 0.4,
}


@dataclass
class Hooked:
    """A server (or several) on a database of its own, with stubs and a direct
    connection."""

    db: asyncpg.Connection
    registry: rs_grpc.RegistryServiceAsyncStub
    webhooks: wh_grpc.WebhookServiceAsyncStub
    running: RunningServer | None = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.up()
    yield found
    await found.down()


@pytest.fixture
async def hooked(
    new_database: DatabaseFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Hooked]:
    """An in-process server with fast webhook settings (and any a test gives as its
    parameter) on a fresh database (the shared test server's dispatcher, with its 30 s
    lease, must not claim these subscriptions)."""
    url = await new_database()
    given = getattr(request, "param", {})
    settings = Settings(
        address="127.0.0.1:0", postgres_url=url, home=tmp_path, grace_seconds=1, **FAST | given
    )
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        channel = await stack.enter_async_context(authed_channel(f"127.0.0.1:{running.port}"))
        db = await asyncpg.connect(url)
        stack.push_async_callback(db.close)
        yield Hooked(
            db, rs_grpc.RegistryServiceStub(channel), wh_grpc.WebhookServiceStub(channel), running
        )


async def _subscribe(
    stub: wh_grpc.WebhookServiceAsyncStub,
    receiver: Receiver,
    webhook_id: str,
    webhook_filter: wh.WebhookFilter | None = None,
) -> wh.Webhook:
    reply = await stub.CreateWebhook(
        wh.CreateWebhookRequest(
            webhook_id=webhook_id,
            webhook=wh.Webhook(url=f"{receiver.url}/{webhook_id}", filter=webhook_filter),
        )
    )
    receiver.secrets[webhook_id] = reply.secret
    return reply.webhook


async def _expected(
    db: asyncpg.Connection, webhook: wh.Webhook, kinds: set[str] | None = None, model: str = ""
) -> list[str]:
    """The webhook-ids the subscription must receive, in commit order, from the events
    table itself (events of no namespace, such as a subscription's own creation, only
    when the filter names their kind)."""
    rows = await db.fetch(
        "SELECT revision, kind, resource, ns, row_number() OVER (PARTITION BY revision"
        " ORDER BY event_id) - 1 AS index FROM events WHERE revision > $1"
        " ORDER BY revision, event_id",
        webhook.delivered_revision,
    )
    webhook_id = webhook.name.removeprefix("webhooks/")
    return [
        f"msg_{webhook_id}_{row['revision']}_{row['index']}"
        for row in rows
        if (row["kind"] in kinds if kinds else row["ns"] != "")
        and row["resource"].startswith(model)
    ]


async def _write(stub: rs_grpc.RegistryServiceAsyncStub, model: str, moves: int) -> None:
    """A model, two versions and an alias moved `moves` times between them."""
    await make_model(stub, model)
    await make_version(stub, model)
    await make_version(stub, model)
    for move in range(moves):
        name = f"namespaces/default/models/{model}/aliases/prod"
        await stub.SetAlias(rs.SetAliasRequest(name=name, version_number=1 + move % 2))


def _check_received(receiver: Receiver, subscription: str, expected: list[str]) -> None:
    """Everything expected arrived, first acknowledged in commit order; nothing else
    came; every request was signed; every duplicate is the same message."""
    assert receiver.acknowledged(subscription) == expected
    bodies = receiver.bodies(subscription)
    assert set(bodies) == set(expected)
    assert all(len(each) == 1 for each in bodies.values()), "a webhook-id with two bodies"
    mine = [r for r in receiver.received if r.subscription == subscription]
    assert all(r.verified for r in mine), "a signature did not verify"
    assert receiver.overlaps[subscription] == 0


async def test_create_returns_the_secret_once_and_stores_it_sealed(
    hooked: Hooked, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        reply = await hooked.webhooks.CreateWebhook(
            wh.CreateWebhookRequest(webhook=wh.Webhook(url=f"{receiver.url}/x", description="d"))
        )
        receiver.secrets["x"] = reply.secret
        await make_model(hooked.registry)
        await receiver.wait_for(lambda: len(receiver.received) == 1)
    assert reply.secret.startswith("whsec_")
    raw = base64.b64decode(reply.secret.removeprefix("whsec_"))
    assert len(raw) == 32
    assert reply.webhook.name.startswith("webhooks/wh-")
    got = await hooked.webhooks.GetWebhook(wh.GetWebhookRequest(name=reply.webhook.name))
    # the cursor may already have moved past the 2xx, never past the one event delivered
    head = await hooked.db.fetchval("SELECT max(revision) FROM events")
    assert 0 <= got.webhook.delivered_revision <= head
    got.webhook.delivered_revision = 0
    assert got.webhook == reply.webhook
    assert "secret" not in wh.Webhook.DESCRIPTOR.fields_by_name
    stored = await hooked.db.fetchval("SELECT secret FROM webhooks")
    assert raw not in stored
    assert reply.secret.encode() not in stored
    assert receiver.received[0].verified
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert reply.secret.removeprefix("whsec_") not in logged
    listed = await hooked.webhooks.ListWebhooks(wh.ListWebhooksRequest())
    assert [w.name for w in listed.webhooks] == [reply.webhook.name]
    await hooked.webhooks.DeleteWebhook(wh.DeleteWebhookRequest(name=reply.webhook.name))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooked.webhooks.GetWebhook(wh.GetWebhookRequest(name=reply.webhook.name))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_each_subscription_gets_exactly_its_filter_in_commit_order_signed(
    hooked: Hooked, receiver: Receiver
) -> None:
    everything = await _subscribe(hooked.webhooks, receiver, "all")
    aliases = await _subscribe(
        hooked.webhooks, receiver, "moves", wh.WebhookFilter(kinds=["alias.set"])
    )
    only_m = await _subscribe(hooked.webhooks, receiver, "m", wh.WebhookFilter(models=[M]))
    await asyncio.gather(_write(hooked.registry, "m", 4), _write(hooked.registry, "other", 3))
    expected = {
        "all": await _expected(hooked.db, everything),
        "moves": await _expected(hooked.db, aliases, kinds={"alias.set"}),
        "m": await _expected(hooked.db, only_m, model=M),
    }
    assert len(expected["moves"]) == 7
    assert len(expected["m"]) == 7
    await receiver.wait_for(
        lambda: all(receiver.acknowledged(s) == ids for s, ids in expected.items())
    )
    for subscription, ids in expected.items():
        _check_received(receiver, subscription, ids)
    first = payload(next(iter(receiver.bodies("moves")[expected["moves"][0]])))
    assert first["type"] == "alias.set"
    assert first["data"]["resource"].endswith("/aliases/prod")
    assert first["data"]["after"] == {"version_number": 1}


async def test_retries_are_logged_with_their_answers_and_honour_retry_after(
    hooked: Hooked, receiver: Receiver
) -> None:
    receiver.script = [FAIL, retry_after("2"), HANG]
    webhook = await _subscribe(hooked.webhooks, receiver, "r")
    await make_model(hooked.registry)
    expected = await _expected(hooked.db, webhook)
    await receiver.wait_for(lambda: receiver.acknowledged("r") == expected)
    await _delivered(hooked.db, "r")  # the 2xx is logged before the cursor moves
    _check_received(receiver, "r", expected)
    reply = await hooked.webhooks.ListWebhookDeliveries(
        wh.ListWebhookDeliveriesRequest(parent=webhook.name, page_size=2)
    )
    rest = await hooked.webhooks.ListWebhookDeliveries(
        wh.ListWebhookDeliveriesRequest(parent=webhook.name, page_token=reply.next_page_token)
    )
    log = list(reversed([*reply.deliveries, *rest.deliveries]))  # oldest first
    assert [(d.attempt, d.http_status, d.succeeded) for d in log] == [
        (1, 500, False),
        (2, 503, False),
        (3, 0, False),
        (4, 204, True),
    ]
    assert log[2].error == "timed out"
    assert {d.message_id for d in log} == set(expected)
    asked = log[1].next_attempt_time.ToDatetime() - log[1].attempt_time.ToDatetime()
    assert asked.total_seconds() >= 2  # the receiver asked for 2 s; the backoff is 0.4 s at most
    # ... and the next attempt really went out no earlier: attempt_time is when an attempt
    # was recorded (after its answer), so attempt 3 was sent at its attempt_time minus its
    # latency, which must be at least 2 s after attempt 2 was recorded (a lower bound).
    sent = log[2].attempt_time.ToDatetime() - log[2].latency.ToTimedelta()
    assert (sent - log[1].attempt_time.ToDatetime()).total_seconds() >= 2
    assert not log[3].HasField("next_attempt_time")
    head = await hooked.db.fetchval("SELECT max(revision) FROM events")
    got = await hooked.webhooks.GetWebhook(wh.GetWebhookRequest(name=webhook.name))
    assert got.webhook.delivered_revision == head


@pytest.mark.parametrize("hooked", [{"webhooks_log_keep": 3}], indirect=True)
async def test_the_delivery_log_keeps_the_newest_attempts_only(
    hooked: Hooked, receiver: Receiver
) -> None:
    receiver.script = [FAIL, FAIL]
    webhook = await _subscribe(hooked.webhooks, receiver, "kept")
    await _write(hooked.registry, "m", 3)
    expected = await _expected(hooked.db, webhook)
    await receiver.wait_for(lambda: receiver.acknowledged("kept") == expected)
    await make_model(hooked.registry, "later")  # its batch starts after the last prune
    await receiver.wait_for(lambda: len(receiver.acknowledged("kept")) == len(expected) + 1)
    ids = [row["delivery_id"] for row in await hooked.db.fetch(
        "SELECT delivery_id FROM webhook_deliveries ORDER BY delivery_id"
    )]  # fmt: skip
    # 3 kept, and perhaps the newest attempt, recorded since the last prune
    assert len(ids) <= 4
    assert ids[0] > len(expected) + 2 - 4  # the first attempts are gone
    assert ids[-1] >= len(expected) + 2


async def test_redelivery_resends_with_the_same_webhook_ids(
    hooked: Hooked, receiver: Receiver
) -> None:
    webhook = await _subscribe(hooked.webhooks, receiver, "again")
    await _write(hooked.registry, "m", 2)
    expected = await _expected(hooked.db, webhook)
    await receiver.wait_for(lambda: receiver.acknowledged("again") == expected)
    first = len(receiver.received)

    second_revision = int(expected[1].split("_")[2])
    await hooked.webhooks.RedeliverWebhook(
        wh.RedeliverWebhookRequest(name=webhook.name, from_revision=second_revision)
    )
    await receiver.wait_for(lambda: len(receiver.received) == first + len(expected) - 1)
    assert [r.message_id for r in receiver.received[first:]] == expected[1:]

    log = await hooked.webhooks.ListWebhookDeliveries(
        wh.ListWebhookDeliveriesRequest(parent=webhook.name, page_size=1000)
    )
    oldest = log.deliveries[-1]
    await hooked.webhooks.RedeliverWebhook(
        wh.RedeliverWebhookRequest(name=webhook.name, delivery=oldest.name)
    )
    await receiver.wait_for(lambda: len(receiver.received) == first + len(expected))
    assert receiver.received[-1].message_id == oldest.message_id == expected[0]
    _check_received(receiver, "again", expected)


async def test_two_processes_share_delivery_and_lose_nothing_to_faults_or_a_sigkill(
    new_database: DatabaseFactory, receiver: Receiver, tmp_path: Path
) -> None:
    """Two `modelreg serve` processes on one database; the receiver answers 500, holds a
    request past the timeout, asks for a Retry-After, and is down for a while; the
    process delivering is SIGKILLed in the middle of a request and started again."""
    url = await new_database()
    env = {f"MODELREG_{k.upper()}": str(v) for k, v in FAST.items()}
    env |= {"MODELREG_POSTGRES_URL": url, "MODELREG_GRACE_SECONDS": "1"}
    servers = [ServerProcess(tmp_path / f"server{i}.log", **env) for i in range(2)]
    try:
        await asyncio.gather(*(asyncio.to_thread(s.wait_serving) for s in servers))
        await _faults(servers, receiver, url, env, tmp_path)
    finally:
        for server in servers:
            server.proc.kill()
            server.proc.wait()


async def _faults(
    servers: list[ServerProcess], receiver: Receiver, url: str, env: dict[str, str], tmp: Path
) -> None:
    db = await asyncpg.connect(url)
    async with AsyncExitStack() as stack:
        channels = [await stack.enter_async_context(authed_channel(s.target)) for s in servers]
        hooks = wh_grpc.WebhookServiceStub(channels[0])
        webhooks = [await _subscribe(hooks, receiver, name) for name in ("a", "b")]
        receiver.script = [FAIL, retry_after("1"), FAIL, HANG]
        await _write(rs_grpc.RegistryServiceStub(channels[0]), "m", 3)

        # The process delivering `a` or `b` holds a request: SIGKILL that one there (the
        # owner of the held request's subscription, not any lease holder).
        await asyncio.wait_for(receiver.holding.wait(), 30)
        owner = await db.fetchval(
            "SELECT lease_owner FROM webhooks WHERE webhook_id = $1", receiver.held_for
        )
        assert owner is not None, f"nobody holds {receiver.held_for}, whose request is held"
        victim = _by_pid(servers, {int(owner.split(":")[1])})
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        survivor = rs_grpc.RegistryServiceStub(channels[1 - servers.index(victim)])
        await _write(survivor, "n", 2)
        restarted = ServerProcess(tmp / "restarted.log", **env)
        servers.append(restarted)
        await asyncio.to_thread(restarted.wait_serving)

        # Down for a while: refused connections until a few attempts have failed.
        await receiver.down()
        await _write(survivor, "o", 2)
        await _refused(db, at_least=3)
        await receiver.up()

        expected = {w.name.removeprefix("webhooks/"): await _expected(db, w) for w in webhooks}
        await receiver.wait_for(
            lambda: all(receiver.acknowledged(s) == ids for s, ids in expected.items()), 40
        )
    owners = await db.fetch("SELECT DISTINCT owner FROM webhook_deliveries")
    await db.close()
    for subscription, ids in expected.items():
        _check_received(receiver, subscription, ids)
    assert len(receiver.received) > sum(len(ids) for ids in expected.values())  # retries came
    assert len(owners) >= 2, "one process delivered everything: the takeover was not tested"


def _by_pid(servers: list[ServerProcess], pids: set[int]) -> ServerProcess:
    holders = [s for s in servers if s.proc.pid in pids]
    assert holders, f"no server process holds a lease ({pids})"
    return holders[0]


async def _delivered(db: asyncpg.Connection, webhook_id: str) -> None:
    """Wait until the subscription's cursor is at the head of the log."""
    async with asyncio.timeout(30):
        while await db.fetchval(  # noqa: ASYNC110 - the cursor is in the database
            "SELECT delivered_revision < (SELECT max(revision) FROM events) FROM webhooks"
            " WHERE webhook_id = $1",
            webhook_id,
        ):
            await asyncio.sleep(0.02)  # polls the cursor; orders nothing


async def _refused(db: asyncpg.Connection, at_least: int) -> None:
    """Wait until `at_least` attempts failed to connect (the receiver's port is closed)."""
    async with asyncio.timeout(30):
        while (  # noqa: ASYNC110 - the log is in the database; nothing here can be awaited
            await db.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE error LIKE 'ClientConnector%'"
            )
            < at_least
        ):
            await asyncio.sleep(0.05)  # polls the log for the attempts; orders nothing


async def test_the_cli_creates_lists_shows_deliveries_and_redelivers(
    hooked: Hooked, receiver: Receiver
) -> None:
    assert hooked.running is not None
    target = f"127.0.0.1:{hooked.running.port}"
    code, out, err = await run_cli(
        "webhooks", "create", f"{receiver.url}/cli", "--id", "cli", "--model", "default/m",
        "--kind", "alias.set", "--alias", "default/m@prod", target=target,
    )  # fmt: skip
    assert code == 0, err
    assert "only time the signing secret is shown" in err
    secret = out.rsplit("secret: ", 1)[1].strip()
    receiver.secrets["cli"] = secret
    assert secret.startswith("whsec_")
    await _write(hooked.registry, "m", 1)
    await receiver.wait_for(lambda: len(receiver.acknowledged("cli")) == 1)
    await _delivered(hooked.db, "cli")

    code, out, err = await run_cli("webhooks", "list", target=target)
    assert code == 0, err
    assert "webhooks/cli" in out
    assert secret not in out
    code, out, err = await run_cli("webhooks", "deliveries", "cli", "--json", target=target)
    assert code == 0, err
    deliveries = json.loads(out)
    assert [d["kind"] for d in deliveries] == ["alias.set"]
    code, out, err = await run_cli(
        "webhooks", "redeliver", "cli", deliveries[0]["name"].rsplit("/", 1)[1], target=target
    )
    assert code == 0, err
    await receiver.wait_for(lambda: len(receiver.received) == 2)
    assert receiver.received[0].message_id == receiver.received[1].message_id
    code, out, err = await run_cli("webhooks", "redeliver", "cli", "--from-revision", "0",
                                   target=target)  # fmt: skip
    assert code == 1
    assert "from_revision" in err
