"""Consistency tokens against real PostgreSQL and Redis: every mutation answers the
revision it committed at; a lookup carrying one never answers from an L2 entry older
than it, even one whose writer's invalidation never reached Redis (a writer killed
between commit and invalidation, or a failed Redis call)."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as redis
from google.protobuf import field_mask_pb2

from modelreg.api.encoder import ProtoEncoder
from modelreg.app import RunningServer, start_server
from modelreg.cache import keys
from modelreg.cache.remote import RedisCache
from modelreg.client import AsyncClient, Client, OutOfRangeError
from modelreg.config import Settings
from modelreg.domain.consistency import receipt
from modelreg.domain.names import parse_alias_name, parse_reference
from modelreg.domain.registry import Registry
from modelreg.store.changelog import HEAD
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.v1 import access_service_pb2 as ac
from modelreg.v1 import access_service_pb2_grpc as access_grpc
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import approval_service_pb2 as ap
from modelreg.v1 import approval_service_pb2_grpc as ap_grpc
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import identity_service_pb2_grpc as ids_grpc
from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import lineage_service_pb2_grpc as ln_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.conftest import DatabaseFactory
from tests.helpers import authed_channel, bearer_of
from tests.integration.conftest import ArtifactServer
from tests.integration.rpcs import RPCS

M = "namespaces/default/models/m"
ALIAS = f"{M}/aliases/production"
REF = "m@production"
ROUNDS_WITH_REDIS = 300
WAIT = 30.0  # bound on waiting for a follower to apply a revision


# --- every mutation answers its commit revision ----------------------------------------


def _mutations() -> set[str]:
    """The RPCs whose response carries a token, read from the descriptors (Watch's
    messages carry the revision of each change, a stream, not a mutation's answer)."""
    return {
        rpc.name
        for rpc in RPCS
        if "revision" in rpc.method.output_type.fields_by_name and not rpc.method.server_streaming
    }


async def test_every_mutation_answers_the_revision_it_committed_at(
    fs_server: ArtifactServer, clean: None, db: asyncpg.Connection
) -> None:
    reg, arts = fs_server.registry, fs_server.artifacts
    seen: dict[str, int] = {}

    async def check(name: str, call: Awaitable[Any]) -> Any:
        reply = await call
        head = await db.fetchval(HEAD)
        assert reply.revision == head, f"{name} answered {reply.revision}, head is {head}"
        assert reply.revision > max(seen.values(), default=0), f"{name} did not move"
        seen[name] = reply.revision
        return reply

    ns_request = rs.CreateNamespaceRequest(namespace_id="team", request_id=uuid.uuid4().hex)
    await check("CreateNamespace", reg.CreateNamespace(ns_request))
    await check(
        "CreateModel",
        reg.CreateModel(
            rs.CreateModelRequest(
                parent="namespaces/default", model_id="m", request_id=uuid.uuid4().hex
            )
        ),
    )
    mask = {"update_mask": field_mask_pb2.FieldMask(paths=["description"])}
    await check(
        "UpdateModel",
        reg.UpdateModel(rs.UpdateModelRequest(model=pb.Model(name=M, description="d"), **mask)),
    )
    await check("DeleteModel", reg.DeleteModel(rs.DeleteModelRequest(name=M)))
    await check("UndeleteModel", reg.UndeleteModel(rs.UndeleteModelRequest(name=M)))
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    for _ in range(2):
        await check(
            "CreateModelVersion",
            reg.CreateModelVersion(rs.CreateModelVersionRequest(parent=M, version=ready)),
        )
    v1 = f"{M}/versions/1"
    imported = pb.ModelVersion(number=3, state=pb.MODEL_VERSION_STATE_READY)
    imported.create_time.FromSeconds(1_700_000_000)
    await check("ImportModelVersion", reg.ImportModelVersion(
        rs.ImportModelVersionRequest(parent=M, version=imported)
    ))  # fmt: skip
    await check(
        "UpdateModelVersion",
        reg.UpdateModelVersion(
            rs.UpdateModelVersionRequest(version=pb.ModelVersion(name=v1, description="d"), **mask)
        ),
    )
    for number in (1, 2):
        await check("SetAlias", reg.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=number)))
    await check("RollbackAlias", reg.RollbackAlias(rs.RollbackAliasRequest(name=ALIAS)))
    await check("DeleteAlias", reg.DeleteAlias(rs.DeleteAliasRequest(name=ALIAS)))
    await check(
        "ArchiveModelVersion", reg.ArchiveModelVersion(rs.ArchiveModelVersionRequest(name=v1))
    )
    await check(
        "RestoreModelVersion", reg.RestoreModelVersion(rs.RestoreModelVersionRequest(name=v1))
    )
    pending = (await reg.CreateModelVersion(rs.CreateModelVersionRequest(parent=M))).version.name
    data = b"weights"
    header = art.UploadHeader(
        version=pending,
        path="w.bin",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        upload_id="u1",
    )
    await check(
        "UploadFile",
        arts.UploadFile(
            iter(
                [
                    art.UploadFileRequest(header=header),
                    art.UploadFileRequest(data=data, finish_write=True),
                ]
            )
        ),
    )
    entry = art.ManifestEntry(path="w.bin", size=len(data), sha256=header.sha256)
    await check(
        "FinalizeModelVersion",
        arts.FinalizeModelVersion(art.FinalizeModelVersionRequest(name=pending, files=[entry])),
    )
    doomed = (await reg.CreateModelVersion(rs.CreateModelVersionRequest(parent=M))).version.name
    await check("FailModelVersion", arts.FailModelVersion(art.FailModelVersionRequest(name=doomed)))
    await _lineage_row(check, fs_server.channel, pending, parent=v1)
    await _access_rows(check, fs_server.channel)
    await _approval_rows(check, fs_server.channel)
    assert set(seen) == _mutations(), "a mutation without a row here"

    # A retry answered from its request_id commits nothing: it answers the head, which is
    # at or above its first answer (the token stays a safe lower bound).
    head = await db.fetchval(HEAD)
    again = await reg.CreateNamespace(ns_request)
    assert again.revision == head >= seen["CreateNamespace"]
    # So does a move to where the alias already points (a no-op).
    await reg.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
    head = await db.fetchval(HEAD)
    same = await reg.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
    assert same.revision == head == await db.fetchval(HEAD)


