"""The RPC x caller matrix (issue 11): every RPC of every service, taken from the service
descriptors (tests/integration/rpcs.py), called by each caller of
tests/integration/callers.py with a request that would succeed if it were allowed
(tests/integration/scenarios.py), gives the expected code; a denied call leaves every
table unchanged (a refused mutation by a known caller adds only its denial record); an
allowed write leaves exactly one event."""

from __future__ import annotations

import itertools

import asyncpg
import grpc
import pytest

from modelreg.v1 import registry_service_pb2 as rs
from tests.integration.callers import Caller, matrix_callers, stubs_on
from tests.integration.rpcs import BY_NAME, RPCS, stored_state
from tests.integration.scenarios import SCENARIOS, Role, Scenario

pytestmark = pytest.mark.usefixtures("clean")

DENIALS = 10  # the denials count's place in stored_state
_fresh = itertools.count()


def allowed(scenario: Scenario, caller: Caller) -> bool:
    """Whether the spec lets `caller` make the call (for a per-item call: be answered)."""
    if not caller.authenticated:
        return False
    if scenario.role is Role.ANY or caller.global_admin:
        return True
    if scenario.global_scope:
        return False
    held = [caller.team_role] + ([caller.other_role] if scenario.anywhere else [])
    return any(role is not None and role.value >= scenario.role.value for role in held)


def _without_denials(state: tuple[object, ...]) -> tuple[object, ...]:
    return state[:DENIALS] + state[DENIALS + 1 :]


async def _call(caller: Caller, name: str, request: object) -> grpc.StatusCode:
    bodies = request if isinstance(request, list) else [request]
    raw = [b.SerializeToString() for b in bodies]  # type: ignore[union-attr]
    try:
        await BY_NAME[name].call(caller.channel, raw if isinstance(request, list) else raw[0])
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_rpc_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(rpc.name for rpc in RPCS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_each_caller_gets_the_expected_code_and_a_denial_changes_nothing(
    name: str, target: str, channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    scenario = SCENARIOS[name]
    admin = stubs_on(channel)
    async with matrix_callers(target, admin, db) as (callers, requester):
        builder = stubs_on(channel, requester)
        wrong = []
        for caller in callers:
            request = await scenario.build(builder, "team", f"x{next(_fresh)}")
            before = await stored_state(db)
            code = await _call(caller, name, request)
            after = await stored_state(db)
            expected = _expected_code(scenario, caller)
            if code != expected:
                wrong.append(f"{caller.name}: {code.name}, expected {expected.name}")
                continue
            events = after[9] - before[9]
            if code != grpc.StatusCode.OK:
                recorded = after[DENIALS] - before[DENIALS]
                if _without_denials(before) != _without_denials(after):
                    wrong.append(f"{caller.name}: a refused call changed the tables")
                if recorded != (1 if scenario.writes and caller.authenticated else 0):
                    wrong.append(f"{caller.name}: {recorded} denial records")
            elif events != (1 if scenario.writes else 0):
                wrong.append(f"{caller.name}: an allowed call wrote {events} events")
        assert not wrong, f"{name}: " + "; ".join(wrong)


def _expected_code(scenario: Scenario, caller: Caller) -> grpc.StatusCode:
    if not caller.authenticated:
        return grpc.StatusCode.UNAUTHENTICATED
    if scenario.per_item or allowed(scenario, caller):
        return grpc.StatusCode.OK  # a per-item call answers; what it answers is filtered
    return grpc.StatusCode.PERMISSION_DENIED


async def test_a_batch_refuses_only_the_items_the_caller_may_not_read(
    target: str, channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    admin = stubs_on(channel)
    async with matrix_callers(target, admin, db) as (callers, _):
        names = []
        for ns in ("team", "other"):
            await admin.registry.CreateModel(
                rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id="m")
            )
            made = await admin.registry.CreateModelVersion(
                rs.CreateModelVersionRequest(parent=f"namespaces/{ns}/models/m")
            )
            names.append(made.version.name)
        names.append("namespaces/other/models/missing/versions/1")
        viewer = next(c for c in callers if c.name == "viewer")
        stub = stubs_on(viewer.channel).registry
        reply = await stub.BatchGetModelVersions(rs.BatchGetModelVersionsRequest(references=names))
        codes = [r.error.code if r.HasField("error") else 0 for r in reply.results]
        denied = grpc.StatusCode.PERMISSION_DENIED.value[0]
        # a missing model in a hidden namespace answers as an existing one does
        assert codes == [0, denied, denied]


async def test_a_search_answers_only_the_namespaces_the_caller_may_read(
    target: str, channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    admin = stubs_on(channel)
    async with matrix_callers(target, admin, db) as (callers, _):
        for ns in ("team", "other"):
            await admin.registry.CreateModel(
                rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id="searched")
            )
            for _ in range(3):
                await admin.registry.CreateModelVersion(
                    rs.CreateModelVersionRequest(parent=f"namespaces/{ns}/models/searched")
                )
        request = rs.SearchModelVersionsRequest(filter="name = searched", page_size=2)
        seen: dict[str, list[str]] = {}
        for caller in callers:
            if caller.name not in ("viewer", "other-editor", "admin"):
                continue
            stub, names, token = stubs_on(caller.channel).registry, [], ""
            while True:
                request.page_token = token
                reply = await stub.SearchModelVersions(request)
                assert reply.versions or not token  # no empty page before the end
                names += [v.name for v in reply.versions]
                token = reply.next_page_token
                if not token:
                    break
            seen[caller.name] = names
        assert {n.split("/")[1] for n in seen["viewer"]} == {"team"}
        assert len(seen["viewer"]) == 3
        assert {n.split("/")[1] for n in seen["other-editor"]} == {"other"}
        assert len(seen["admin"]) == 6
