"""Protected aliases with two-person approval, through a real grpc.aio server.

The server runs with `Settings(auth="off")` on loopback, so OpenGate admits the actor each
call declares in `x-modelreg-actor`: two "people" are two actor headers. Whether a caller
holds `approver` is the gate's job and arrives with the access branch; what is tested here
is the domain's rule (the requester never approves) and the compare-and-set apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import grpc
import pytest
from grpc_status import rpc_status

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.v1 import approval_service_pb2 as ap
from modelreg.v1 import approval_service_pb2_grpc as ap_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.helpers import make_model, make_version

pytestmark = pytest.mark.usefixtures("clean")
MODEL = "namespaces/default/models/m"
ALIAS = f"{MODEL}/aliases/production"


def who(name: str) -> tuple[tuple[str, str]]:
    return (("x-modelreg-actor", name),)


@pytest.fixture(scope="module")
async def open_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        home=tmp_path_factory.mktemp("approvals"),
        grace_seconds=1,
        auth="off",
    )
    async with AsyncExitStack() as stack:
        yield await start_server(settings, stack)


@pytest.fixture(scope="module")
async def channel(open_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{open_server.port}")
    yield channel
    await channel.close(grace=None)


@pytest.fixture
def reg(channel: grpc.aio.Channel) -> rs_grpc.RegistryServiceAsyncStub:
    return rs_grpc.RegistryServiceStub(channel)


@pytest.fixture
def appr(channel: grpc.aio.Channel) -> ap_grpc.ApprovalServiceAsyncStub:
    return ap_grpc.ApprovalServiceStub(channel)


async def protect(
    reg: rs_grpc.RegistryServiceAsyncStub, appr: ap_grpc.ApprovalServiceAsyncStub, needed: int = 1
) -> None:
    """Model m with READY versions 1..3, `production` at 1, then protected."""
    await make_model(reg)
    for _ in range(3):
        await make_version(reg)
    await reg.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))
    policy = ap.AliasPolicy(name=f"{MODEL}/aliasPolicy", aliases=["production"], approvals=needed)
    await appr.SetAliasPolicy(ap.SetAliasPolicyRequest(policy=policy), metadata=who("admin"))


async def request(appr: ap_grpc.ApprovalServiceAsyncStub, number: int = 2, ttl: int = 0) -> str:
    reply = await appr.CreateChangeRequest(
        ap.CreateChangeRequestRequest(
            parent=ALIAS, version_number=number, reason="better eval", ttl_seconds=ttl
        ),
        metadata=who("alice"),
    )
    assert reply.change_request.state == ap.CHANGE_REQUEST_STATE_PENDING
    assert reply.revision > 0
    return reply.change_request.name


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    from google.rpc import error_details_pb2

    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def target(db: asyncpg.Connection) -> int:
    number: int = await db.fetchval("SELECT number FROM aliases WHERE alias = 'production'")
    return number


async def moves(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM events WHERE kind = 'alias.set' AND resource = $1", ALIAS
    )
    return count


async def test_direct_moves_of_a_protected_alias_are_refused_and_change_nothing(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    events = await db.fetchval("SELECT count(*) FROM events")

    async def set_alias() -> object:
        return await reg.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))

    async def rollback_alias() -> object:
        return await reg.RollbackAlias(rs.RollbackAliasRequest(name=ALIAS))

    async def delete_alias() -> object:
        return await reg.DeleteAlias(rs.DeleteAliasRequest(name=ALIAS))

    for call in (set_alias, rollback_alias, delete_alias):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(caught.value) == "APPROVAL_REQUIRED"
        assert f"{ALIAS}/changeRequests" in (caught.value.details() or "")
        assert "modelreg alias request" in (caught.value.details() or "")
    assert await target(db) == 1
    assert await db.fetchval("SELECT count(*) FROM events") == events


async def test_the_requester_cannot_approve_and_another_person_applies_it(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    name = await request(appr)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await appr.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=name), metadata=who("alice")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(caught.value) == "REQUESTER_CANNOT_APPROVE"
    assert await target(db) == 1
    assert await db.fetchval("SELECT count(*) FROM change_request_approvals") == 0
    reply = await appr.ApproveChangeRequest(
        ap.ApproveChangeRequestRequest(name=name, comment="lgtm"), metadata=who("bob")
    )
    assert reply.change_request.state == ap.CHANGE_REQUEST_STATE_APPLIED
    assert [a.approver for a in reply.change_request.approvals] == ["bob"]
    assert await target(db) == 2
    history = await reg.ListAliasHistory(rs.ListAliasHistoryRequest(name=ALIAS))
    newest = history.events[0]
    assert (newest.version_number, newest.previous_version_number) == (2, 1)
    assert newest.change_request == name
    assert list(newest.approvers) == ["bob"]
    assert len(history.events) == 2  # the two moves; the request's own events are not moves
    kinds = [
        r["kind"]
        for r in await db.fetch(
            "SELECT kind FROM events WHERE resource = $1 ORDER BY event_id", ALIAS
        )
    ]
    assert kinds == [
        "alias.set",
        "change_request.created",
        "change_request.approved",
        "alias.set",
    ]


async def test_an_overtaken_request_is_aborted_and_changes_nothing_else(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    first, second = await request(appr, 2), await request(appr, 3)
    await appr.ApproveChangeRequest(
        ap.ApproveChangeRequestRequest(name=second), metadata=who("bob")
    )
    assert await target(db) == 3
    before = await moves(db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await appr.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=first), metadata=who("bob")
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "REQUEST_OVERTAKEN"
    assert await target(db) == 3
    assert await moves(db) == before
    got = await appr.GetChangeRequest(ap.GetChangeRequestRequest(name=first))
    assert got.change_request.state == ap.CHANGE_REQUEST_STATE_ABORTED


async def test_a_request_bound_to_a_digest_the_version_no_longer_has_is_not_applied(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    name = await request(appr, 2)
    got = await appr.GetChangeRequest(ap.GetChangeRequestRequest(name=name))
    # behind the server's back: the version's bytes are not the ones the request named
    await db.execute(
        "UPDATE model_versions SET digest = 'sha256:' || repeat('f', 64) WHERE number = 2"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await appr.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=name), metadata=who("bob")
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert got.change_request.digest in (caught.value.details() or "")
    assert await target(db) == 1


@pytest.mark.parametrize("needed", [1, 3])
async def test_ten_concurrent_approvals_move_the_alias_exactly_once(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
    needed: int,
) -> None:
    await protect(reg, appr, needed)
    name = await request(appr, 2)
    before = await moves(db)

    async def approve(i: int) -> str:
        try:
            reply = await appr.ApproveChangeRequest(
                ap.ApproveChangeRequestRequest(name=name), metadata=who(f"approver-{i}")
            )
        except grpc.aio.AioRpcError as error:
            return reason_of(error)
        return ap.ChangeRequestState.Name(reply.change_request.state)

    outcomes = await asyncio.gather(*(approve(i) for i in range(10)))
    assert outcomes.count("CHANGE_REQUEST_STATE_APPLIED") == 1
    assert outcomes.count("CHANGE_REQUEST_STATE_PENDING") == needed - 1
    assert outcomes.count("REQUEST_DECIDED") == 10 - needed
    violations = (await moves(db) - before) - 1
    assert violations == 0
    assert await target(db) == 2
    assert await db.fetchval("SELECT count(*) FROM change_request_approvals") == needed
    history = await reg.ListAliasHistory(rs.ListAliasHistoryRequest(name=ALIAS))
    assert len(history.events[0].approvers) == needed


async def test_an_expired_request_cannot_be_approved(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    name = await request(appr, 2, ttl=3600)
    # the clock is the database's: move the deadline into the past rather than wait
    await db.execute("UPDATE change_requests SET expire_time = now() - interval '1 second'")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await appr.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=name), metadata=who("bob")
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "REQUEST_EXPIRED"
    assert await target(db) == 1
    got = await appr.GetChangeRequest(ap.GetChangeRequestRequest(name=name))
    assert got.change_request.state == ap.CHANGE_REQUEST_STATE_EXPIRED
    expired = "SELECT count(*) FROM events WHERE kind = 'change_request.expired'"
    assert await db.fetchval(expired) == 1
    listed = await appr.ListChangeRequests(
        ap.ListChangeRequestsRequest(parent=ALIAS, state=ap.CHANGE_REQUEST_STATE_EXPIRED)
    )
    assert [r.name for r in listed.change_requests] == [name]


async def test_a_rejected_request_is_never_applied(
    reg: rs_grpc.RegistryServiceAsyncStub,
    appr: ap_grpc.ApprovalServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:
    await protect(reg, appr)
    name = await request(appr, 2)
    reply = await appr.RejectChangeRequest(
        ap.RejectChangeRequestRequest(name=name, reason="eval regressed"), metadata=who("bob")
    )
    assert reply.change_request.state == ap.CHANGE_REQUEST_STATE_REJECTED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await appr.ApproveChangeRequest(
            ap.ApproveChangeRequestRequest(name=name), metadata=who("carol")
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await target(db) == 1


async def test_the_sdk_protects_requests_and_approves_as_two_people(
    reg: rs_grpc.RegistryServiceAsyncStub, open_server: RunningServer, db: asyncpg.Connection
) -> None:
    from modelreg.client.aio import AsyncClient
    from modelreg.client.errors import PermissionDeniedError

    await make_model(reg)
    for _ in range(2):
        await make_version(reg)
    target_ = f"127.0.0.1:{open_server.port}"
    async with (
        AsyncClient(target_, actor="alice") as alice,
        AsyncClient(target_, actor="bob") as bob,
    ):
        await alice.set_alias("default/m", "production", 1)
        policy = await alice.set_alias_policy("default/m", ["production"], approvals=1)
        assert list(policy.aliases) == ["production"]
        requested = await alice.request_alias_move("default/m", "production", 2, reason="r")
        with pytest.raises(PermissionDeniedError):
            await alice.approve(requested.name)
        listed = await bob.list_change_requests(ALIAS)
        assert [r.name for r in listed] == [requested.name]
        applied = await bob.approve(requested.name, comment="ok")
        assert applied.state == ap.CHANGE_REQUEST_STATE_APPLIED
    assert await target(db) == 2