async def _access_rows(check: Any, channel: grpc.aio.Channel) -> None:
    """AccessService's and IdentityService's mutations: a binding made and removed, a key
    made and revoked."""
    access = access_grpc.AccessServiceStub(channel)
    binding = ac.RoleBinding(role=ac.ROLE_VIEWER, subject="carol", namespace="team")
    await check(
        "CreateRoleBinding", access.CreateRoleBinding(ac.CreateRoleBindingRequest(binding=binding))
    )
    await check(
        "DeleteRoleBinding", access.DeleteRoleBinding(ac.DeleteRoleBindingRequest(binding=binding))
    )
    keys = ids_grpc.IdentityServiceStub(channel)
    made = await check("CreateApiKey", keys.CreateApiKey(ids.CreateApiKeyRequest(principal="ci")))
    revoke = ids.RevokeApiKeyRequest(key_id=made.api_key.key_id)
    await check("RevokeApiKey", keys.RevokeApiKey(revoke))


async def _lineage_row(check: Any, channel: grpc.aio.Channel, version: str, parent: str) -> None:
    edge = ln.LineageEdgeSpec(
        kind=ln.LINEAGE_EDGE_KIND_DERIVED_FROM, target=ln.LineageNode(version=parent)
    )
    request = ln.AddLineageRequest(version=version, edges=[edge])
    await check("AddLineage", ln_grpc.LineageServiceStub(channel).AddLineage(request))


async def _approval_rows(check: Any, channel: grpc.aio.Channel) -> None:
    """The ApprovalService mutations' rows: a policy, two requests, one approved by
    someone other than the requester, one rejected."""
    approvals = ap_grpc.ApprovalServiceStub(channel)
    policy = ap.AliasPolicy(name=f"{M}/aliasPolicy", aliases=["guarded"], approvals=1)
    await check("SetAliasPolicy", approvals.SetAliasPolicy(ap.SetAliasPolicyRequest(policy=policy)))
    guarded = ap.CreateChangeRequestRequest(
        parent=f"{M}/aliases/guarded", version_number=2, reason="r"
    )
    first = await check("CreateChangeRequest", approvals.CreateChangeRequest(guarded))
    second = await approvals.CreateChangeRequest(guarded)
    bob = await bearer_of(channel, "bob", role="approver")  # not the requester
    approve = ap.ApproveChangeRequestRequest(name=first.change_request.name)
    await check("ApproveChangeRequest", approvals.ApproveChangeRequest(approve, metadata=bob))
    reject = ap.RejectChangeRequestRequest(name=second.change_request.name, reason="no")
    await check("RejectChangeRequest", approvals.RejectChangeRequest(reject, metadata=bob))


