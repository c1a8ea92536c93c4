"""Every RPC refuses malformed input with INVALID_ARGUMENT naming the field, and the
database is unchanged afterwards: one table of bad inputs with a row for every RPC of
every service, plus an undecodable body for every RPC."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor

from modelreg.v1 import access_service_pb2 as ac
from modelreg.v1 import approval_service_pb2 as ap
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import audit_service_pb2 as au
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import webhook_service_pb2 as wh
from tests.helpers import make_model, make_version, reason_of, rich_status, violations_of
from tests.integration.rpcs import BY_NAME, RPCS, Rpc, stored_state

M = "namespaces/default/models/m"
V1 = f"{M}/versions/1"
ALIAS = f"{M}/aliases/prod"
LONG = "x" * 5000
NUL = "a\0b"
SHA = "0" * 64


def _imported(number: int, created: int, updated: int = 0, state: int = 2) -> Any:
    version = pb.ModelVersion(number=number, state=state)  # type: ignore[arg-type]
    version.create_time.FromSeconds(created)
    if updated:
        version.update_time.FromSeconds(updated)
    return rs.ImportModelVersionRequest(parent=M, version=version)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _hook(
    *,
    url: str = "http://127.0.0.1:9/hook",
    webhook_id: str = "",
    description: str = "",
    webhook_filter: wh.WebhookFilter | None = None,
) -> wh.CreateWebhookRequest:
    hook = wh.Webhook(url=url, description=description, filter=webhook_filter)
    return wh.CreateWebhookRequest(webhook_id=webhook_id, webhook=hook)


def _at(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


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
        "a version's field in a model filter",
        rs.ListModelsRequest(parent="namespaces/default", filter="metrics.auc > 0.9"),
        "filter",
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
    (
        "ImportModelVersion",
        "no create_time",
        rs.ImportModelVersionRequest(parent=M, version=pb.ModelVersion(number=1)),
        "version.create_time",
    ),
    ("ImportModelVersion", "no number", _imported(0, 1_700_000_000), "version.number"),
    ("ImportModelVersion", "in the future", _imported(1, 4_000_000_000), "version.create_time"),
    (
        "ImportModelVersion",
        "updated before created",
        _imported(1, 1_700_000_000, 1_600_000_000),
        "version.update_time",
    ),
    ("ImportModelVersion", "archived", _imported(1, 1_700_000_000, state=4), "version.state"),
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
    (
        "SearchModelVersions",
        "filter with an unknown field",
        rs.SearchModelVersionsRequest(filter="colour = red"),
        "filter",
    ),
    (
        "SearchModelVersions",
        "filter with a string for a number",
        rs.SearchModelVersionsRequest(filter='metrics.accuracy > "high"'),
        "filter",
    ),
    (
        "SearchModelVersions",
        "unknown order",
        rs.SearchModelVersionsRequest(order_by="colour"),
        "order_by",
    ),
    (
        "SearchModelVersions",
        "a page token of no search",
        rs.SearchModelVersionsRequest(page_token="forged"),
        "page_token",
    ),
    (
        "ListModelVersions",
        "unbalanced filter",
        rs.ListModelVersionsRequest(parent="namespaces/default/models/m", filter="(state = READY"),
        "filter",
    ),
    (
        "AddLineage",
        "a dataset edge pointing at a version",
        ln.AddLineageRequest(
            version="m:1",
            edges=[
                ln.LineageEdgeSpec(
                    kind=ln.LINEAGE_EDGE_KIND_TRAINED_ON,
                    target=ln.LineageNode(version="namespaces/default/models/m/versions/1"),
                )
            ],
        ),
        "edges[0].target",
    ),
    (
        "AddLineage",
        "no edges",
        ln.AddLineageRequest(version="m:1"),
        "edges",
    ),
    (
        "AddLineage",
        "a dataset with a malformed digest",
        ln.AddLineageRequest(
            version="m:1",
            edges=[
                ln.LineageEdgeSpec(
                    kind=ln.LINEAGE_EDGE_KIND_TRAINED_ON,
                    target=ln.LineageNode(
                        dataset=ln.LineageDataset(uri="s3://x", digest="sha256:not-hex")
                    ),
                )
            ],
        ),
        "edges[0].target.dataset.digest",
    ),
    (
        "GetLineage",
        "too deep",
        ln.GetLineageRequest(reference="m:1", max_depth=51),
        "max_depth",
    ),
    (
        "GetLineage",
        "not a digest",
        ln.GetLineageRequest(dataset_digest="abc"),
        "dataset_digest",
    ),
    (
        "GetLineage",
        "an empty dataset URI",
        ln.GetLineageRequest(dataset_uri=""),
        "dataset_uri",
    ),
    # An unknown enum value reached Direction() and came back INTERNAL (found by test_fuzz).
    (
        "GetLineage",
        "an unknown direction",
        ln.GetLineageRequest(reference="m:1", direction=ln.LineageDirection.ValueType(-1)),
        "direction",
    ),
    # NUL in any stored string reached PostgreSQL and came back INTERNAL (issue 9).
    (
        "CreateNamespace",
        "NUL description",
        rs.CreateNamespaceRequest(namespace_id="ok", namespace=pb.Namespace(description=NUL)),
        "namespace.description",
    ),
    (
        "CreateNamespace",
        "NUL request_id",
        rs.CreateNamespaceRequest(namespace_id="ok", request_id=NUL),
        "request_id",
    ),
    (
        "CreateModel",
        "NUL description",
        rs.CreateModelRequest(
            parent="namespaces/default", model_id="x", model=pb.Model(description=NUL)
        ),
        "model.description",
    ),
    (
        "CreateModel",
        "NUL label value",
        rs.CreateModelRequest(
            parent="namespaces/default", model_id="x", model=pb.Model(labels={"k": NUL})
        ),
        "model.labels[k]",
    ),
    (
        "CreateModel",
        "NUL label key",
        rs.CreateModelRequest(
            parent="namespaces/default", model_id="x", model=pb.Model(labels={NUL: "v"})
        ),
        "model.labels",
    ),
    (
        "CreateModel",
        "NUL request_id",
        rs.CreateModelRequest(parent="namespaces/default", model_id="x", request_id=NUL),
        "request_id",
    ),
    (
        "UpdateModel",
        "NUL description",
        rs.UpdateModelRequest(
            model=pb.Model(name=M, description=NUL), update_mask=mask("description")
        ),
        "model.description",
    ),
    (
        "UpdateModel",
        "NUL mask path",
        rs.UpdateModelRequest(model=pb.Model(name=M), update_mask=mask(NUL)),
        "update_mask.paths[0]",
    ),
    (
        "CreateModelVersion",
        "NUL param",
        rs.CreateModelVersionRequest(parent=M, version=pb.ModelVersion(params={"lr": NUL})),
        "version.params[lr]",
    ),
    (
        "CreateModelVersion",
        "NUL run id",
        rs.CreateModelVersionRequest(
            parent=M, version=pb.ModelVersion(source=pb.VersionSource(run_id=NUL))
        ),
        "version.source.run_id",
    ),
    (
        "CreateModelVersion",
        "NUL request_id",
        rs.CreateModelVersionRequest(parent=M, request_id=NUL),
        "request_id",
    ),
    (
        "UpdateModelVersion",
        "NUL label",
        rs.UpdateModelVersionRequest(
            version=pb.ModelVersion(name=V1, labels={"k": NUL}), update_mask=mask("labels")
        ),
        "version.labels[k]",
    ),
    ("SetAlias", "NUL etag", rs.SetAliasRequest(name=ALIAS, version_number=1, etag=NUL), "etag"),
    (
        "BatchGetModelVersions",
        "NUL reference",
        rs.BatchGetModelVersionsRequest(references=["m:1", NUL]),
        "references[1]",
    ),
    # Hand-made page tokens (unsigned base64 JSON) came back INTERNAL (issue 9). These
    # rows get a real token of their query with its position altered (ALTERED), which is
    # not one this server issued.
    (
        "ListNamespaces",
        "token with a lone surrogate",
        rs.ListNamespacesRequest(),
        "page_token",
    ),
    (
        "ListModels",
        "token of 2^63 by create time",
        rs.ListModelsRequest(parent="namespaces/default", order_by="create_time"),
        "page_token",
    ),
    (
        "ListModels",
        "token key list too short",
        rs.ListModelsRequest(parent="namespaces/default", order_by="create_time"),
        "page_token",
    ),
    (
        "ListModels",
        "token key of the wrong type",
        rs.ListModelsRequest(parent="namespaces/default", order_by="create_time desc"),
        "page_token",
    ),
    (
        "ListModelVersions",
        "token position 2^63",
        rs.ListModelVersionsRequest(parent=M),
        "page_token",
    ),
    (
        "ListAliasHistory",
        "token position 2^63",
        rs.ListAliasHistoryRequest(name=ALIAS),
        "page_token",
    ),
    # ArtifactService
    (
        "GetUploadStatus",
        "upload id off its pattern",
        art.GetUploadStatusRequest(version=V1, upload_id="no spaces/allowed"),
        "upload_id",
    ),
    (
        "GetUploadStatus",
        "NUL upload id",
        art.GetUploadStatusRequest(version=V1, upload_id=NUL),
        "upload_id",
    ),
    ("GetUploadStatus", "empty upload id", art.GetUploadStatusRequest(version=V1), "upload_id"),
    (
        "FindMissingBlobs",
        "NUL digest",
        art.FindMissingBlobsRequest(sha256=[SHA, "\0" * 64]),
        "sha256[1]",
    ),
    ("FindMissingBlobs", "short digest", art.FindMissingBlobsRequest(sha256=["abc"]), "sha256[0]"),
    (
        "FinalizeModelVersion",
        "NUL etag",
        art.FinalizeModelVersionRequest(name=V1, etag=NUL),
        "etag",
    ),
    ("FailModelVersion", "bad name", art.FailModelVersionRequest(name=M), "name"),
    (
        "DownloadFile",
        "negative offset",
        art.DownloadFileRequest(reference="m:1", path="a", offset=-1),
        "offset",
    ),
    (
        "DownloadFile",
        "NUL path",
        art.DownloadFileRequest(reference="m:1", path=NUL),
        "path",
    ),
    ("ListManifest", "bad reference", art.ListManifestRequest(reference="a/b/c"), "reference"),
    (
        "UploadFile",
        "no header",
        [art.UploadFileRequest(data=b"x")],
        "header",
    ),
    (
        "UploadFile",
        "NUL upload id",
        [art.UploadFileRequest(header=art.UploadHeader(version=V1, path="a", upload_id=NUL))],
        "header.upload_id",
    ),
    # WebhookService
    ("CreateWebhook", "no url", wh.CreateWebhookRequest(webhook=wh.Webhook()), "webhook.url"),
    ("CreateWebhook", "ftp url", _hook(url="ftp://h/x"), "webhook.url"),
    ("CreateWebhook", "no host", _hook(url="http:///x"), "webhook.url"),
    ("CreateWebhook", "credentials", _hook(url="https://u:p@h/x"), "webhook.url"),
    ("CreateWebhook", "user only", _hook(url="https://u@h/x"), "webhook.url"),
    ("CreateWebhook", "bad port", _hook(url="http://h:99999/x"), "webhook.url"),
    ("CreateWebhook", "space in url", _hook(url="http://h/a b"), "webhook.url"),
    ("CreateWebhook", "NUL url", _hook(url="http://h/\0"), "webhook.url"),
    ("CreateWebhook", "long url", _hook(url="http://h/" + LONG), "webhook.url"),
    ("CreateWebhook", "empty host label", _hook(url="http://a..b/x"), "webhook.url"),
    ("CreateWebhook", "host label > 63", _hook(url=f"http://{'a' * 64}.com/x"), "webhook.url"),
    ("CreateWebhook", "host > 253", _hook(url=f"http://{('a' * 60 + '.') * 5}com/"), "webhook.url"),
    ("CreateWebhook", "bad id", _hook(webhook_id="Bad Id"), "webhook_id"),
    ("CreateWebhook", "long description", _hook(description=LONG), "webhook.description"),
    (
        "CreateWebhook",
        "bad model in filter",
        _hook(webhook_filter=wh.WebhookFilter(models=[M, "m"])),
        "webhook.filter.models[1]",
    ),
    (
        "CreateWebhook",
        "unknown kind",
        _hook(webhook_filter=wh.WebhookFilter(kinds=["alias.moved"])),
        "webhook.filter.kinds[0]",
    ),
    (
        "CreateWebhook",
        "alias in namespaces",
        _hook(webhook_filter=wh.WebhookFilter(namespaces=[ALIAS])),
        "webhook.filter.namespaces[0]",
    ),
    (
        "CreateWebhook",
        "too many entries",
        _hook(webhook_filter=wh.WebhookFilter(namespaces=["namespaces/a"] * 101)),
        "webhook.filter.namespaces",
    ),
    ("GetWebhook", "no prefix", wh.GetWebhookRequest(name="w"), "name"),
    ("GetWebhook", "too deep", wh.GetWebhookRequest(name="webhooks/w/deliveries/1"), "name"),
    ("ListWebhooks", "negative page size", wh.ListWebhooksRequest(page_size=-1), "page_size"),
    ("ListWebhooks", "garbage token", wh.ListWebhooksRequest(page_token="%%%"), "page_token"),
    ("DeleteWebhook", "empty name", wh.DeleteWebhookRequest(), "name"),
    (
        "ListWebhookDeliveries",
        "bad parent",
        wh.ListWebhookDeliveriesRequest(parent="webhooks/"),
        "parent",
    ),
    (
        "ListWebhookDeliveries",
        "negative page size",
        wh.ListWebhookDeliveriesRequest(parent="webhooks/w", page_size=-1),
        "page_size",
    ),
    ("RedeliverWebhook", "no target", wh.RedeliverWebhookRequest(name="webhooks/w"), "target"),
    (
        "RedeliverWebhook",
        "revision zero",
        wh.RedeliverWebhookRequest(name="webhooks/w", from_revision=0),
        "from_revision",
    ),
    (
        "RedeliverWebhook",
        "bad delivery",
        wh.RedeliverWebhookRequest(name="webhooks/w", delivery="webhooks/w/deliveries/01"),
        "delivery",
    ),
    (
        "RedeliverWebhook",
        "a delivery of a different webhook",
        wh.RedeliverWebhookRequest(name="webhooks/w", delivery="webhooks/v/deliveries/1"),
        "delivery",
    ),
    # WatchService
    ("Watch", "namespace without prefix", ws.WatchRequest(namespaces=["default"]), "namespaces[0]"),
    ("Watch", "model named as a version", ws.WatchRequest(models=[V1]), "models[0]"),
    ("Watch", "alias named as a model", ws.WatchRequest(aliases=[M]), "aliases[0]"),
    ("Watch", "unknown kind", ws.WatchRequest(kinds=["alias.moved"]), "kinds[0]"),
    ("Watch", "NUL kind", ws.WatchRequest(kinds=[NUL]), "kinds[0]"),
    ("Watch", "negative revision", ws.WatchRequest(after_revision=-1), "after_revision"),
    ("Watch", "above the head", ws.WatchRequest(after_revision=2**63 - 1), "after_revision"),
    ("Watch", "unknown start", ws.WatchRequest(start_at=9), "start_at"),  # type: ignore[arg-type]
    (
        "Watch",
        "bookmark interval too short",
        ws.WatchRequest(bookmark_interval=duration_pb2.Duration(nanos=1)),
        "bookmark_interval",
    ),
    (
        "Watch",
        "malformed bookmark interval",
        ws.WatchRequest(bookmark_interval=duration_pb2.Duration(seconds=1, nanos=-5)),
        "bookmark_interval",
    ),
    # AuditService
    (
        "ListEvents",
        "namespace without prefix",
        au.ListEventsRequest(namespace="default"),
        "namespace",
    ),
    ("ListEvents", "model named as a version", au.ListEventsRequest(model=V1), "model"),
    (
        "ListEvents",
        "model outside the namespace",
        au.ListEventsRequest(namespace="namespaces/other", model=M),
        "model",
    ),
    ("ListEvents", "unknown kind", au.ListEventsRequest(kinds=["alias.moved"]), "kinds"),
    ("ListEvents", "NUL actor", au.ListEventsRequest(actor=NUL), "actor"),
    ("ListEvents", "negative page size", au.ListEventsRequest(page_size=-1), "page_size"),
    ("ListEvents", "garbage token", au.ListEventsRequest(page_token="%%%"), "page_token"),
    ("ListEvents", "token of another query", au.ListEventsRequest(), "page_token"),
    (
        "ListEvents",
        "end before start",
        au.ListEventsRequest(start_time=_at(100), end_time=_at(50)),
        "end_time",
    ),
    ("ListEvents", "bad nanos", au.ListEventsRequest(start_time=_at(1, -1)), "start_time"),
    ("ListEvents", "year 10000", au.ListEventsRequest(end_time=_at(253402300800)), "end_time"),
    ("ListDenials", "actor with a space", au.ListDenialsRequest(actor="a b"), "actor"),
    ("ListDenials", "method with a space", au.ListDenialsRequest(method="/a b"), "method"),
    ("ListDenials", "negative page size", au.ListDenialsRequest(page_size=-1), "page_size"),
    ("ListDenials", "garbage token", au.ListDenialsRequest(page_token="%%%"), "page_token"),
    (
        "ListDenials",
        "end before start",
        au.ListDenialsRequest(start_time=_at(100), end_time=_at(100)),
        "end_time",
    ),
    (
        "VerifyAuditLog",
        "negative revision",
        au.VerifyAuditLogRequest(after_revision=-1),
        "after_revision",
    ),
    (
        "VerifyAuditLog",
        "negative event id",
        au.VerifyAuditLogRequest(after_event_id=-1),
        "after_event_id",
    ),
    (
        "VerifyAuditLog",
        "no previous hash past the start",
        au.VerifyAuditLogRequest(after_revision=3, after_event_id=3),
        "expected_previous_hash",
    ),
    (
        "VerifyAuditLog",
        "short previous hash",
        au.VerifyAuditLogRequest(expected_previous_hash=b"\x01" * 31),
        "expected_previous_hash",
    ),
    ("VerifyAuditLog", "negative page", au.VerifyAuditLogRequest(max_events=-1), "max_events"),
    # ApprovalService
    (
        "SetAliasPolicy",
        "no name",
        ap.SetAliasPolicyRequest(policy=ap.AliasPolicy(aliases=["production"])),
        "policy.name",
    ),
    (
        "SetAliasPolicy",
        "bad alias",
        ap.SetAliasPolicyRequest(
            policy=ap.AliasPolicy(name=f"{M}/aliasPolicy", aliases=["Bad Alias"])
        ),
        "policy.aliases[0]",
    ),
    (
        "SetAliasPolicy",
        "too many approvals",
        ap.SetAliasPolicyRequest(
            policy=ap.AliasPolicy(name=f"{M}/aliasPolicy", aliases=["p"], approvals=11)
        ),
        "policy.approvals",
    ),
    ("GetAliasPolicy", "a model, not a policy", ap.GetAliasPolicyRequest(name=M), "name"),
    (
        "CreateChangeRequest",
        "no reason",
        ap.CreateChangeRequestRequest(parent=ALIAS, version_number=1),
        "reason",
    ),
    (
        "CreateChangeRequest",
        "version zero",
        ap.CreateChangeRequestRequest(parent=ALIAS, reason="r"),
        "version_number",
    ),
    (
        "CreateChangeRequest",
        "a model as the parent",
        ap.CreateChangeRequestRequest(parent=M, version_number=1, reason="r"),
        "parent",
    ),
    (
        "CreateChangeRequest",
        "negative ttl",
        ap.CreateChangeRequestRequest(parent=ALIAS, version_number=1, reason="r", ttl_seconds=-1),
        "ttl_seconds",
    ),
    ("GetChangeRequest", "an alias", ap.GetChangeRequestRequest(name=ALIAS), "name"),
    (
        "GetChangeRequest",
        "bad id",
        ap.GetChangeRequestRequest(name=f"{ALIAS}/changeRequests/a-b"),
        "name",
    ),
    ("ListChangeRequests", "bad parent", ap.ListChangeRequestsRequest(parent="x"), "parent"),
    (
        "ListChangeRequests",
        "negative page size",
        ap.ListChangeRequestsRequest(parent="namespaces/default", page_size=-1),
        "page_size",
    ),
    (
        "ListChangeRequests",
        "garbage token",
        ap.ListChangeRequestsRequest(parent="namespaces/default", page_token="%%%"),
        "page_token",
    ),
    ("ApproveChangeRequest", "empty name", ap.ApproveChangeRequestRequest(), "name"),
    (
        "RejectChangeRequest",
        "no reason",
        ap.RejectChangeRequestRequest(name=f"{ALIAS}/changeRequests/ab12"),
        "reason",
    ),
    # AccessService
    (
        "CreateRoleBinding",
        "no role",
        ac.CreateRoleBindingRequest(binding=ac.RoleBinding(subject="alice")),
        "binding.role",
    ),
    (
        "CreateRoleBinding",
        "subject with a space",
        ac.CreateRoleBindingRequest(binding=ac.RoleBinding(role=ac.ROLE_VIEWER, subject="a b")),
        "binding.subject",
    ),
    (
        "CreateRoleBinding",
        "bad namespace",
        ac.CreateRoleBindingRequest(
            binding=ac.RoleBinding(role=ac.ROLE_VIEWER, subject="alice", namespace="ML")
        ),
        "binding.namespace",
    ),
    (
        "CreateRoleBinding",
        "unknown role",
        ac.CreateRoleBindingRequest(binding=ac.RoleBinding(role=9, subject="alice")),  # type: ignore[arg-type]
        "binding.role",
    ),
    (
        "DeleteRoleBinding",
        "no subject",
        ac.DeleteRoleBindingRequest(binding=ac.RoleBinding(role=ac.ROLE_VIEWER)),
        "binding.subject",
    ),
    (
        "DeleteRoleBinding",
        "unknown subject kind",
        ac.DeleteRoleBindingRequest(
            binding=ac.RoleBinding(role=ac.ROLE_VIEWER, subject="a", subject_kind=7)  # type: ignore[arg-type]
        ),
        "binding.subject_kind",
    ),
    ("ListRoleBindings", "bad namespace", ac.ListRoleBindingsRequest(namespace="a/b"), "namespace"),
    ("ListRoleBindings", "NUL subject", ac.ListRoleBindingsRequest(subject=NUL), "subject"),
    (
        "ListRoleBindings",
        "garbage token",
        ac.ListRoleBindingsRequest(page_token="%%%"),
        "page_token",
    ),
    (
        "ListRoleBindings",
        "global with a namespace",
        ac.ListRoleBindingsRequest(namespace="ml", global_only=True),
        "global_only",
    ),
    (
        "ExplainAccess",
        "unknown method",
        ac.ExplainAccessRequest(method="/x.Y/Z", resource=M),
        "method",
    ),
    (
        "ExplainAccess",
        "bad resource",
        ac.ExplainAccessRequest(method="/modelreg.v1.RegistryService/GetModel", resource="a/b/c/d"),
        "resource",
    ),
    # IdentityService
    # WhoAmI has no field: an undecodable body is refused as a whole (field "")
    ("WhoAmI", "undecodable body", b"\x0a\x05ab", ""),
    ("CreateApiKey", "no principal", ids.CreateApiKeyRequest(), "principal"),
    ("CreateApiKey", "space in principal", ids.CreateApiKeyRequest(principal="a b"), "principal"),
    ("CreateApiKey", "NUL principal", ids.CreateApiKeyRequest(principal=NUL), "principal"),
    (
        "CreateApiKey",
        "long description",
        ids.CreateApiKeyRequest(principal="ci", description=LONG),
        "description",
    ),
    (
        "CreateApiKey",
        "unknown kind",
        ids.CreateApiKeyRequest(principal="ci", kind=7),  # type: ignore[arg-type]
        "kind",
    ),
    (
        "CreateApiKey",
        "zero ttl",
        ids.CreateApiKeyRequest(principal="ci", ttl=duration_pb2.Duration()),
        "ttl",
    ),
    (
        "CreateApiKey",
        "negative ttl",
        ids.CreateApiKeyRequest(principal="ci", ttl=duration_pb2.Duration(seconds=-5)),
        "ttl",
    ),
    (
        "CreateApiKey",
        "ttl past a century",
        ids.CreateApiKeyRequest(principal="ci", ttl=duration_pb2.Duration(seconds=2**40)),
        "ttl",
    ),
    (
        "CreateApiKey",
        "expire time in the past",
        ids.CreateApiKeyRequest(principal="ci", expire_time=timestamp_pb2.Timestamp(seconds=1)),
        "expire_time",
    ),
    (
        "CreateApiKey",
        "expire time past year 9999",
        ids.CreateApiKeyRequest(principal="ci", expire_time=timestamp_pb2.Timestamp(seconds=2**40)),
        "expire_time",
    ),
    (
        "ListApiKeys",
        "bad principal",
        ids.ListApiKeysRequest(principal="a b"),
        "principal",
    ),
    ("ListApiKeys", "negative page size", ids.ListApiKeysRequest(page_size=-1), "page_size"),
    ("ListApiKeys", "garbage token", ids.ListApiKeysRequest(page_token="%%%"), "page_token"),
    ("RevokeApiKey", "empty key id", ids.RevokeApiKeyRequest(), "key_id"),
    (
        "RevokeApiKey",
        "a whole key",
        ids.RevokeApiKeyRequest(key_id="mrk_0123456789ab_" + "x" * 43),
        "key_id",
    ),
    ("RevokeApiKey", "NUL key id", ids.RevokeApiKeyRequest(key_id=NUL), "key_id"),
    # AdminService: its one field is a bool, so only an undecodable body is bad.
    ("GetServerStats", "undecodable body", b"\x0a\x05ab", "reset"),
]

# Artifact paths that other platforms mishandle (issue 9), on every RPC that names a path.
BAD_PATHS = {
    "Windows drive": "C:/x",
    "drive-relative": "c:x",
    "device name": "weights/CON",
    "device name with an extension": "a/nul.tar.gz",
    "device name any case": "Com1.bin",
    "device name with superscript": "lpt\u00b9",
    "bidi override": "ok/\u202egpj.exe",
    "bidi isolate": "ok/\u2066x\u2069",
    "zero-width space": "a\u200bb",
    "C1 control": "a\u0085b",
    "line separator": "a\u2028b",
}
for rule, path in BAD_PATHS.items():
    CASES.append(
        (
            "FinalizeModelVersion",
            rule,
            art.FinalizeModelVersionRequest(
                name=V1, files=[art.ManifestEntry(path=path, size=1, sha256=SHA)]
            ),
            "files[0].path",
        )
    )
    CASES.append(
        (
            "UploadFile",
            rule,
            [
                art.UploadFileRequest(
                    header=art.UploadHeader(
                        version=V1, path=path, size=1, sha256=SHA, upload_id="u"
                    )
                )
            ],
            "header.path",
        )
    )

# Every lookup's consistency token, from the descriptors: a negative one names the field.
for rpc in RPCS:
    if "min_revision" in rpc.request_type.DESCRIPTOR.fields_by_name:
        CASES.append(
            (rpc.name, "negative min_revision", rpc.request_type(min_revision=-1), "min_revision")
        )

# The position each TAMPERED case writes into a real token of its query.
ALTERED: dict[str, Any] = {
    "token with a lone surrogate": "\udc00",
    "token of 2^63 by create time": ["2026-01-01T00:00:00+00:00", 2**63],
    "token key list too short": ["2026-01-01T00:00:00+00:00"],
    "token key of the wrong type": [1, 2],
    "token position 2^63": 2**63,
}


@pytest.fixture
async def populated(clean: None, stub: rs_grpc.RegistryServiceAsyncStub) -> None:
    await make_model(stub)
    await make_version(stub)
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=1))


@pytest.mark.parametrize(
    ("method", "case", "request_message", "field"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
async def test_bad_input_is_invalid_argument_naming_the_field(  # noqa: PLR0917 - parametrized
    populated: None,
    stub: rs_grpc.RegistryServiceAsyncStub,
    channel: grpc.aio.Channel,
    db: asyncpg.Connection,
    method: str,
    case: str,
    request_message: Any,
    field: str,
) -> None:
    if case in ALTERED:
        request_message.page_token = await _altered_token(stub, method, request_message, case)
    elif "another" in case:
        request_message.page_token = await _token_of_another_query(stub)
    before = await stored_state(db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await BY_NAME[method].call(channel, _body(request_message))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert field in violations_of(rich_status(caught.value))
    if case in ALTERED:
        assert "not a page token this server issued" in (caught.value.details() or "")
    assert await stored_state(db) == before


def _body(request: Any) -> bytes | list[bytes]:
    if isinstance(request, bytes):
        return request
    if isinstance(request, list):
        return [each.SerializeToString() for each in request]
    return bytes(request.SerializeToString())


async def _altered_token(
    stub: rs_grpc.RegistryServiceAsyncStub, method: str, request: Any, case: str
) -> str:
    """A token the server issued for `request`'s query, with its position replaced."""
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="other"))
    await make_model(stub, "m2")
    await make_version(stub)
    await stub.SetAlias(rs.SetAliasRequest(name=ALIAS, version_number=2))
    first = type(request)()
    first.CopyFrom(request)
    first.page_size = 1
    token: str = (await getattr(stub, method)(first)).next_page_token
    assert token
    body, dot, mac = token.partition(".")  # signed tokens end in ".<mac>"; unsigned had none
    decoded = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    decoded["p"] = ALTERED[case]
    forged = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")
    return forged + dot + mac


