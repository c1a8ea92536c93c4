"""The tiered cache against a real Redis and PostgreSQL: no stale read after an
acknowledged write, bounded L1 staleness, Redis dying mid-load, negative entries
cleared on create, and batches mixing hits, misses and errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.conftest import DatabaseFactory, RedisServer
from tests.helpers import authed_channel, make_model, make_version
from tests.integration.serverproc import ServerProcess

M = "namespaces/default/models/m"
ALIAS = f"{M}/aliases/production"
MOVES = 200


@dataclass
class Client:
    stub: rs_grpc.RegistryServiceAsyncStub
    admin: admin_grpc.AdminServiceAsyncStub

    async def counters(self) -> dict[str, int]:
        return dict((await self.admin.GetServerStats(admin.GetServerStatsRequest())).counters)


@pytest.fixture
async def cached(
    new_database: DatabaseFactory, redis_url: str
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Starts in-process servers on one fresh database and the test Redis."""
    url = await new_database()
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> Client:
            config = Settings(
                address="127.0.0.1:0", postgres_url=url, redis_url=redis_url, grace_seconds=1
            )
            running: RunningServer = await start_server(replace(config, **settings), stack)
            channel = authed_channel(f"127.0.0.1:{running.port}")
            stack.push_async_callback(channel.close, None)
            return Client(
                rs_grpc.RegistryServiceStub(channel), admin_grpc.AdminServiceStub(channel)
            )

        yield start


async def _resolve(stub: rs_grpc.RegistryServiceAsyncStub, ref: str, strong: bool = False) -> int:
    consistency = pb.CONSISTENCY_STRONG if strong else pb.CONSISTENCY_UNSPECIFIED
    reply = await stub.ResolveReference(
        rs.ResolveReferenceRequest(reference=ref, consistency=consistency)
    )
    return reply.version.number


async def _two_processes(
    tmp_path: Path, database_url: str, redis_url: str, **env: str
) -> list[ServerProcess]:
    common = {"MODELREG_POSTGRES_URL": database_url, "MODELREG_REDIS_URL": redis_url, **env}
    servers = [ServerProcess(tmp_path / f"s{i}.log", **common) for i in range(2)]
    await asyncio.gather(*(asyncio.to_thread(s.wait_serving) for s in servers))
    return servers


async def _race_alias_moves(targets: list[str]) -> list[tuple[float, float, int, int]]:
    """Move `production` to 1..MOVES through the first server while readers on every server
    resolve it. Per read: (issue time, when the move past what it saw was acknowledged,
    last move acknowledged before the issue, version seen)."""
    channels = [authed_channel(t) for t in targets]
    stubs = [rs_grpc.RegistryServiceStub(c) for c in channels]
    await make_model(stubs[0])
    for _ in range(MOVES):
        await make_version(stubs[0])
    acked = [0]
    ack_time: dict[int, float] = {}
    reads: list[tuple[float, bool, int, int]] = []
    first, done = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        for n in range(1, MOVES + 1):
            await stubs[0].SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=n))
            ack_time[n] = time.monotonic()
            acked[0] = n
            first.set()
        done.set()

    async def reader(stub: rs_grpc.RegistryServiceAsyncStub, strong: bool) -> None:
        await first.wait()  # the alias exists from the first acknowledged move on
        while not done.is_set():
            issued, floor = time.monotonic(), acked[0]
            seen = await _resolve(stub, "m@production", strong)
            reads.append((issued, strong, floor, seen))

    try:
        readers = [reader(s, strong) for s in stubs for strong in (False, False, True)]
        await asyncio.gather(writer(), *readers)
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels))
    superseded = {n: ack_time.get(n + 1, float("inf")) for n in range(MOVES + 1)}
    return [(issued, superseded[seen], floor, seen) for issued, _, floor, seen in reads]


@pytest.mark.slow
async def test_no_stale_read_after_an_acknowledged_write_across_processes(
    new_database: DatabaseFactory, redis_url: str, tmp_path: Path
) -> None:
    """L1 off: every read goes to L2 (or the database); none may see a move older than
    the last one acknowledged before the read was issued."""
    servers = await _two_processes(
        tmp_path, await new_database(), redis_url, MODELREG_CACHE_L1_ENTRIES="0"
    )
    try:
        reads = await _race_alias_moves([s.target for s in servers])
        counters = await _l2_counters(servers)
    finally:
        for server in servers:
            server.stop()
    violations = [r for r in reads if r[3] < r[2]]
    assert len(reads) > MOVES, "the readers must overlap the writer"
    assert violations == []
    assert counters.get("cache.l2.hits", 0) > 0, counters  # the reads did use Redis