async def test_a_token_above_the_head_is_out_of_range_on_every_lookup(
    channel: grpc.aio.Channel, clean: None, db: asyncpg.Connection
) -> None:
    stats = admin_grpc.AdminServiceStub(channel)
    applied = (await stats.GetServerStats(admin.GetServerStatsRequest())).applied_revision
    head = await db.fetchval(HEAD)
    ahead = max(head, applied) + 1000  # e.g. a token from another registry
    lookups = [rpc for rpc in RPCS if "min_revision" in rpc.method.input_type.fields_by_name]
    assert len(lookups) >= 10
    for rpc in lookups:
        request = rpc.request_type(min_revision=ahead)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc.call(channel, request.SerializeToString())
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE, rpc.name
        assert f"head {head}" in (caught.value.details() or ""), rpc.name


# --- L2 and a write whose invalidation never reached Redis ----------------------------


@dataclass
class Server:
    running: RunningServer
    stub: rs_grpc.RegistryServiceAsyncStub
    admin: admin_grpc.AdminServiceAsyncStub

    async def counters(self) -> dict[str, int]:
        return dict((await self.admin.GetServerStats(admin.GetServerStatsRequest())).counters)

    async def applied(self, revision: int) -> None:
        """Return once this server's follower has applied `revision`."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            stats = await self.admin.GetServerStats(admin.GetServerStatsRequest())
            if stats.applied_revision >= revision:
                return
            await asyncio.sleep(0.01)  # polls the follower's cursor; orders nothing
        raise AssertionError(f"follower did not reach {revision} in {WAIT}s")


@pytest.fixture
async def redis_backed(
    new_database: DatabaseFactory, redis_url: str
) -> AsyncIterator[tuple[Callable[..., Awaitable[Server]], str]]:
    url = await new_database()
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> Server:
            config = Settings(
                address="127.0.0.1:0", postgres_url=url, redis_url=redis_url, grace_seconds=1
            )
            running = await start_server(replace(config, **settings), stack)
            channel = authed_channel(f"127.0.0.1:{running.port}")
            stack.push_async_callback(channel.close, None)
            return Server(
                running,
                rs_grpc.RegistryServiceStub(channel),
                admin_grpc.AdminServiceStub(channel),
            )

        yield start, url


async def _resolve(server: Server, min_revision: int = 0) -> int:
    reply = await server.stub.ResolveReference(
        rs.ResolveReferenceRequest(reference=REF, min_revision=min_revision)
    )
    return int(reply.version.number)


async def _crashed_writer_moves(url: str, number: int) -> int:
    """Move the alias as a writer killed right after COMMIT would: committed and in the
    change log, but none of the writer's own cache invalidation ever ran."""
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        registry = Registry.on(PostgresStore(pool), encoder=ProtoEncoder())  # no on_commit
        with receipt() as committed:
            await registry.aliases.set(
                key=parse_alias_name(ALIAS), number=number, etag="", expected=None, actor="x"
            )
        return committed.revision
    finally:
        await pool.close()