async def _token_of_another_query(stub: rs_grpc.RegistryServiceAsyncStub) -> str:
    await make_version(stub)
    reply = await stub.ListModelVersions(
        rs.ListModelVersionsRequest(parent=M, order_by="number", page_size=1)
    )
    assert reply.next_page_token
    return reply.next_page_token


def test_every_rpc_has_a_bad_input_case() -> None:
    missing = {rpc.name for rpc in RPCS} - {c[0] for c in CASES}
    assert not missing, f"add rows to CASES for {sorted(missing)}"


def _undecodable(rpc: Rpc) -> bytes:
    """A body that is not a valid request: invalid UTF-8 in the request's first string
    field, reached through nested messages, else a field cut short."""
    for field in rpc.request_type.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return _length_delimited(field.number, b"\xff\xfe")
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            inner = next(
                (f for f in field.message_type.fields if f.type == FieldDescriptor.TYPE_STRING),
                None,
            )
            if inner is not None:
                return _length_delimited(field.number, _length_delimited(inner.number, b"\xc3\x28"))
    return b"\x0a\x05ab"  # field 1, five bytes announced, two sent


def _length_delimited(number: int, payload: bytes) -> bytes:
    assert number < 16, "one-byte tags only"
    assert len(payload) < 128, "one-byte lengths only"
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
async def test_an_undecodable_request_is_invalid_argument_without_a_traceback(
    populated: None,
    channel: grpc.aio.Channel,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    rpc: Rpc,
) -> None:
    before = await stored_state(db)
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc.call(channel, _undecodable(rpc))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert reason_of(rich_status(caught.value)) == "UNDECODABLE_REQUEST"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert await stored_state(db) == before


