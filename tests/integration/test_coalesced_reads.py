"""Concurrent STRONG lookups share statements (domain/coalesce.py) and stay strong: no
answer is older than a move acknowledged before its call began."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from modelreg.v1 import admin_service_pb2 as adm
from modelreg.v1 import admin_service_pb2_grpc as adm_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import make_model, make_version

pytestmark = pytest.mark.usefixtures("clean")
ALIAS = "namespaces/default/models/m/aliases/production"
MOVES = 40
READERS = 32


async def test_concurrent_strong_reads_are_batched_and_never_older_than_an_acked_move(
    stub: rs_grpc.RegistryServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await make_model(stub)
    for _ in range(MOVES):
        await make_version(stub)
    admin = adm_grpc.AdminServiceStub(channel)
    await admin.GetServerStats(adm.GetServerStatsRequest(reset=True))
    acked = 0  # the highest version a SetAlias acknowledged so far: targets only rise
    moving = True
    violations = answers = 0

    async def read() -> None:
        nonlocal violations, answers
        request = rs.ResolveReferenceRequest(
            reference="m@production", consistency=pb.CONSISTENCY_STRONG
        )
        while moving:
            floor = acked
            reply = await stub.ResolveReference(request)
            answers += 1
            violations += reply.version.number < floor

    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    acked = 1
    readers = [asyncio.create_task(read()) for _ in range(READERS)]
    for number in range(2, MOVES + 1):
        await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=number))
        acked = number
        await asyncio.sleep(0.01)  # let the readers ask a few times per move
    moving = False
    await asyncio.gather(*readers)
    stats = await admin.GetServerStats(adm.GetServerStatsRequest())
    assert answers > MOVES
    assert violations == 0
    keys, batches = stats.counters["store.resolve.keys"], stats.counters["store.resolve.batches"]
    assert 0 < batches < answers  # several callers shared statements
    assert keys <= answers
