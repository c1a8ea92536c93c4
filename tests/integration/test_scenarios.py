"""Every RPC's scenario (tests/integration/scenarios.py) is a call that succeeds, and
each allowed write leaves exactly one event: the ground the access matrix stands on."""

from __future__ import annotations

import itertools

import asyncpg
import grpc
import pytest

from modelreg.v1 import (
    admin_service_pb2_grpc,
    approval_service_pb2_grpc,
    artifact_service_pb2_grpc,
    registry_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from tests.integration.rpcs import BY_NAME, RPCS
from tests.integration.scenarios import SCENARIOS, Stubs

pytestmark = pytest.mark.usefixtures("clean")

_fresh = itertools.count()


def stubs_on(channel: grpc.aio.Channel) -> Stubs:
    """An admin's stubs on `channel`."""
    return Stubs(
        registry=registry_service_pb2_grpc.RegistryServiceStub(channel),
        artifacts=artifact_service_pb2_grpc.ArtifactServiceStub(channel),
        admin=admin_service_pb2_grpc.AdminServiceStub(channel),
        webhooks=webhook_service_pb2_grpc.WebhookServiceStub(channel),
        approvals=approval_service_pb2_grpc.ApprovalServiceStub(channel),
    )


def test_every_rpc_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(rpc.name for rpc in RPCS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_succeeds_and_a_write_leaves_one_event(
    name: str, channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    scenario = SCENARIOS[name]
    request = await scenario.build(stubs_on(channel), "default", f"s{next(_fresh)}")
    before = await db.fetchval("SELECT count(*) FROM events")
    bodies = request if isinstance(request, list) else [request]
    await BY_NAME[name].call(
        channel,
        [b.SerializeToString() for b in bodies]
        if isinstance(request, list)
        else request.SerializeToString(),
    )
    written = await db.fetchval("SELECT count(*) FROM events") - before
    assert written == (1 if scenario.writes else 0), f"{name} wrote {written} events"
