"""NOT_FOUND, ALREADY_EXISTS and FAILED_PRECONDITION where they belong; aliases,
rollback, soft delete and archive as a user of a production registry expects."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import bearer_of, make_model, make_version, reason_of, rich_status

M = "namespaces/default/models/m"
ALIAS = f"{M}/aliases/production"
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

pytestmark = pytest.mark.usefixtures("clean")


async def expect(code: grpc.StatusCode, call: Any, request: Any) -> str:
    """Make a call that must fail with `code`; return its ErrorInfo reason."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request)
    assert caught.value.code() == code, caught.value.details()
    return reason_of(rich_status(caught.value))


@pytest.fixture
async def three_versions(stub: rs_grpc.RegistryServiceAsyncStub) -> None:
    await make_model(stub)
    for _ in range(3):
        await make_version(stub)


async def test_not_found(stub: rs_grpc.RegistryServiceAsyncStub, three_versions: None) -> None:
    await expect(NOT_FOUND, stub.GetNamespace, rs.GetNamespaceRequest(name="namespaces/nope"))
    await expect(NOT_FOUND, stub.GetModel, rs.GetModelRequest(name="namespaces/default/models/x"))
    await expect(
        NOT_FOUND, stub.CreateModel, rs.CreateModelRequest(parent="namespaces/nope", model_id="m")
    )
    await expect(NOT_FOUND, stub.CreateModelVersion, rs.CreateModelVersionRequest(parent=f"{M}x"))
    await expect(NOT_FOUND, stub.GetModelVersion, rs.GetModelVersionRequest(name=f"{M}/versions/4"))
    await expect(NOT_FOUND, stub.ListModelVersions, rs.ListModelVersionsRequest(parent=f"{M}x"))
    await expect(NOT_FOUND, stub.SetAlias, rs.SetAliasRequest(name=ALIAS, version_number=9))
    await expect(NOT_FOUND, stub.DeleteAlias, rs.DeleteAliasRequest(name=ALIAS))
    await expect(NOT_FOUND, stub.ListAliases, rs.ListAliasesRequest(parent=f"{M}x"))
    await expect(
        NOT_FOUND, stub.ResolveReference, rs.ResolveReferenceRequest(reference="m@production")
    )
    await expect(
        NOT_FOUND, stub.ArchiveModelVersion, rs.ArchiveModelVersionRequest(name=f"{M}/versions/7")
    )


async def test_already_exists(stub: rs_grpc.RegistryServiceAsyncStub, three_versions: None) -> None:
    await expect(EXISTS, stub.CreateNamespace, rs.CreateNamespaceRequest(namespace_id="default"))
    await expect(
        EXISTS, stub.CreateModel, rs.CreateModelRequest(parent="namespaces/default", model_id="m")
    )


