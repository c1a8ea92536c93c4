"""Every RPC refuses malformed input with INVALID_ARGUMENT naming the field, and the
database is unchanged afterwards."""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import make_model, make_version, rich_status, violations_of

M = "namespaces/default/models/m"
V1 = f"{M}/versions/1"
ALIAS = f"{M}/aliases/prod"
LONG = "x" * 5000


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


CASES: list[tuple[str, str, Any, str]] = [
    ("CreateNamespace", "empty id", rs.CreateNamespaceRequest(namespace_id=""), "namespace_id"),
    (
        "CreateNamespace",
        "upper case",
        rs.CreateNamespaceRequest(namespace_id="Team"),
        "namespace_id",
    ),
    (
        "CreateNamespace",
        "64 chars",
        rs.CreateNamespaceRequest(namespace_id="a" * 64),
        "namespace_id",
    ),
    (
        "CreateNamespace",
        "long description",
        rs.CreateNamespaceRequest(namespace_id="ok", namespace=pb.Namespace(description=LONG)),
        "namespace.description",
    ),
    (
        "CreateNamespace",
        "long request_id",
        rs.CreateNamespaceRequest(namespace_id="ok", request_id=LONG),
        "request_id",
    ),
    ("GetNamespace", "no prefix", rs.GetNamespaceRequest(name="default"), "name"),
    ("ListNamespaces", "negative page size", rs.ListNamespacesRequest(page_size=-1), "page_size"),
    ("ListNamespaces", "garbage token", rs.ListNamespacesRequest(page_token="%%%"), "page_token"),
    (
        "CreateModel",
        "bad parent",
        rs.CreateModelRequest(parent="ns/default", model_id="x"),
        "parent",
    ),
    (
        "CreateModel",
        "bad model id",
        rs.CreateModelRequest(parent="namespaces/default", model_id="a b"),
        "model_id",
    ),
    (
        "CreateModel",
        "bad tag",
        rs.CreateModelRequest(
            parent="namespaces/default", model_id="x", model=pb.Model(tags=["a b"])
        ),
        "model.tags",
    ),
    (
        "CreateModel",
        "bad label key",
        rs.CreateModelRequest(
            parent="namespaces/default", model_id="x", model=pb.Model(labels={"1a": "b"})
        ),
        "model.labels",
    ),
    ("GetModel", "too deep", rs.GetModelRequest(name=V1), "name"),
    (
        "ListModels",
        "bad order",
        rs.ListModelsRequest(parent="namespaces/default", order_by="size"),
        "order_by",
    ),
    (
        "ListModels",
        "negative page size",
        rs.ListModelsRequest(parent="namespaces/default", page_size=-5),
        "page_size",
    ),
    (
        "ListModels",
        "bad prefix",
        rs.ListModelsRequest(parent="namespaces/default", name_prefix="A*"),
        "name_prefix",
    ),
    (
        "UpdateModel",
        "unknown mask field",
        rs.UpdateModelRequest(model=pb.Model(name=M), update_mask=mask("owner")),
        "update_mask",
    ),
    ("UpdateModel", "empty mask", rs.UpdateModelRequest(model=pb.Model(name=M)), "update_mask"),
    (
        "UpdateModel",
        "long description",
        rs.UpdateModelRequest(
            model=pb.Model(name=M, description=LONG), update_mask=mask("description")
        ),
        "model.description",
    ),
    (
        "UpdateModel",
        "bad name",
        rs.UpdateModelRequest(model=pb.Model(name="m"), update_mask=mask("tags")),
        "model.name",
    ),
    ("DeleteModel", "empty name", rs.DeleteModelRequest(name=""), "name"),
    ("UndeleteModel", "bad name", rs.UndeleteModelRequest(name="namespaces//models/m"), "name"),
    ("CreateModelVersion", "bad parent", rs.CreateModelVersionRequest(parent="m"), "parent"),
    (
        "CreateModelVersion",
        "archived state",
        rs.CreateModelVersionRequest(
            parent=M, version=pb.ModelVersion(state=pb.MODEL_VERSION_STATE_ARCHIVED)
        ),
        "version.state",
    ),
    (
        "CreateModelVersion",
        "unknown state",
        rs.CreateModelVersionRequest(parent=M, version=pb.ModelVersion(state=42)),  # type: ignore[arg-type]
        "version.state",
    ),
    (
        "CreateModelVersion",
        "infinite metric",
        rs.CreateModelVersionRequest(
            parent=M, version=pb.ModelVersion(metrics={"auc": float("inf")})
        ),
        "version.metrics[auc]",
    ),
    (
        "CreateModelVersion",
        "long param",
        rs.CreateModelVersionRequest(parent=M, version=pb.ModelVersion(params={"lr": LONG})),
        "version.params[lr]",
    ),
    (
        "CreateModelVersion",
        "long run id",
        rs.CreateModelVersionRequest(
            parent=M, version=pb.ModelVersion(source=pb.VersionSource(run_id=LONG))
        ),
        "version.source.run_id",
    ),
    ("GetModelVersion", "zero", rs.GetModelVersionRequest(name=f"{M}/versions/0"), "name"),
    ("GetModelVersion", "leading zero", rs.GetModelVersionRequest(name=f"{M}/versions/01"), "name"),
    ("GetModelVersion", "not a number", rs.GetModelVersionRequest(name=f"{M}/versions/x"), "name"),
    (
        "GetModelVersion",
        "overflow",
        rs.GetModelVersionRequest(name=f"{M}/versions/{2**64}"),
        "name",
    ),
    (
        "ListModelVersions",
        "negative page size",
        rs.ListModelVersionsRequest(parent=M, page_size=-1),
        "page_size",
    ),
    (
        "ListModelVersions",
        "bad order",
        rs.ListModelVersionsRequest(parent=M, order_by="digest"),
        "order_by",
    ),
    (
        "ListModelVersions",
        "unspecified state",
        rs.ListModelVersionsRequest(parent=M, states=[pb.MODEL_VERSION_STATE_UNSPECIFIED]),
        "states",
    ),
    (
        "ListModelVersions",
        "token from another query",
        rs.ListModelVersionsRequest(parent=M, page_token="TOKEN_OF_ANOTHER_QUERY"),
        "page_token",
    ),
    (
        "UpdateModelVersion",
        "immutable digest",
        rs.UpdateModelVersionRequest(
            version=pb.ModelVersion(name=V1, digest="x"), update_mask=mask("digest")
        ),
        "update_mask",
    ),
    (
        "UpdateModelVersion",
        "state via mask",
        rs.UpdateModelVersionRequest(version=pb.ModelVersion(name=V1), update_mask=mask("state")),
        "update_mask",
    ),
    (
        "UpdateModelVersion",
        "bad tags",
        rs.UpdateModelVersionRequest(
            version=pb.ModelVersion(name=V1, tags=["x" * 70]), update_mask=mask("tags")
        ),
        "version.tags",
    ),
    ("ArchiveModelVersion", "bad name", rs.ArchiveModelVersionRequest(name=M), "name"),
    (
        "RestoreModelVersion",
        "bad name",
        rs.RestoreModelVersionRequest(name=f"{M}/versions/-1"),
        "name",
    ),
    (
        "SetAlias",
        "all digits",
        rs.SetAliasRequest(name=f"{M}/aliases/123", version_number=1),
        "name",
    ),
    (
        "SetAlias",
        "reserved latest",
        rs.SetAliasRequest(name=f"{M}/aliases/latest", version_number=1),
        "name",
    ),
    (
        "SetAlias",
        "version zero",
        rs.SetAliasRequest(name=ALIAS, version_number=0),
        "version_number",
    ),
    (
        "SetAlias",
        "negative version",
        rs.SetAliasRequest(name=ALIAS, version_number=-3),
        "version_number",
    ),
    ("DeleteAlias", "bad alias", rs.DeleteAliasRequest(name=f"{M}/aliases/Prod"), "name"),
    ("ListAliases", "bad parent", rs.ListAliasesRequest(parent="namespaces/default"), "parent"),
    (
        "ListAliasHistory",
        "negative page size",
        rs.ListAliasHistoryRequest(name=ALIAS, page_size=-1),
        "page_size",
    ),
    ("RollbackAlias", "bad alias", rs.RollbackAliasRequest(name=f"{M}/aliases/"), "name"),
    ("ResolveReference", "empty", rs.ResolveReferenceRequest(reference=""), "reference"),
    (
        "ResolveReference",
        "too many parts",
        rs.ResolveReferenceRequest(reference="a/b/c"),
        "reference",
    ),
    (
        "ResolveReference",
        "digit alias",
        rs.ResolveReferenceRequest(reference="default/m@42"),
        "reference",
    ),
    (
        "ResolveReference",
        "bad number",
        rs.ResolveReferenceRequest(reference="default/m:v1"),
        "reference",
    ),
    ("ResolveReference", "over-long", rs.ResolveReferenceRequest(reference="m" * 400), "reference"),
    (
        "BatchGetModelVersions",
        "over the limit",
        rs.BatchGetModelVersionsRequest(references=["m:1"] * 1001),
        "references",
    ),
]


