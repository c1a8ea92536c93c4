"""Authentication with API keys, over real servers: the key lifecycle (create, use, list,
several live keys, revoke), expiry, malformed and unknown keys, calls without
credentials, what stays open, the first admin's key file, and that no secret reaches a
log or a listing. Revocation across `--workers 2` is in this file too."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.domain.access import Permission
from modelreg.domain.principals import Principal, Proof
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import identity_service_pb2_grpc as ids_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import ADMIN_KEY_ID, ADMIN_TOKEN, authed_channel, reason_of, rich_status
from tests.integration.rpcs import RPCS
from tests.integration.serverproc import ServerProcess
from tests.integration.test_read_your_writes import one_channel_per_worker

Metadata = tuple[tuple[str, str], ...]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


async def refused(call: object, reason: str) -> str:
    """Await `call`; it must fail UNAUTHENTICATED with `reason`: its message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    assert reason_of(rich_status(caught.value)) == reason
    return caught.value.details() or ""


@pytest.fixture
def identity(channel: grpc.aio.Channel, clean: None) -> ids_grpc.IdentityServiceAsyncStub:
    return ids_grpc.IdentityServiceStub(channel)


@pytest.fixture
async def bare(target: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel without credentials."""
    async with grpc.aio.insecure_channel(target) as chan:
        yield chan


async def test_a_key_proves_its_principal_and_two_live_keys_rotate_without_a_gap(
    identity: ids_grpc.IdentityServiceAsyncStub, db: asyncpg.Connection
) -> None:
    first = await identity.CreateApiKey(
        ids.CreateApiKeyRequest(
            principal="ci-bot", kind=ids.PRINCIPAL_KIND_SERVICE, description="CI"
        )
    )
    assert first.key.startswith(f"mrk_{first.api_key.key_id}_")
    assert first.revision > 0
    assert (first.api_key.principal, first.api_key.kind, first.api_key.creator) == (
        "ci-bot", ids.PRINCIPAL_KIND_SERVICE, "admin",
    )  # fmt: skip
    me = await identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(first.key))
    assert (me.name, me.proof, me.key_id) == ("ci-bot", ids.PROOF_API_KEY, first.api_key.key_id)

    second = await identity.CreateApiKey(ids.CreateApiKeyRequest(principal="ci-bot"))
    assert second.api_key.kind == ids.PRINCIPAL_KIND_SERVICE  # the principal keeps its kind
    listed = await identity.ListApiKeys(ids.ListApiKeysRequest(principal="ci-bot"))
    assert [k.key_id for k in listed.api_keys] == [second.api_key.key_id, first.api_key.key_id]
    for key in (first.key, second.key):  # both live at once: rotation has no gap
        assert (await identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(key))).name == "ci-bot"

    revoked = await identity.RevokeApiKey(ids.RevokeApiKeyRequest(key_id=first.api_key.key_id))
    assert revoked.api_key.HasField("revoke_time")
    assert revoked.revision > second.revision
    message = await refused(
        identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(first.key)), "KEY_REVOKED"
    )
    assert "modelreg keys create" in message
    assert (
        await identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(second.key))
    ).name == "ci-bot"

    everything = await identity.ListApiKeys(ids.ListApiKeysRequest())
    shown = everything.SerializeToString()
    for key in (first.key, second.key, ADMIN_TOKEN):
        assert key.encode() not in shown
        assert key.rpartition("_")[2].encode() not in shown  # nor the secret alone
    assert {k.key_id for k in everything.api_keys} >= {ADMIN_KEY_ID, first.api_key.key_id}
    events = await db.fetch("SELECT kind, actor, after::text FROM events ORDER BY event_id")
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("key.created", "admin"), ("key.created", "admin"), ("key.revoked", "admin"),
    ]  # fmt: skip
    stored = await db.fetch("SELECT secret_hash FROM api_keys")
    for event in events:
        assert first.key.rpartition("_")[2] not in event["after"]
        assert all(row["secret_hash"].hex() not in event["after"] for row in stored)


async def test_pages_of_keys_and_a_kind_that_conflicts(
    identity: ids_grpc.IdentityServiceAsyncStub,
) -> None:
    made = [
        (await identity.CreateApiKey(ids.CreateApiKeyRequest(principal="alice"))).api_key.key_id
        for _ in range(3)
    ]
    page = await identity.ListApiKeys(ids.ListApiKeysRequest(principal="alice", page_size=2))
    rest = await identity.ListApiKeys(
        ids.ListApiKeysRequest(principal="alice", page_size=2, page_token=page.next_page_token)
    )
    assert [k.key_id for k in [*page.api_keys, *rest.api_keys]] == made[::-1]
    assert not rest.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.CreateApiKey(
            ids.CreateApiKeyRequest(principal="alice", kind=ids.PRINCIPAL_KIND_SERVICE)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(rich_status(caught.value)) == "PRINCIPAL_KIND_MISMATCH"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.RevokeApiKey(ids.RevokeApiKeyRequest(key_id="0123456789ab"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_key_past_its_expiry_is_refused(
    identity: ids_grpc.IdentityServiceAsyncStub,
) -> None:
    made = await identity.CreateApiKey(
        ids.CreateApiKeyRequest(principal="temp", ttl=duration_pb2.Duration(seconds=1))
    )
    assert made.api_key.HasField("expire_time")
    assert (await identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(made.key))).name == "temp"
    await asyncio.sleep(1.2)  # waits out the deliberately short TTL (the key is cached)
    await refused(identity.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(made.key)), "KEY_EXPIRED")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer mrk_nothex_" + "s" * 40, "KEY_MALFORMED"),
        ("Bearer mrk_0123456789ab_" + "A" * 43, "KEY_UNKNOWN"),
        ("Bearer " + ADMIN_TOKEN[:-1] + ("B" if ADMIN_TOKEN[-1] != "B" else "C"), "KEY_UNKNOWN"),
        ("Basic YWRtaW46YWRtaW4=", "CREDENTIALS_MALFORMED"),
        ("Bearer eyJhbGciOiJub25lIn0.e30.", "CREDENTIALS_UNRECOGNIZED"),
    ],
    ids=["malformed", "unknown id", "wrong secret", "not bearer", "not an API key"],
)
async def test_bad_credentials_are_unauthenticated_and_change_nothing(
    bare: grpc.aio.Channel, db: asyncpg.Connection, clean: None, header: str, reason: str
) -> None:
    stub = rs_grpc.RegistryServiceStub(bare)
    call = stub.CreateNamespace(
        rs.CreateNamespaceRequest(namespace_id="team"), metadata=(("authorization", header),)
    )
    message = await refused(call, reason)
    sent = header.split(" ", 1)[1]
    assert sent[17:] not in message or len(sent) <= 17  # never repeats a key's secret part
    assert await db.fetchval("SELECT count(*) FROM namespaces") == 1  # `default` only


async def test_every_rpc_without_credentials_is_unauthenticated_saying_how_to_get_a_key(
    bare: grpc.aio.Channel, server: RunningServer
) -> None:
    message = ""
    for rpc in RPCS:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.call(bare, [] if rpc.client_streaming else b"")
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, rpc.name
        message = caught.value.details() or ""
        assert reason_of(rich_status(caught.value)) == "NO_CREDENTIALS"
        assert "authorization: Bearer <key>" in message
        assert "MODELREG_TOKEN" in message
        assert "modelreg keys create NAME" in message
    assert "admin.key" in message  # where this server's first start would have put it


async def test_health_and_reflection_need_no_credentials(bare: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(bare)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(bare)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    answers = [answer async for answer in call]
    names = {s.name for s in answers[0].list_services_response.service}
    assert "modelreg.v1.IdentityService" in names


async def test_the_first_admin_may_act_from_the_first_call_after_a_first_start(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database(seeded=False)
    home = tmp_path / "home"
    settings = Settings(address="127.0.0.1:0", postgres_url=url, home=home, grace_seconds=1)
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        grants = running.services.grants
        assert grants is not None  # decided before anything else awaits: no follower's lead
        admin = Principal("admin", Proof.API_KEY)
        assert grants.decide(admin, Permission.NAMESPACES_CREATE, "anywhere").allowed
        key = (home / "admin.key").read_text().strip()
        async with authed_channel(f"127.0.0.1:{running.port}", token=key) as chan:
            made = await rs_grpc.RegistryServiceStub(chan).CreateNamespace(
                rs.CreateNamespaceRequest(namespace_id="first")
            )
            assert made.namespace.name == "namespaces/first"


@pytest.mark.slow
async def test_two_concurrent_first_starts_make_one_admin_key_readable_only_by_its_user(
    new_database: DatabaseFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await new_database(seeded=False)
    home = tmp_path / "home"
    settings = Settings(address="127.0.0.1:0", postgres_url=url, home=home, grace_seconds=1)
    other = Settings(
        address="127.0.0.1:0", postgres_url=url, home=tmp_path / "other", grace_seconds=1
    )
    caplog.set_level(logging.INFO, logger="modelreg")
    async with AsyncExitStack() as stack:
        first, second = await asyncio.gather(
            start_server(settings, stack), start_server(settings, stack)
        )
        third = await start_server(other, stack)  # a replica elsewhere: admin exists
        key_file = home / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        for running in (first, second, third):
            async with authed_channel(f"127.0.0.1:{running.port}", token=key) as chan:
                me = await ids_grpc.IdentityServiceStub(chan).WhoAmI(ids.WhoAmIRequest())
                assert (me.name, me.proof) == ("admin", ids.PROOF_API_KEY)
    assert not (tmp_path / "other" / "admin.key").exists()
    assert [p.name for p in home.iterdir() if "admin.key" in p.name] == ["admin.key"]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
        assert await conn.fetchval("SELECT count(*) FROM principals") == 1
    finally:
        await conn.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert key not in logged
    assert key.rpartition("_")[2] not in logged
    assert "modelreg keys create NAME" in logged  # what the replica elsewhere says


@pytest.mark.slow
async def test_a_revoked_key_is_refused_by_the_other_worker_too_and_no_key_is_logged(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database()
    server = ServerProcess(tmp_path / "serve.log", MODELREG_WORKERS="2", MODELREG_POSTGRES_URL=url)
    try:
        await asyncio.to_thread(server.wait_serving, 120)
        await asyncio.to_thread(server.wait_workers, 2, 120)
        async with AsyncExitStack() as stack:
            one, other = await one_channel_per_worker(server.target, stack, ADMIN_TOKEN)
            keys = ids_grpc.IdentityServiceStub(one.channel)
            made = await keys.CreateApiKey(ids.CreateApiKeyRequest(principal="deployer"))
            elsewhere = ids_grpc.IdentityServiceStub(other.channel)
            for stub in (keys, elsewhere):  # each worker verifies it, and caches it
                me = await stub.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(made.key))
                assert me.name == "deployer"
            revoked = await keys.RevokeApiKey(ids.RevokeApiKeyRequest(key_id=made.api_key.key_id))
            # the same process refuses it on the very next call
            await refused(
                keys.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(made.key)), "KEY_REVOKED"
            )
            # the other worker, once its key cache has followed the change log that far
            while True:
                if (await other.counters()).get("identity.keys.revision", 0) >= revoked.revision:
                    break
                await asyncio.sleep(0.01)  # polls the follower's state; orders nothing
            await refused(
                elsewhere.WhoAmI(ids.WhoAmIRequest(), metadata=bearer(made.key)), "KEY_REVOKED"
            )
    finally:
        assert server.stop() == 0, server.output()
    log = server.output()
    for secret in (made.key, made.key.rpartition("_")[2], ADMIN_TOKEN):
        assert secret not in log


@pytest.mark.slow
async def test_a_first_start_logs_where_the_key_is_never_the_key(
    new_database: DatabaseFactory, tmp_path: Path
) -> None:
    url = await new_database(seeded=False)
    server = ServerProcess(tmp_path / "serve.log", MODELREG_POSTGRES_URL=url)
    try:
        await asyncio.to_thread(server.wait_serving, 120)
        key = server.token
        assert key != ADMIN_TOKEN
        async with authed_channel(server.target, token=key) as chan:
            me = await ids_grpc.IdentityServiceStub(chan).WhoAmI(ids.WhoAmIRequest())
            assert me.name == "admin"
    finally:
        assert server.stop() == 0, server.output()
    log = server.output()
    assert str(server.home / "admin.key") in log
    assert key not in log
    assert key.rpartition("_")[2] not in log


def modelreg(
    target: str, *args: str, token: str | None, home: Path
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with `token` as MODELREG_TOKEN (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_HOME"] = str(home)  # a home without admin.key: only the token counts
    if token is not None:
        env["MODELREG_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "modelreg", *args, "--target", target],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow
async def test_the_cli_makes_uses_lists_and_revokes_a_key(
    target: str, clean: None, tmp_path: Path
) -> None:
    def run(*args: str, token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        return modelreg(target, *args, token=token, home=tmp_path)

    made = await asyncio.to_thread(run, "keys", "create", "bot", "--service", "--ttl", "30d")
    assert made.returncode == 0, made.stderr
    assert "will not be shown again" in made.stderr
    key = made.stdout.split("key: ", 1)[1].strip()
    key_id = key.split("_")[1]
    me = await asyncio.to_thread(run, "whoami", token=key)
    assert me.stdout.split() == ["name:", "bot", "proof:", "API_KEY", "key_id:", key_id], me.stderr
    listed = await asyncio.to_thread(run, "keys", "list", "--principal", "bot")
    assert key_id in listed.stdout
    assert key.rpartition("_")[2] not in listed.stdout
    assert (await asyncio.to_thread(run, "keys", "revoke", key_id)).returncode == 0
    refused_call = await asyncio.to_thread(run, "whoami", token=key)
    assert refused_call.returncode == 1
    assert "UNAUTHENTICATED" in refused_call.stderr
    assert "modelreg keys create" in refused_call.stderr
    assert "KEY_REVOKED" in refused_call.stderr
    nothing = await asyncio.to_thread(run, "namespaces", "list", token=None)
    assert nothing.returncode == 1
    assert "no credentials" in nothing.stderr
    assert "MODELREG_TOKEN" in nothing.stderr
