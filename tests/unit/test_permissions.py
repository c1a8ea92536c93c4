"""The RPC -> permission table is complete: every RPC of every service the server
registers (app.SERVICE_NAMES, from their descriptors) has a row, and every row names a
method that exists (STYLE.md rule 15)."""

from __future__ import annotations

from google.protobuf import descriptor_pool

from modelreg.api.permissions import RULES, Where
from modelreg.app import SERVICE_NAMES
from modelreg.domain.access import Permission
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs


def _registered_methods() -> set[str]:
    import grpc_reflection.v1alpha.reflection_pb2  # noqa: F401 - puts it in the pool

    pool = descriptor_pool.Default()
    methods = set()
    for service_name in SERVICE_NAMES:
        service = pool.FindServiceByName(service_name)
        methods |= {f"/{service.full_name}/{method.name}" for method in service.methods}
    return methods


def test_every_rpc_has_a_rule() -> None:
    missing = _registered_methods() - set(RULES)
    assert not missing, f"add rows to api/permissions.RULES for {sorted(missing)}"


def test_every_rule_names_a_registered_rpc() -> None:
    unknown = set(RULES) - _registered_methods()
    assert not unknown, f"rules for methods no service has: {sorted(unknown)}"


def test_only_health_and_reflection_are_open() -> None:
    open_ = {m for m, rule in RULES.items() if rule.permission is None}
    assert {m.split("/")[1] for m in open_} == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_mutations_are_the_rpcs_whose_response_carries_a_revision() -> None:
    """services.py stamps `revision` on every mutation that commits to the change log;
    each must be marked a mutation (its refusals are recorded)."""
    pool = descriptor_pool.Default()
    for method, rule in RULES.items():
        if rule.permission is None:
            continue
        service, name = method.strip("/").split("/")
        found = pool.FindServiceByName(service).methods_by_name[name]
        if found.server_streaming:  # a stream's messages are not mutation responses
            assert not rule.mutates, method
            continue
        if "revision" in found.output_type.fields_by_name:
            assert rule.mutates, method
    # webhook subscriptions change state outside the change log (no revision)
    W = "/modelreg.v1.WebhookService/"
    assert all(RULES[W + m].mutates for m in ("CreateWebhook", "DeleteWebhook", "RedeliverWebhook"))


def test_scopes_read_the_namespace_from_the_request() -> None:
    R = "/modelreg.v1.RegistryService/"
    cases = [
        (R + "SetAlias", rs.SetAliasRequest(name="namespaces/ml/models/m/aliases/prod"), "ml"),
        (R + "CreateModel", rs.CreateModelRequest(parent="namespaces/cv", model_id="m"), "cv"),
        (R + "ResolveReference", rs.ResolveReferenceRequest(reference="m@prod"), "default"),
        (
            R + "GetModelVersion",
            rs.GetModelVersionRequest(name="namespaces/a/models/m/versions/1"),
            "a",
        ),
    ]
    for method, request, namespace in cases:
        assert RULES[method].namespace(request) == namespace
    upload = art.UploadFileRequest(
        header=art.UploadHeader(version="namespaces/ml/models/m/versions/3")
    )
    assert RULES["/modelreg.v1.ArtifactService/UploadFile"].namespace(upload) == "ml"


def test_the_table_uses_the_permissions_the_issue_names() -> None:
    R = "/modelreg.v1.RegistryService/"
    assert RULES[R + "GetModelVersion"].permission is Permission.MODELS_READ
    assert RULES[R + "CreateModelVersion"].permission is Permission.MODELS_WRITE
    assert RULES[R + "SetAlias"].permission is Permission.ALIASES_MOVE
    assert RULES[R + "DeleteModel"].permission is Permission.MODELS_DELETE
    assert RULES["/modelreg.v1.AdminService/GetServerStats"].scope is Where.GLOBAL