async def test_latest_skips_pending_archived_and_fails_without_ready(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    await make_model(stub)
    reason = await expect(
        NOT_FOUND, stub.ResolveReference, rs.ResolveReferenceRequest(reference="m")
    )
    assert reason == "NO_READY_VERSION"
    await make_version(stub)
    await make_version(stub)
    await make_version(stub, ready=False)
    await stub.ArchiveModelVersion(rs.ArchiveModelVersionRequest(name=f"{M}/versions/2"))
    latest = await stub.ResolveReference(rs.ResolveReferenceRequest(reference="default/m"))
    assert latest.version.number == 1
    await stub.RestoreModelVersion(rs.RestoreModelVersionRequest(name=f"{M}/versions/2"))
    latest = await stub.ResolveReference(rs.ResolveReferenceRequest(reference="m@latest"))
    assert latest.version.number == 2


async def test_alias_rules(stub: rs_grpc.RegistryServiceAsyncStub, three_versions: None) -> None:
    await make_version(stub, ready=False)  # version 4 is PENDING
    reason = await expect(
        PRECONDITION, stub.SetAlias, rs.SetAliasRequest(name=ALIAS, version_number=4)
    )
    assert reason == "VERSION_NOT_READY"
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
    reason = await expect(
        PRECONDITION,
        stub.ArchiveModelVersion,
        rs.ArchiveModelVersionRequest(name=f"{M}/versions/2"),
    )
    assert reason == "VERSION_HAS_ALIASES"
    reason = await expect(
        grpc.StatusCode.ABORTED,
        stub.SetAlias,
        rs.SetAliasRequest(name=ALIAS, version_number=3, expected_version_number=1),
    )
    assert reason == "ALIAS_MOVED"
    moved = await stub.SetAlias(
        rs.SetAliasRequest(name=ALIAS, version_number=3, expected_version_number=2)
    )
    assert (moved.alias.version_number, moved.previous_version_number) == (3, 2)
    again = await stub.SetAlias(
        rs.SetAliasRequest(name=ALIAS, version_number=3, expected_version_number=2)
    )
    assert again.alias.etag == moved.alias.etag  # a retry of a done move changes nothing


async def test_rollback_and_history(
    stub: rs_grpc.RegistryServiceAsyncStub, channel: grpc.aio.Channel, three_versions: None
) -> None:
    reason = await expect(NOT_FOUND, stub.RollbackAlias, rs.RollbackAliasRequest(name=ALIAS))
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
    reason = await expect(PRECONDITION, stub.RollbackAlias, rs.RollbackAliasRequest(name=ALIAS))
    assert reason == "NO_PREVIOUS_VERSION"
    await stub.SetAlias(
        rs.SetAliasRequest(name=ALIAS, version_number=3), metadata=await bearer_of(channel, "ci")
    )
    rolled = await stub.RollbackAlias(rs.RollbackAliasRequest(name=ALIAS, request_id="rb-1"))
    assert (rolled.alias.version_number, rolled.previous_version_number) == (2, 3)
    retried = await stub.RollbackAlias(rs.RollbackAliasRequest(name=ALIAS, request_id="rb-1"))
    assert retried.alias.version_number == 2  # the retry did not roll back twice
    history = await stub.ListAliasHistory(rs.ListAliasHistoryRequest(name=ALIAS))
    moves = [(e.previous_version_number, e.version_number, e.actor) for e in history.events]
    assert moves == [(3, 2, "admin"), (2, 3, "ci"), (0, 2, "admin")]
    resolved = await stub.ResolveReference(
        rs.ResolveReferenceRequest(reference="default/m@production")
    )
    assert resolved.version.number == 2


async def test_soft_delete_hides_and_undelete_restores(
    stub: rs_grpc.RegistryServiceAsyncStub, three_versions: None
) -> None:
    model = (await stub.GetModel(rs.GetModelRequest(name=M))).model
    await expect(
        grpc.StatusCode.ABORTED, stub.DeleteModel, rs.DeleteModelRequest(name=M, etag='W/"99"')
    )
    deleted = await stub.DeleteModel(rs.DeleteModelRequest(name=M, etag=model.etag))
    assert deleted.model.HasField("delete_time")
    listed = await stub.ListModels(rs.ListModelsRequest(parent="namespaces/default"))
    assert list(listed.models) == []
    shown = await stub.ListModels(
        rs.ListModelsRequest(parent="namespaces/default", show_deleted=True)
    )
    assert [m.name for m in shown.models] == [M]
    reason = await expect(
        PRECONDITION, stub.ResolveReference, rs.ResolveReferenceRequest(reference="m:1")
    )
    assert reason == "MODEL_DELETED"
    await expect(PRECONDITION, stub.CreateModelVersion, rs.CreateModelVersionRequest(parent=M))
    await expect(PRECONDITION, stub.DeleteModel, rs.DeleteModelRequest(name=M))
    await stub.UndeleteModel(rs.UndeleteModelRequest(name=M))
    await expect(PRECONDITION, stub.UndeleteModel, rs.UndeleteModelRequest(name=M))
    resolved = await stub.ResolveReference(rs.ResolveReferenceRequest(reference="m"))
    assert resolved.version.number == 3


async def test_list_models_filters_orders_and_pages(stub: rs_grpc.RegistryServiceAsyncStub) -> None:
    for name, tags in [
        ("b-one", ["nlp"]),
        ("a-two", ["nlp", "prod"]),
        ("c-three", ["cv"]),
        ("a-four", []),
    ]:
        await stub.CreateModel(
            rs.CreateModelRequest(
                parent="namespaces/default", model_id=name, model=pb.Model(tags=tags)
            )
        )

    async def names(**query: Any) -> list[str]:
        found, token = [], ""
        while True:
            reply = await stub.ListModels(
                rs.ListModelsRequest(
                    parent="namespaces/default", page_size=1, page_token=token, **query
                )
            )
            found += [m.name.rsplit("/", 1)[1] for m in reply.models]
            if not (token := reply.next_page_token):
                return found

    assert await names() == ["a-four", "a-two", "b-one", "c-three"]
    assert await names(name_prefix="a-") == ["a-four", "a-two"]
    assert await names(tags=["nlp"]) == ["a-two", "b-one"]
    assert await names(tags=["nlp", "prod"]) == ["a-two"]
    assert await names(order_by="create_time") == ["b-one", "a-two", "c-three", "a-four"]
    assert await names(order_by="create_time desc") == ["a-four", "c-three", "a-two", "b-one"]


async def test_every_mutation_writes_an_event_with_actor(
    stub: rs_grpc.RegistryServiceAsyncStub, channel: grpc.aio.Channel, db: asyncpg.Connection
) -> None:
    # the authenticated principal is the actor: a declared x-modelreg-actor is ignored
    who = (*await bearer_of(channel, "alice"), ("x-modelreg-actor", "mallory"))
    await stub.CreateModel(
        rs.CreateModelRequest(parent="namespaces/default", model_id="m"), metadata=who
    )
    await stub.CreateModelVersion(
        rs.CreateModelVersionRequest(
            parent=M, version=pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
        ),
        metadata=who,
    )
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1), metadata=who)
    rows = await db.fetch(
        "SELECT kind, actor, resource FROM events"
        " WHERE kind NOT LIKE 'key.%' AND kind NOT LIKE 'access.%' ORDER BY event_id"
    )
    assert [(r["kind"], r["actor"]) for r in rows] == [
        ("model.created", "alice"),
        ("version.created", "alice"),
        ("alias.set", "alice"),
    ]
    assert rows[1]["resource"] == f"{M}/versions/1"