async def test_l2_never_answers_a_token_with_an_entry_that_missed_its_invalidation(
    redis_backed: tuple[Callable[..., Awaitable[Server]], str], redis_url: str
) -> None:
    start, url = redis_backed
    server = await start(cache_l1_entries=0)  # L2 is the tier under test
    await server.stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="m"))
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    for _ in range(2):
        await server.stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M, version=ready))
    moved = await server.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    await server.applied(moved.revision)  # its follower's invalidation would refuse a fill
    assert await _resolve(server) == 1  # from PostgreSQL, fills L2
    before = await server.counters()
    assert await _resolve(server) == 1
    assert (await server.counters())["cache.l2.hits"] > before.get("cache.l2.hits", 0)

    async with redis.Redis.from_url(redis_url) as client:
        epoch = _text(await client.get(keys.EPOCH))
        pointer = f"mr:{epoch}:{keys.pointer_of(parse_reference(REF))}"
        old_pointer = await client.get(pointer)
        assert old_pointer is not None

        revision = await _crashed_writer_moves(url, 2)
        # The server's follower covers the crashed writer: it invalidates L2 from the
        # change log before moving its cursor, so once it has applied the revision even
        # a lookup without the token answers the move (before: the old answer for L2's TTL).
        await server.applied(revision)
        assert await _resolve(server) == 2

        # Now an L2 that missed the invalidation, as when both the writer's and the
        # followers' Redis calls failed: the old entry back, the watermark below the move.
        assert _text(await client.get(keys.EPOCH)) == epoch
        await client.set(pointer, old_pointer)
        await client.set(f"mr:{epoch}:through", revision - 1)
        assert await _resolve(server) == 1  # without a token L2 may answer: it is stale
        behind = (await server.counters()).get("cache.l2.behind", 0)
        assert await _resolve(server, min_revision=revision) == 2  # with it, never
        assert (await server.counters()).get("cache.l2.behind", 0) > behind
        assert await _resolve(server) == 2  # and its database read filled L2 afresh


async def test_tokens_read_your_writes_across_servers_with_every_cache_on(
    redis_backed: tuple[Callable[..., Awaitable[Server]], str],
) -> None:
    start, _ = redis_backed
    writer, reader = await start(), await start()  # L1 and L2 on, one Redis
    await writer.stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="m"))
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    for _ in range(2):
        await writer.stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M, version=ready))
    await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    stale = 0
    for round_ in range(ROUNDS_WITH_REDIS):
        target = 2 - round_ % 2
        await _resolve(reader)  # the reader's L1 (and L2) hold the current answer
        moved = await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=target))
        stale += await _resolve(reader, min_revision=moved.revision) != target
    assert stale == 0
    counters = await reader.counters()
    assert (
        counters.get("cache.l1.hits", 0) + counters.get("cache.l2.hits", 0)
        >= ROUNDS_WITH_REDIS // 2
    )


async def test_l2s_watermark_follows_the_log(
    redis_backed: tuple[Callable[..., Awaitable[Server]], str], redis_url: str
) -> None:
    start, _ = redis_backed
    server = await start()
    await server.stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="m"))
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    await server.stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M, version=ready))
    moved = await server.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    await server.applied(moved.revision)
    async with redis.Redis.from_url(redis_url) as client:
        epoch = _text(await client.get(keys.EPOCH))
        through = await client.get(f"mr:{epoch}:through")
        assert through is not None
        assert int(through) >= moved.revision
    assert await _resolve(server, min_revision=moved.revision) == 1


# --- the SDK sends what it has seen ---------------------------------------------------


async def test_the_sdk_sends_the_highest_revision_it_has_seen(
    target: str, clean: None, db: asyncpg.Connection
) -> None:
    async with AsyncClient(target) as client, AsyncClient(target, read_your_writes=False) as off:
        await client.create_model("m")
        await client.create_version("m", ready=True)
        await client.set_alias("m", "production", 1)
        assert client.revision == await db.fetchval(HEAD)
        assert (await client.resolve(REF)).number == 1
        # The lookup carries the token: one above the head is refused, by this client only.
        client.saw_revision(client.revision + 10**9)
        with pytest.raises(OutOfRangeError):
            await client.resolve(REF)
        off.saw_revision(10**12)
        assert (await off.resolve(REF)).number == 1
    head = await db.fetchval(HEAD)
    # The blocking client in a thread: the server under test runs on this event loop.
    assert await asyncio.to_thread(_blocking_client_round, target) == head


def _blocking_client_round(target: str) -> int:
    with Client(target) as blocking:
        blocking.set_alias("m", "production", 1)  # a no-op move answers the head
        seen = blocking.revision
        blocking.saw_revision(10**12)
        with pytest.raises(OutOfRangeError):
            blocking.resolve(REF)
    return seen


# --- a read replica behind the token ---------------------------------------------------


