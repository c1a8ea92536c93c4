"""A valid call of every RPC, and the role it needs: the spec the access matrix holds the
server to (tests/integration/test_access_matrix.py).

Each scenario builds, with an admin's stubs, whatever its call needs (a fresh model to
delete, a pending version to upload into...) and returns the request (a list of requests
for a client stream), so every caller in the matrix gets a call that would succeed if it
were allowed. The roles here are written by hand from the issue's table, not read from
the server's permission table: this is what that table must agree with.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from modelreg.v1 import access_service_pb2 as ac
from modelreg.v1 import (
    access_service_pb2_grpc,
    admin_service_pb2_grpc,
    approval_service_pb2_grpc,
    artifact_service_pb2_grpc,
    identity_service_pb2_grpc,
    lineage_service_pb2_grpc,
    registry_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from modelreg.v1 import (
    admin_service_pb2 as adm,
)
from modelreg.v1 import (
    approval_service_pb2 as ap,
)
from modelreg.v1 import (
    artifact_service_pb2 as art,
)
from modelreg.v1 import audit_service_pb2 as au
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import (
    registry_service_pb2 as rs,
)
from modelreg.v1 import (
    resources_pb2 as pb,
)
from modelreg.v1 import (
    watch_service_pb2 as wa,
)
from modelreg.v1 import (
    webhook_service_pb2 as wh,
)

PAYLOAD = b"modelreg scenario file\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Role(Enum):
    """The least a caller must hold for a call to be allowed, in the call's namespace
    (`scope` says when that is the whole registry instead)."""

    ANY = 0  # any authenticated caller
    VIEWER = 1
    EDITOR = 2
    APPROVER = 3
    ADMIN = 4


@dataclass(frozen=True)
class Stubs:
    """An admin's stubs, for building what a call needs."""

    registry: registry_service_pb2_grpc.RegistryServiceAsyncStub
    artifacts: artifact_service_pb2_grpc.ArtifactServiceAsyncStub
    admin: admin_service_pb2_grpc.AdminServiceAsyncStub
    webhooks: webhook_service_pb2_grpc.WebhookServiceAsyncStub
    approvals: approval_service_pb2_grpc.ApprovalServiceAsyncStub
    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    access: access_service_pb2_grpc.AccessServiceAsyncStub
    lineage: lineage_service_pb2_grpc.LineageServiceAsyncStub
    # the credentials of another editor, who makes the change requests approvers decide
    requester: tuple[tuple[str, str], ...]


Build = Callable[[Stubs, str, str], Awaitable[Message | list[Message]]]


@dataclass(frozen=True)
class Scenario:
    """A call's build, the role it needs, where (its namespace, or the whole registry),
    and whether it writes (an allowed one leaves exactly one event)."""

    build: Build
    role: Role
    global_scope: bool = False
    writes: bool = False
    per_item: bool = False  # the gate only authenticates; what is answered is filtered
    anywhere: bool = False  # the role in any namespace will do


async def _model(stubs: Stubs, ns: str, fresh: str) -> str:
    reply = await stubs.registry.CreateModel(
        rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=f"m-{fresh}")
    )
    return reply.model.name


async def _version(stubs: Stubs, ns: str, fresh: str, *, ready: bool = True) -> pb.ModelVersion:
    model = await _model(stubs, ns, fresh)
    reply = await stubs.registry.CreateModelVersion(
        rs.CreateModelVersionRequest(parent=model, version=pb.ModelVersion())
    )
    version = reply.version
    if not ready:
        return version
    await _upload_into(stubs, version.name)
    done = await stubs.artifacts.FinalizeModelVersion(
        art.FinalizeModelVersionRequest(name=version.name, files=[_entry()])
    )
    return done.version


def _entry() -> art.ManifestEntry:
    return art.ManifestEntry(path="model.bin", size=len(PAYLOAD), sha256=PAYLOAD_SHA)