@pytest.mark.slow
async def test_l1_reads_are_never_staler_than_the_configured_bound(
    new_database: DatabaseFactory, redis_url: str, tmp_path: Path
) -> None:
    ttl = 0.5
    servers = await _two_processes(
        tmp_path, await new_database(), redis_url, MODELREG_CACHE_L1_TTL_SECONDS=str(ttl)
    )
    try:
        reads = await _race_alias_moves([s.target for s in servers])
    finally:
        for server in servers:
            server.stop()
    # A read is stale by how long before its issue the move past what it saw was acknowledged.
    staleness = [max(0.0, issued - superseded) for issued, superseded, _, _ in reads]
    # Slack for a loaded 2-core machine: the bound is semantic (TTL + pub/sub), not speed.
    assert max(staleness) <= ttl + 1.0, sorted(staleness)[-5:]


async def _l2_counters(servers: list[ServerProcess]) -> dict[str, int]:
    total: dict[str, int] = {}
    for server in servers:
        async with authed_channel(server.target) as chan:
            reply = await admin_grpc.AdminServiceStub(chan).GetServerStats(
                admin.GetServerStatsRequest()
            )
            for name, count in reply.counters.items():
                total[name] = total.get(name, 0) + count
    return total


@pytest.mark.slow
async def test_redis_killed_mid_load_fails_no_lookup_and_hits_resume(
    cached: Callable[..., Awaitable[Client]], redis_server: RedisServer
) -> None:
    if redis_server.external:
        pytest.skip("cannot kill an external Redis (MODELREG_TEST_REDIS_URL)")
    client = await cached(cache_l1_entries=0)
    await make_model(client.stub)
    for _ in range(5):
        await make_version(client.stub)
    refs = [f"m:{n}" for n in range(1, 6)] + ["m", "m@missing"]
    failures: list[BaseException] = []

    async def lookups(count: int) -> None:
        for i in range(count):
            try:
                await client.stub.BatchGetModelVersions(
                    rs.BatchGetModelVersionsRequest(references=refs[i % 3 :])
                )
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    await lookups(300)
    warm = await client.counters()
    assert warm.get("cache.l2.hits", 0) > 0
    redis_server.kill()
    await lookups(1500)  # Redis is gone: all from PostgreSQL
    down = await client.counters()
    redis_server.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait for the background reconnect
        await lookups(50)
        if (await client.admin.GetServerStats(admin.GetServerStatsRequest())).redis_available:
            break
    await lookups(500)
    back = await client.counters()
    assert failures == []
    assert down.get("cache.l2.errors", 0) > warm.get("cache.l2.errors", 0)
    assert back.get("cache.l2.hits", 0) > down.get("cache.l2.hits", 0)


async def test_negative_entries_are_cleared_by_creates(
    cached: Callable[..., Awaitable[Client]],
) -> None:
    client = await cached()
    for ref in ("m", "m:1", "m@production"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _resolve(client.stub, ref)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await make_model(client.stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await _resolve(client.stub, "m")  # no READY version yet: cached negative
    await make_version(client.stub)
    assert await _resolve(client.stub, "m:1") == 1
    assert await _resolve(client.stub, "m") == 1
    with pytest.raises(grpc.aio.AioRpcError):
        await _resolve(client.stub, "m@production")
    await client.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    assert await _resolve(client.stub, "m@production") == 1
    before = (await client.counters()).get("cache.l1.hits", 0)
    for _ in range(3):
        assert await _resolve(client.stub, "m:1") == 1
    assert (await client.counters())["cache.l1.hits"] > before  # now served from L1


async def test_batch_of_1000_mixes_hits_misses_and_errors_in_order(
    cached: Callable[..., Awaitable[Client]],
) -> None:
    client = await cached()
    await make_model(client.stub)
    for _ in range(20):
        await make_version(client.stub)
    await client.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=7))
    warm = [f"m:{n}" for n in range(1, 11)]
    await client.stub.BatchGetModelVersions(rs.BatchGetModelVersionsRequest(references=warm))
    kinds: list[Callable[[int], str]] = [
        lambda i: f"m:{i % 10 + 1}",  # cached
        lambda i: f"m:{i % 10 + 11}",  # not cached yet
        lambda i: f"m:{i + 100}",  # no such version
        lambda i: "m@production",
        lambda i: f"nosuch{i % 3}",  # no such model
        lambda i: "Bad Ref",  # invalid
        lambda i: "default/m",  # latest
    ]
    refs = [kinds[i % len(kinds)](i) for i in range(1000)]
    reply = await client.stub.BatchGetModelVersions(
        rs.BatchGetModelVersionsRequest(references=refs)
    )
    assert [r.reference for r in reply.results] == refs
    for i, result in enumerate(reply.results):
        kind = i % len(kinds)
        if kind in (0, 1):
            assert result.version.number == int(refs[i].split(":")[1])
        elif kind == 3:
            assert result.version.number == 7
        elif kind == 6:
            assert result.version.number == 20
        else:
            expected = grpc.StatusCode.INVALID_ARGUMENT if kind == 5 else grpc.StatusCode.NOT_FOUND
            assert result.error.code == expected.value[0], (i, refs[i], result)
    strong = await client.stub.BatchGetModelVersions(
        rs.BatchGetModelVersionsRequest(references=refs, consistency=pb.CONSISTENCY_STRONG)
    )
    assert strong == reply  # the cached answer is byte-for-byte the database's
