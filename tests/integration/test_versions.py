"""Version numbering, idempotent creates, etags and paging, against real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import authed_channel, make_model, make_version

pytestmark = pytest.mark.usefixtures("clean")
MODEL = "namespaces/default/models/m"


async def test_200_concurrent_creates_from_several_clients_are_dense(
    stub: rs_grpc.RegistryServiceAsyncStub, target: str
) -> None:
    await make_model(stub)
    channels = [authed_channel(target) for _ in range(4)]
    stubs = [rs_grpc.RegistryServiceStub(c) for c in channels]
    try:
        replies = await asyncio.gather(
            *(
                stubs[i % 4].CreateModelVersion(rs.CreateModelVersionRequest(parent=MODEL))
                for i in range(200)
            )
        )
    finally:
        await asyncio.gather(*(c.close(grace=None) for c in channels))
    numbers = sorted(r.version.number for r in replies)
    assert numbers == list(range(1, 201))
    model = await stub.GetModel(rs.GetModelRequest(name=MODEL))
    assert model.model.latest_version_number == 200


async def test_retried_create_with_same_request_id_creates_nothing_new(
    stub: rs_grpc.RegistryServiceAsyncStub, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    request = rs.CreateModelVersionRequest(parent=MODEL, request_id="req-1")
    first, *retries = await asyncio.gather(*(stub.CreateModelVersion(request) for _ in range(5)))
    assert {r.version.name for r in retries} == {first.version.name}
    assert await db.fetchval("SELECT count(*) FROM model_versions") == 1
    assert await db.fetchval("SELECT count(*) FROM events WHERE kind = 'version.created'") == 1
    again = await stub.CreateModelVersion(request)
    assert again.version.name == first.version.name


async def test_request_id_reused_for_another_request_is_refused(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    await make_model(stub)
    await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=MODEL, request_id="r"))
    other = rs.CreateModelVersionRequest(
        parent=MODEL, request_id="r", version=pb.ModelVersion(description="something else")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateModelVersion(other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stale_etag_is_aborted_and_changes_nothing(
    stub: rs_grpc.RegistryServiceAsyncStub, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    version = await make_version(stub)
    mask = field_mask_pb2.FieldMask(paths=["description"])
    fresh = pb.ModelVersion(name=version.name, description="first", etag=version.etag)
    updated = await stub.UpdateModelVersion(
        rs.UpdateModelVersionRequest(version=fresh, update_mask=mask)
    )
    assert updated.version.etag != version.etag
    events_before = await db.fetchval("SELECT count(*) FROM events")
    stale = pb.ModelVersion(name=version.name, description="second", etag=version.etag)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateModelVersion(rs.UpdateModelVersionRequest(version=stale, update_mask=mask))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    now = await stub.GetModelVersion(
        rs.GetModelVersionRequest(name=version.name, consistency=pb.CONSISTENCY_STRONG)
    )
    assert now.version.description == "first"
    assert await db.fetchval("SELECT count(*) FROM events") == events_before


async def _seed_versions(db: asyncpg.Connection, count: int) -> None:
    model_id = await db.fetchval("SELECT model_id FROM models WHERE name = 'm'")
    await db.copy_records_to_table(
        "model_versions",
        records=[(model_id, n, 2) for n in range(1, count + 1)],
        columns=["model_id", "number", "state"],
    )
    await db.execute("UPDATE models SET last_version = $1 WHERE model_id = $2", count, model_id)


async def _page_all(stub: rs_grpc.RegistryServiceAsyncStub, **query: Any) -> list[int]:
    seen: list[int] = []
    token = ""
    while True:
        reply = await stub.ListModelVersions(
            rs.ListModelVersionsRequest(parent=MODEL, page_size=97, page_token=token, **query)
        )
        seen += [v.number for v in reply.versions]
        token = reply.next_page_token
        if not token:
            return seen


@pytest.mark.slow
async def test_paging_10000_versions_returns_each_once_while_versions_are_created(
    stub: rs_grpc.RegistryServiceAsyncStub, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    await _seed_versions(db, 10_000)
    stop = asyncio.Event()

    async def create_more() -> int:
        made = 0
        while not stop.is_set():
            await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=MODEL))
            made += 1
        return made

    writer = asyncio.create_task(create_more())
    try:
        newest_first = await _page_all(stub)
        oldest_first = await _page_all(stub, order_by="number")
    finally:
        stop.set()
        made = await writer
    assert made > 0
    assert newest_first == sorted(newest_first, reverse=True)
    assert len(newest_first) == len(set(newest_first))
    assert set(range(1, 10_001)) <= set(newest_first)
    assert oldest_first[:10_000] == list(range(1, 10_001))
    assert len(oldest_first) == len(set(oldest_first))


async def test_state_filter_and_page_token_bound_to_query(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    await make_model(stub)
    for ready in (True, False, True):
        await make_version(stub, ready=ready)
    reply = await stub.ListModelVersions(
        rs.ListModelVersionsRequest(
            parent=MODEL, states=[pb.MODEL_VERSION_STATE_READY], page_size=1
        )
    )
    assert [v.number for v in reply.versions] == [3]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModelVersions(
            rs.ListModelVersionsRequest(parent=MODEL, page_token=reply.next_page_token)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rest = await stub.ListModelVersions(
        rs.ListModelVersionsRequest(
            parent=MODEL, states=[pb.MODEL_VERSION_STATE_READY], page_token=reply.next_page_token
        )
    )
    assert [v.number for v in rest.versions] == [1]