async def test_a_replica_behind_the_token_sends_the_lookup_to_the_primary(
    new_database: DatabaseFactory,
) -> None:
    """The "replica" is a copy of the primary taken once: it never replays anything, the
    worst a lagging standby can do. Lookups without a token read it; with one they go to
    the primary, on every read path (cached lookups and lists alike)."""
    url = await new_database()
    frozen = f"{uuid.uuid4().hex[:12]}_replica"
    base, sep, tail = url.partition("?")
    replica_url = f"{base.rsplit('/', 1)[0]}/{frozen}{sep}{tail}"
    settings = Settings(
        address="127.0.0.1:0", postgres_url=url, grace_seconds=1, cache_l1_entries=0
    )
    async with AsyncExitStack() as stack:  # the primary alone: seed, then stop
        seeding = await _serve(settings, stack)
        await seeding.stub.CreateModel(
            rs.CreateModelRequest(parent="namespaces/default", model_id="m")
        )
        ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
        for _ in range(2):
            await seeding.stub.CreateModelVersion(
                rs.CreateModelVersionRequest(parent=M, version=ready)
            )
        await seeding.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    admin_conn = await asyncpg.connect(url)
    try:
        await admin_conn.execute(f'CREATE DATABASE "{frozen}" TEMPLATE "{url_name(url)}"')
    finally:
        await admin_conn.close()
    try:
        async with AsyncExitStack() as stack:
            server = await _serve(replace(settings, postgres_read_url=replica_url), stack)
            moved = await server.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
            assert await _resolve(server) == 1  # the replica's answer: stale
            assert await _resolve(server, min_revision=moved.revision) == 2
            for token, expected in ((0, 1), (moved.revision, 2)):
                listed = await server.stub.ListAliases(
                    rs.ListAliasesRequest(parent=M, min_revision=token)
                )
                assert [a.version_number for a in listed.aliases] == [expected]
        # With L1 on, a read that fills the cache must reflect the follower's revision:
        # the frozen replica has not replayed it, so the fill reads the primary, and L1
        # never holds what the replica still shows (even for lookups without a token).
        async with AsyncExitStack() as stack:
            cached = replace(settings, postgres_read_url=replica_url, cache_l1_entries=1000)
            server = await _serve(cached, stack)  # its follower starts at the primary's head
            assert await _resolve(server) == 2  # the replica still says 1
            assert await _resolve(server, min_revision=moved.revision) == 2  # an L1 hit
            counters = await server.counters()
            assert counters.get("cache.db.replica_behind", 0) >= 1
            assert counters.get("cache.l1.hits", 0) >= 1
    finally:
        admin_conn = await asyncpg.connect(url)
        try:
            await admin_conn.execute(f'DROP DATABASE IF EXISTS "{frozen}" WITH (FORCE)')
        finally:
            await admin_conn.close()


def _text(value: bytes | str | None) -> str:
    """A Redis value as text ("0" for a missing epoch)."""
    if value is None:
        return "0"
    return value.decode() if isinstance(value, bytes) else value


def url_name(url: str) -> str:
    return url.partition("?")[0].rsplit("/", 1)[1]


async def _serve(settings: Settings, stack: AsyncExitStack) -> Server:
    running = await start_server(settings, stack)
    channel = authed_channel(f"127.0.0.1:{running.port}")
    stack.push_async_callback(channel.close, None)
    return Server(
        running, rs_grpc.RegistryServiceStub(channel), admin_grpc.AdminServiceStub(channel)
    )


async def test_an_l2_fill_from_before_redis_lost_its_data_is_refused(redis_url: str) -> None:
    """Redis restarted empty (or FLUSHALL, or a failover): a filler whose lookup ran
    before must not write into the epoch the followers start next, though the counter it
    read ("0", absent) reads the same again."""
    clients = [redis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        remote = RedisCache(*clients, ttl=60, negative_ttl=60, on_drop=lambda _: None)
        await remote.start()
        assert remote.available
        assert await remote.follow(after=5, upto=5, stale={})  # a follower marks: an epoch
        state, counter = f"{keys.MODEL_STATE}m", f"{keys.COUNTER}m"
        read = await remote.lookup([(state, "", "v:", "", counter)])
        assert read.values == [None, None, None, b"0"]

        await clients[0].flushall()  # Redis loses everything
        assert await remote.follow(after=5, upto=6, stale={})  # a follower re-marks
        current = _text(await clients[0].get(keys.EPOCH))
        assert current != read.epoch  # a fresh epoch id, never a reissued one

        filled = await remote.fill(counter, b"0", [(state, b"Astale")], epoch=read.epoch)
        assert not filled
        assert await clients[0].get(f"mr:{current}:{state}") is None
        assert await clients[0].get(f"mr:{read.epoch}:{state}") is None
    finally:
        for client in clients:
            await client.aclose()
