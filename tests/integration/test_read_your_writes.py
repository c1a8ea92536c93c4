"""Read-your-writes across the workers of the default configuration: `modelreg serve
--workers 2` on the embedded PostgreSQL, no Redis. Each round moves an alias through one
worker and resolves it through the other, whose L1 holds the old answer, carrying the
token SetAlias returned: no answer may be stale. (benchmarks/propagation.py measures the
window a lookup without the token may see the old answer.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.helpers import authed_channel, make_model, make_version
from tests.integration.serverproc import ServerProcess

ALIAS = "namespaces/default/models/m/aliases/production"
REF = "m@production"
ROUNDS = int(os.environ.get("MODELREG_TEST_RYW_ROUNDS", "1000"))
MAX_CHANNELS = 64  # connections tried before giving up on reaching a second worker


@dataclass
class Worker:
    """A channel pinned to one worker process (its own subchannel, so its own connection)."""

    pid: int
    channel: grpc.aio.Channel
    stub: rs_grpc.RegistryServiceAsyncStub
    admin: admin_grpc.AdminServiceAsyncStub

    async def counters(self) -> dict[str, int]:
        reply = await self.admin.GetServerStats(admin.GetServerStatsRequest())
        assert reply.pid == self.pid  # still the same connection, the same worker
        return dict(reply.counters)


@pytest.fixture
def home() -> Iterator[Path]:
    """A MODELREG_HOME outside pytest's tmp_path (whose base is 0700): the embedded
    PostgreSQL runs as its own user and must reach its data directory."""
    path = Path(tempfile.mkdtemp(prefix="modelreg-test-ryw-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def two_workers(home: Path, tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    server = ServerProcess(tmp_path / "serve.log", MODELREG_WORKERS="2", MODELREG_HOME=str(home))
    try:
        await asyncio.to_thread(server.wait_serving, 180)
        await asyncio.to_thread(server.wait_workers, 2, 180)  # else every connection meets one
        async with AsyncExitStack() as stack:
            yield await one_channel_per_worker(server.target, stack, server.token)
    finally:
        server.stop()


async def one_channel_per_worker(
    target: str, stack: AsyncExitStack, token: str
) -> tuple[Worker, Worker]:
    """Open connections until two reach different workers (the kernel spreads them over
    the workers' SO_REUSEPORT sockets)."""
    found: dict[int, Worker] = {}
    for attempt in range(MAX_CHANNELS):
        # A local subchannel pool and a distinct option each: no two channels share one
        # connection, so each connection lands on a worker of the kernel's choice.
        options = [("grpc.use_local_subchannel_pool", 1), ("modelreg.test.channel", attempt)]
        channel = authed_channel(target, token=token, options=options)
        stack.push_async_callback(channel.close, None)
        stats = admin_grpc.AdminServiceStub(channel)
        pid = (await stats.GetServerStats(admin.GetServerStatsRequest())).pid
        if pid not in found:
            found[pid] = Worker(pid, channel, rs_grpc.RegistryServiceStub(channel), stats)
        if len(found) == 2:
            first, second = found.values()
            return first, second
    raise AssertionError(f"every one of {MAX_CHANNELS} connections reached worker {set(found)}")


@pytest.mark.slow
async def test_a_token_reads_the_write_through_the_other_worker(
    two_workers: tuple[Worker, Worker],
) -> None:
    writer, reader = two_workers
    await make_model(writer.stub)
    versions = [(await make_version(writer.stub)).number for _ in range(2)]
    await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=versions[0]))
    before = await reader.counters()
    stale: list[tuple[int, int, int]] = []  # (round, expected, answered)
    revisions: list[int] = []
    for round_ in range(ROUNDS):
        target = versions[(round_ + 1) % 2]
        # The reader's L1 holds the alias's current answer before each move.
        await reader.stub.ResolveReference(rs.ResolveReferenceRequest(reference=REF))
        moved = await writer.stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=target))
        revisions.append(moved.revision)
        answer = await reader.stub.ResolveReference(
            rs.ResolveReferenceRequest(reference=REF, min_revision=moved.revision)
        )
        if answer.version.number != target:
            stale.append((round_, target, answer.version.number))
    after = await reader.counters()
    assert stale == [], f"{len(stale)} stale answers of {ROUNDS}, first: {stale[:5]}"
    assert revisions == sorted(set(revisions)), "each move commits at a higher revision"
    # The reader's L1 really answered: the rounds were not all sent to PostgreSQL.
    assert after.get("cache.l1.hits", 0) - before.get("cache.l1.hits", 0) >= ROUNDS // 2

    # A token above the head (say, from another registry) is refused at once, naming it.
    head = (await writer.admin.GetServerStats(admin.GetServerStatsRequest())).head_revision
    assert head == revisions[-1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.stub.ResolveReference(
            rs.ResolveReferenceRequest(reference=REF, min_revision=head + 1000)
        )
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"head {head}" in (caught.value.details() or "")