async def _state(db: asyncpg.Connection) -> tuple[Any, ...]:
    return tuple(
        await db.fetchrow(
            """SELECT (SELECT count(*) FROM namespaces), (SELECT count(*) FROM models),
                      (SELECT coalesce(sum(revision), 0) FROM models),
                      (SELECT count(*) FROM model_versions),
                      (SELECT coalesce(sum(revision), 0) FROM model_versions),
                      (SELECT count(*) FROM aliases), (SELECT count(*) FROM events),
                      (SELECT count(*) FROM request_ids)"""
        )
    )


@pytest.fixture
async def populated(clean: None, stub: rs_grpc.RegistryServiceStub) -> None:
    await make_model(stub)
    await make_version(stub)
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))


@pytest.mark.parametrize(
    ("method", "case", "request_message", "field"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
async def test_bad_input_is_invalid_argument_naming_the_field(  # noqa: PLR0917 - parametrized
    populated: None,
    stub: rs_grpc.RegistryServiceStub,
    db: asyncpg.Connection,
    method: str,
    case: str,
    request_message: Any,
    field: str,
) -> None:
    if request_message.DESCRIPTOR.fields_by_name.get("page_token") and "another" in case:
        request_message.page_token = await _token_of_another_query(stub)
    before = await _state(db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request_message)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert field in violations_of(rich_status(caught.value))
    assert await _state(db) == before


async def _token_of_another_query(stub: rs_grpc.RegistryServiceStub) -> str:
    await make_version(stub)
    reply = await stub.ListModelVersions(
        rs.ListModelVersionsRequest(parent=M, order_by="number", page_size=1)
    )
    assert reply.next_page_token
    return reply.next_page_token


def test_every_rpc_has_a_bad_input_case() -> None:
    methods = {m.name for m in rs.DESCRIPTOR.services_by_name["RegistryService"].methods}
    assert methods <= {c[0] for c in CASES}


async def test_batch_items_keep_order_with_per_item_errors(
    populated: None, stub: rs_grpc.RegistryServiceStub
) -> None:
    refs = ["m:1", "default/m@prod", "bad ref", "m:9", "nosuch", "m"]
    reply = await stub.BatchGetModelVersions(rs.BatchGetModelVersionsRequest(references=refs))
    assert [r.reference for r in reply.results] == refs
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["version", "version", "error", "error", "error", "version"]
    codes = [r.error.code for r in reply.results if r.HasField("error")]
    assert codes == [
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
    ]