def _upload_requests(version: str, *, finish: bool = True) -> list[Message]:
    header = art.UploadHeader(
        version=version,
        path="model.bin",
        size=len(PAYLOAD),
        sha256=PAYLOAD_SHA,
        upload_id=uuid.uuid4().hex,
    )
    data = PAYLOAD if finish else PAYLOAD[:4]
    return [
        art.UploadFileRequest(header=header),
        art.UploadFileRequest(data=data, finish_write=finish),
    ]


async def _upload_into(stubs: Stubs, version: str, *, finish: bool = True) -> str:
    """Upload the file into `version` (only its first bytes unless `finish`); the upload id."""
    sent = _upload_requests(version, finish=finish)

    async def requests() -> Any:
        for request in sent:
            yield request

    await stubs.artifacts.UploadFile(requests())
    return str(sent[0].header.upload_id)  # type: ignore[attr-defined]


async def _alias(stubs: Stubs, ns: str, fresh: str) -> tuple[str, pb.ModelVersion]:
    version = await _version(stubs, ns, fresh)
    model = version.name.rpartition("/versions/")[0]
    name = f"{model}/aliases/staging"
    await stubs.registry.SetAlias(rs.SetAliasRequest(name=name, version_number=version.number))
    return name, version


def _ref(version: pb.ModelVersion) -> str:
    return version.name


# --- RegistryService ---------------------------------------------------------------