async def test_the_broken_field_is_named(channel: grpc.aio.Channel) -> None:
    inner = _length_delimited(1, b"\xff")  # VersionSource.run_id
    source = _length_delimited(pb.ModelVersion.SOURCE_FIELD_NUMBER, inner)
    body = _length_delimited(1, M.encode()) + _length_delimited(2, source)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await BY_NAME["CreateModelVersion"].call(channel, body)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(rich_status(caught.value)) == ["version.source.run_id"]


@pytest.mark.parametrize(
    "later",
    [
        b"\x12\x09cut",  # data: nine bytes announced, three sent
        art.UploadFileRequest(header=art.UploadHeader(path=NUL)).SerializeToString(),
    ],
    ids=["undecodable", "NUL"],
)
async def test_a_bad_message_late_in_an_upload_stream_is_refused(
    populated: None,
    stub: rs_grpc.RegistryServiceAsyncStub,
    channel: grpc.aio.Channel,
    db: asyncpg.Connection,
    later: bytes,
) -> None:
    pending = await make_version(stub, ready=False)
    header = art.UploadHeader(version=pending.name, path="a", size=2, sha256=SHA, upload_id="u")
    first = art.UploadFileRequest(header=header, data=b"x").SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await BY_NAME["UploadFile"].call(channel, [first, later])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert await db.fetchval("SELECT count(*) FROM version_files") == 0
