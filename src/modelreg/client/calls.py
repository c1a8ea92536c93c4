"""Requests built once for both clients: a `Call` (one unary RPC) or `Pages` (a paged list),
and the builders for namespaces and models. Each builder's docstring is its method's."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from modelreg.client import errors
from modelreg.client.names import model_key, model_name, namespace_name
from modelreg.domain import names
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res

REGISTRY = "registry"  # Call.service of RegistryService methods
ARTIFACTS = "artifacts"  # Call.service of ArtifactService methods
WEBHOOKS = "webhooks"  # Call.service of WebhookService methods
AUDIT = "audit"  # Call.service of AuditService methods
APPROVALS = "approvals"  # Call.service of ApprovalService methods
ACCESS = "access"  # Call.service of AccessService methods
IDENTITY = "identity"  # Call.service of IdentityService methods
LINEAGE = "lineage"  # Call.service of LineageService methods

T = TypeVar("T")
StateArg: TypeAlias = "res.ModelVersionState.ValueType | str"  # a state, or its short name


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One unary call, ready to send: which RPC, what request, how to unwrap the reply."""

    method: str
    request: Message
    unwrap: Callable[[Any], T]
    idempotent: bool
    timeout: float | None = None
    service: str = REGISTRY  # which stub has `method`
    # FAILED_PRECONDITION reasons that pass on their own: retried until the deadline.
    waits_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pages(Generic[T]):
    """A paged list: how to ask for the page after `token`, and the items of a reply."""

    method: str
    page: Callable[[str], Message]
    items: Callable[[Any], Iterable[T]]
    timeout: float | None = None
    service: str = REGISTRY

    def call(self, token: str) -> Call[Any]:
        """The call that fetches the page at `token` ("" for the first)."""
        return Call(
            self.method,
            self.page(token),
            reply_itself,
            idempotent=True,
            timeout=self.timeout,
            service=self.service,
        )


def reply_itself(reply: Any) -> Any:
    return reply


def new_request_id(given: str | None) -> str:
    return given or str(uuid.uuid4())


def consistency_of(strong: bool) -> res.Consistency.ValueType:
    return res.CONSISTENCY_STRONG if strong else res.CONSISTENCY_UNSPECIFIED


def update_mask(**fields: object) -> field_mask_pb2.FieldMask:
    """The update mask naming every field given (not None); at least one is required."""
    paths = [name for name, value in fields.items() if value is not None]
    if not paths:
        raise errors.InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "nothing to update",
            field_violations=[("update_mask", f"give at least one of {', '.join(fields)}")],
        )
    return field_mask_pb2.FieldMask(paths=paths)


def state_value(state: StateArg) -> res.ModelVersionState.ValueType:
    if not isinstance(state, str):
        return state
    try:
        return res.ModelVersionState.Value(f"MODEL_VERSION_STATE_{state.upper()}")
    except ValueError:
        raise errors.InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown version state {state!r}",
            field_violations=[("states", "use pending, ready, failed or archived")],
        ) from None


def create_namespace(
    namespace: str,
    *,
    description: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> Call[res.Namespace]:
    """Create a namespace (`ns`); safe to retry thanks to its request id."""
    request = rs.CreateNamespaceRequest(
        namespace_id=namespace_name(namespace).removeprefix("namespaces/"),
        namespace=res.Namespace(description=description),
        request_id=new_request_id(request_id),
    )
    return Call("CreateNamespace", request, lambda r: r.namespace, True, timeout)


def get_namespace(namespace: str, *, timeout: float | None = None) -> Call[res.Namespace]:
    """Return one namespace."""
    request = rs.GetNamespaceRequest(name=namespace_name(namespace))
    return Call("GetNamespace", request, lambda r: r.namespace, True, timeout)


def list_namespaces(
    *, page_size: int | None = None, timeout: float | None = None
) -> Pages[res.Namespace]:
    """Iterate over every namespace, in id order."""

    def page(token: str) -> Message:
        return rs.ListNamespacesRequest(page_size=page_size or 0, page_token=token)

    return Pages("ListNamespaces", page, lambda r: r.namespaces, timeout)


def create_model(
    model: str,
    *,
    description: str = "",
    tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Call[res.Model]:
    """Create a model (`ns/model`); safe to retry thanks to its request id."""
    key = model_key(model)
    request = rs.CreateModelRequest(
        parent=f"namespaces/{key.namespace}",
        model_id=key.model,
        model=res.Model(description=description, tags=tags, labels=labels),
        request_id=new_request_id(request_id),
    )
    return Call("CreateModel", request, lambda r: r.model, True, timeout)


def get_model(model: str, *, strong: bool = False, timeout: float | None = None) -> Call[res.Model]:
    """Return one model, also when soft-deleted; `strong` skips the caches."""
    request = rs.GetModelRequest(name=model_name(model), consistency=consistency_of(strong))
    return Call("GetModel", request, lambda r: r.model, True, timeout)


def list_models(
    namespace: str = names.DEFAULT_NAMESPACE,
    *,
    prefix: str = "",
    tags: Iterable[str] = (),
    order_by: str = "",
    show_deleted: bool = False,
    filter: str = "",
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[res.Model]:
    """Iterate over the models of a namespace; `order_by`: name, create_time [desc];
    `filter` AIP-160 over the model's fields (`labels.team = vision AND alias:*`)."""
    parent, tag_list = namespace_name(namespace), list(tags)

    def page(token: str) -> Message:
        return rs.ListModelsRequest(
            parent=parent,
            page_size=page_size or 0,
            page_token=token,
            name_prefix=prefix,
            tags=tag_list,
            order_by=order_by,
            show_deleted=show_deleted,
            filter=filter,
        )

    return Pages("ListModels", page, lambda r: r.models, timeout)


def update_model(
    model: str,
    *,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    etag: str | None = None,
    timeout: float | None = None,
) -> Call[res.Model]:
    """Change the fields given (others are left alone); ABORTED if `etag` is stale."""
    mask = update_mask(description=description, tags=tags, labels=labels)
    body = res.Model(
        name=model_name(model),
        description=description or "",
        tags=tags,
        labels=labels,
        etag=etag or "",
    )
    request = rs.UpdateModelRequest(model=body, update_mask=mask)
    return Call("UpdateModel", request, lambda r: r.model, False, timeout)


def delete_model(
    model: str, *, etag: str | None = None, timeout: float | None = None
) -> Call[res.Model]:
    """Soft-delete a model; it can be restored with `undelete_model`."""
    request = rs.DeleteModelRequest(name=model_name(model), etag=etag or "")
    return Call("DeleteModel", request, lambda r: r.model, False, timeout)


def undelete_model(
    model: str, *, etag: str | None = None, timeout: float | None = None
) -> Call[res.Model]:
    """Restore a soft-deleted model."""
    request = rs.UndeleteModelRequest(name=model_name(model), etag=etag or "")
    return Call("UndeleteModel", request, lambda r: r.model, False, timeout)