async def create_namespace(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.CreateNamespaceRequest(namespace_id=f"n-{fresh}")


async def get_namespace(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.GetNamespaceRequest(name=f"namespaces/{ns}")


async def list_namespaces(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.ListNamespacesRequest()


async def create_model(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=f"new-{fresh}")


async def get_model(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.GetModelRequest(name=await _model(stubs, ns, fresh))


async def list_models(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.ListModelsRequest(parent=f"namespaces/{ns}")


async def update_model(stubs: Stubs, ns: str, fresh: str) -> Message:
    name = await _model(stubs, ns, fresh)
    return rs.UpdateModelRequest(
        model=pb.Model(name=name, description="changed"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )


async def delete_model(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.DeleteModelRequest(name=await _model(stubs, ns, fresh))


async def undelete_model(stubs: Stubs, ns: str, fresh: str) -> Message:
    name = await _model(stubs, ns, fresh)
    await stubs.registry.DeleteModel(rs.DeleteModelRequest(name=name))
    return rs.UndeleteModelRequest(name=name)


async def create_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    model = await _model(stubs, ns, fresh)
    return rs.CreateModelVersionRequest(parent=model, version=pb.ModelVersion())


async def import_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    model = await _model(stubs, ns, fresh)
    version = pb.ModelVersion(number=1, state=pb.MODEL_VERSION_STATE_READY)
    version.create_time.FromSeconds(1_700_000_000)
    return rs.ImportModelVersionRequest(parent=model, version=version)


async def get_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.GetModelVersionRequest(name=(await _version(stubs, ns, fresh)).name)


async def list_model_versions(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.ListModelVersionsRequest(parent=await _model(stubs, ns, fresh))


async def update_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    return rs.UpdateModelVersionRequest(
        version=pb.ModelVersion(name=version.name, description="changed"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
    )


async def archive_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    return rs.ArchiveModelVersionRequest(name=(await _version(stubs, ns, fresh)).name)


async def restore_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    await stubs.registry.ArchiveModelVersion(rs.ArchiveModelVersionRequest(name=version.name))
    return rs.RestoreModelVersionRequest(name=version.name)


async def set_alias(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    model = version.name.rpartition("/versions/")[0]
    return rs.SetAliasRequest(name=f"{model}/aliases/staging", version_number=version.number)


async def delete_alias(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, _ = await _alias(stubs, ns, fresh)
    return rs.DeleteAliasRequest(name=name)


async def list_aliases(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, _ = await _alias(stubs, ns, fresh)
    return rs.ListAliasesRequest(parent=name.rpartition("/aliases/")[0])


async def list_alias_history(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, _ = await _alias(stubs, ns, fresh)
    return rs.ListAliasHistoryRequest(name=name)


async def rollback_alias(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, first = await _alias(stubs, ns, fresh)
    model = first.name.rpartition("/versions/")[0]
    second = await stubs.registry.CreateModelVersion(
        rs.CreateModelVersionRequest(parent=model, version=pb.ModelVersion())
    )
    await _upload_into(stubs, second.version.name)
    await stubs.artifacts.FinalizeModelVersion(
        art.FinalizeModelVersionRequest(name=second.version.name, files=[_entry()])
    )
    await stubs.registry.SetAlias(
        rs.SetAliasRequest(name=name, version_number=second.version.number)
    )
    return rs.RollbackAliasRequest(name=name)


async def resolve_reference(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, _ = await _alias(stubs, ns, fresh)
    return rs.ResolveReferenceRequest(reference=name)


async def batch_get_model_versions(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    return rs.BatchGetModelVersionsRequest(references=[version.name])


async def search_model_versions(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    return rs.SearchModelVersionsRequest(filter=f'name = "{version.name.split("/")[3]}"')


# --- LineageService ----------------------------------------------------------------


def _trained_on(fresh: str) -> ln.LineageEdgeSpec:
    digest = "sha256:" + hashlib.sha256(fresh.encode()).hexdigest()
    return ln.LineageEdgeSpec(
        kind=ln.LINEAGE_EDGE_KIND_TRAINED_ON,
        target=ln.LineageNode(dataset=ln.LineageDataset(digest=digest, uri=f"s3://d/{fresh}")),
    )


async def add_lineage(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    return ln.AddLineageRequest(version=version.name, edges=[_trained_on(fresh)])


async def get_lineage(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    edge = _trained_on(fresh)
    await stubs.lineage.AddLineage(ln.AddLineageRequest(version=version.name, edges=[edge]))
    return ln.GetLineageRequest(
        dataset_digest=edge.target.dataset.digest, direction=ln.LINEAGE_DIRECTION_DOWN
    )


# --- ArtifactService ---------------------------------------------------------------


async def upload_file(stubs: Stubs, ns: str, fresh: str) -> list[Message]:
    version = await _version(stubs, ns, fresh, ready=False)
    return _upload_requests(version.name)


async def get_upload_status(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh, ready=False)
    upload_id = await _upload_into(stubs, version.name, finish=False)
    return art.GetUploadStatusRequest(version=version.name, upload_id=upload_id)


async def find_missing_blobs(stubs: Stubs, ns: str, fresh: str) -> Message:
    return art.FindMissingBlobsRequest(sha256=[PAYLOAD_SHA])


async def finalize_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh, ready=False)
    await _upload_into(stubs, version.name)
    return art.FinalizeModelVersionRequest(name=version.name, files=[_entry()])


async def fail_model_version(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh, ready=False)
    return art.FailModelVersionRequest(name=version.name)


async def download_file(stubs: Stubs, ns: str, fresh: str) -> Message:
    version = await _version(stubs, ns, fresh)
    return art.DownloadFileRequest(reference=_ref(version), path="model.bin")


async def list_manifest(stubs: Stubs, ns: str, fresh: str) -> Message:
    return art.ListManifestRequest(reference=_ref(await _version(stubs, ns, fresh)))


# --- AdminService, WebhookService, WatchService ------------------------------------


async def get_server_stats(stubs: Stubs, ns: str, fresh: str) -> Message:
    return adm.GetServerStatsRequest()


WEBHOOK_URL = "http://127.0.0.1:9/hooks"  # never delivered to: the discard port


async def _webhook(stubs: Stubs, ns: str, fresh: str) -> str:
    reply = await stubs.webhooks.CreateWebhook(
        wh.CreateWebhookRequest(
            webhook_id=f"w-{fresh}",
            webhook=wh.Webhook(
                url=WEBHOOK_URL, filter=wh.WebhookFilter(namespaces=[f"namespaces/{ns}"])
            ),
        )
    )
    return reply.webhook.name


async def create_webhook(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.CreateWebhookRequest(
        webhook_id=f"new-{fresh}",
        webhook=wh.Webhook(
            url=WEBHOOK_URL, filter=wh.WebhookFilter(namespaces=[f"namespaces/{ns}"])
        ),
    )


async def get_webhook(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.GetWebhookRequest(name=await _webhook(stubs, ns, fresh))


async def list_webhooks(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.ListWebhooksRequest()


async def delete_webhook(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.DeleteWebhookRequest(name=await _webhook(stubs, ns, fresh))


async def list_webhook_deliveries(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.ListWebhookDeliveriesRequest(parent=await _webhook(stubs, ns, fresh))


async def redeliver_webhook(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wh.RedeliverWebhookRequest(name=await _webhook(stubs, ns, fresh), from_revision=1)


async def watch(stubs: Stubs, ns: str, fresh: str) -> Message:
    return wa.WatchRequest(namespaces=[f"namespaces/{ns}"])


async def _protected(
    stubs: Stubs, ns: str, fresh: str, needed: int = 1
) -> tuple[str, pb.ModelVersion]:
    """A `staging` alias of a fresh model, then protected by the model's policy."""
    name, version = await _alias(stubs, ns, fresh)
    model = name.rpartition("/aliases/")[0]
    policy = ap.AliasPolicy(name=f"{model}/aliasPolicy", aliases=["staging"], approvals=needed)
    await stubs.approvals.SetAliasPolicy(ap.SetAliasPolicyRequest(policy=policy))
    return name, version


async def _change_request(stubs: Stubs, ns: str, fresh: str, needed: int = 1) -> str:
    name, version = await _protected(stubs, ns, fresh, needed)
    reply = await stubs.approvals.CreateChangeRequest(
        ap.CreateChangeRequestRequest(
            parent=name, version_number=version.number, reason="scenario"
        ),
        metadata=stubs.requester,
    )
    return reply.change_request.name


async def set_alias_policy(stubs: Stubs, ns: str, fresh: str) -> Message:
    model = await _model(stubs, ns, fresh)
    policy = ap.AliasPolicy(name=f"{model}/aliasPolicy", aliases=["production"])
    return ap.SetAliasPolicyRequest(policy=policy)


async def get_alias_policy(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ap.GetAliasPolicyRequest(name=f"namespaces/{ns}/aliasPolicy")


async def create_change_request(stubs: Stubs, ns: str, fresh: str) -> Message:
    name, version = await _protected(stubs, ns, fresh)
    return ap.CreateChangeRequestRequest(
        parent=name, version_number=version.number, reason="scenario"
    )


async def get_change_request(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ap.GetChangeRequestRequest(name=await _change_request(stubs, ns, fresh))


async def list_change_requests(stubs: Stubs, ns: str, fresh: str) -> Message:
    await _change_request(stubs, ns, fresh)
    return ap.ListChangeRequestsRequest(parent=f"namespaces/{ns}")


async def approve_change_request(stubs: Stubs, ns: str, fresh: str) -> Message:
    # two needed: this approval is recorded (one event) and the move waits for the second
    return ap.ApproveChangeRequestRequest(name=await _change_request(stubs, ns, fresh, 2))


async def reject_change_request(stubs: Stubs, ns: str, fresh: str) -> Message:
    name = await _change_request(stubs, ns, fresh)
    return ap.RejectChangeRequestRequest(name=name, reason="scenario")


# --- AccessService, IdentityService, AuditService ----------------------------------


def _binding(ns: str, fresh: str) -> ac.RoleBinding:
    return ac.RoleBinding(
        role=ac.ROLE_VIEWER,
        subject_kind=ac.SUBJECT_KIND_PRINCIPAL,
        subject=f"p-{fresh}",
        namespace=ns,
    )


async def create_role_binding(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ac.CreateRoleBindingRequest(binding=_binding(ns, fresh))


async def delete_role_binding(stubs: Stubs, ns: str, fresh: str) -> Message:
    binding = _binding(ns, fresh)
    await stubs.access.CreateRoleBinding(ac.CreateRoleBindingRequest(binding=binding))
    return ac.DeleteRoleBindingRequest(binding=binding)


async def list_role_bindings(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ac.ListRoleBindingsRequest(namespace=ns)


async def explain_access(stubs: Stubs, ns: str, fresh: str) -> Message:
    # about the caller itself (no principal named)
    return ac.ExplainAccessRequest(
        method="/modelreg.v1.RegistryService/GetNamespace", resource=f"namespaces/{ns}"
    )


async def who_am_i(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ids.WhoAmIRequest()


async def create_api_key(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ids.CreateApiKeyRequest(principal=f"p-{fresh}", kind=ids.PRINCIPAL_KIND_SERVICE)


async def list_api_keys(stubs: Stubs, ns: str, fresh: str) -> Message:
    return ids.ListApiKeysRequest()


async def revoke_api_key(stubs: Stubs, ns: str, fresh: str) -> Message:
    made = await stubs.identity.CreateApiKey(
        ids.CreateApiKeyRequest(principal=f"p-{fresh}", kind=ids.PRINCIPAL_KIND_SERVICE)
    )
    return ids.RevokeApiKeyRequest(key_id=made.api_key.key_id)


async def list_events(stubs: Stubs, ns: str, fresh: str) -> Message:
    return au.ListEventsRequest(namespace=f"namespaces/{ns}")


async def list_denials(stubs: Stubs, ns: str, fresh: str) -> Message:
    return au.ListDenialsRequest()


async def verify_audit_log(stubs: Stubs, ns: str, fresh: str) -> Message:
    return au.VerifyAuditLogRequest()


SCENARIOS: dict[str, Scenario] = {
    "CreateNamespace": Scenario(create_namespace, Role.ADMIN, global_scope=True, writes=True),
    "GetNamespace": Scenario(get_namespace, Role.VIEWER),
    "ListNamespaces": Scenario(list_namespaces, Role.ANY),  # filtered to what one may read
    "CreateModel": Scenario(create_model, Role.EDITOR, writes=True),
    "GetModel": Scenario(get_model, Role.VIEWER),
    "ListModels": Scenario(list_models, Role.VIEWER),
    "UpdateModel": Scenario(update_model, Role.EDITOR, writes=True),
    "DeleteModel": Scenario(delete_model, Role.ADMIN, writes=True),
    "UndeleteModel": Scenario(undelete_model, Role.ADMIN, writes=True),
    "CreateModelVersion": Scenario(create_model_version, Role.EDITOR, writes=True),
    "ImportModelVersion": Scenario(import_model_version, Role.ADMIN, writes=True),
    "GetModelVersion": Scenario(get_model_version, Role.VIEWER),
    "ListModelVersions": Scenario(list_model_versions, Role.VIEWER),
    "UpdateModelVersion": Scenario(update_model_version, Role.EDITOR, writes=True),
    "ArchiveModelVersion": Scenario(archive_model_version, Role.EDITOR, writes=True),
    "RestoreModelVersion": Scenario(restore_model_version, Role.EDITOR, writes=True),
    "SetAlias": Scenario(set_alias, Role.EDITOR, writes=True),
    "DeleteAlias": Scenario(delete_alias, Role.EDITOR, writes=True),
    "ListAliases": Scenario(list_aliases, Role.VIEWER),
    "ListAliasHistory": Scenario(list_alias_history, Role.VIEWER),
    "RollbackAlias": Scenario(rollback_alias, Role.EDITOR, writes=True),
    "ResolveReference": Scenario(resolve_reference, Role.VIEWER),
    "BatchGetModelVersions": Scenario(batch_get_model_versions, Role.VIEWER, per_item=True),
    # answers only the namespaces one may read (the query is restricted to them)
    "SearchModelVersions": Scenario(search_model_versions, Role.VIEWER, per_item=True),
    "AddLineage": Scenario(add_lineage, Role.EDITOR, writes=True),
    # a walk enters only readable namespaces (a dataset start is open to any reader)
    "GetLineage": Scenario(get_lineage, Role.VIEWER, per_item=True),
    "UploadFile": Scenario(upload_file, Role.EDITOR, writes=True),
    "GetUploadStatus": Scenario(get_upload_status, Role.EDITOR),
    # an editor of any namespace may ask which bytes to send
    "FindMissingBlobs": Scenario(find_missing_blobs, Role.EDITOR, anywhere=True),
    "FinalizeModelVersion": Scenario(finalize_model_version, Role.EDITOR, writes=True),
    "FailModelVersion": Scenario(fail_model_version, Role.EDITOR, writes=True),
    "DownloadFile": Scenario(download_file, Role.VIEWER),
    "ListManifest": Scenario(list_manifest, Role.VIEWER),
    "GetServerStats": Scenario(get_server_stats, Role.ADMIN, global_scope=True),
    "CreateWebhook": Scenario(create_webhook, Role.ADMIN, global_scope=True, writes=True),
    "GetWebhook": Scenario(get_webhook, Role.ADMIN, global_scope=True),
    "ListWebhooks": Scenario(list_webhooks, Role.ADMIN, global_scope=True),
    "DeleteWebhook": Scenario(delete_webhook, Role.ADMIN, global_scope=True, writes=True),
    "ListWebhookDeliveries": Scenario(list_webhook_deliveries, Role.ADMIN, global_scope=True),
    "RedeliverWebhook": Scenario(redeliver_webhook, Role.ADMIN, global_scope=True, writes=True),
    "Watch": Scenario(watch, Role.VIEWER, per_item=True),  # each event decided
    # ApprovalService (the last needed approval also writes the move's alias.set event:
    # tests/integration/test_approvals.py counts the events of every approval path)
    "SetAliasPolicy": Scenario(set_alias_policy, Role.ADMIN, writes=True),
    "GetAliasPolicy": Scenario(get_alias_policy, Role.VIEWER),
    "CreateChangeRequest": Scenario(create_change_request, Role.EDITOR, writes=True),
    "GetChangeRequest": Scenario(get_change_request, Role.VIEWER),
    "ListChangeRequests": Scenario(list_change_requests, Role.VIEWER),
    "ApproveChangeRequest": Scenario(approve_change_request, Role.APPROVER, writes=True),
    "RejectChangeRequest": Scenario(reject_change_request, Role.APPROVER, writes=True),
    "CreateRoleBinding": Scenario(create_role_binding, Role.ADMIN, writes=True),
    "DeleteRoleBinding": Scenario(delete_role_binding, Role.ADMIN, writes=True),
    "ListRoleBindings": Scenario(list_role_bindings, Role.ADMIN),
    "ExplainAccess": Scenario(explain_access, Role.ANY),
    "WhoAmI": Scenario(who_am_i, Role.ANY),
    "CreateApiKey": Scenario(create_api_key, Role.ADMIN, global_scope=True, writes=True),
    "ListApiKeys": Scenario(list_api_keys, Role.ADMIN, global_scope=True),
    "RevokeApiKey": Scenario(revoke_api_key, Role.ADMIN, global_scope=True, writes=True),
    "ListEvents": Scenario(list_events, Role.ADMIN),
    "ListDenials": Scenario(list_denials, Role.ADMIN, global_scope=True),
    "VerifyAuditLog": Scenario(verify_audit_log, Role.ADMIN, global_scope=True),
}
