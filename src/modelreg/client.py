"""Python SDK for the registry: `Client` (blocking) and `AsyncClient` (asyncio).

    with Client("127.0.0.1:50051") as registry:
        version = registry.create_version("search/ranker", ready=True, metrics={"auc": 0.91})
        registry.set_alias("search/ranker", "production", version.number)
        registry.resolve("search/ranker@production")

Models and versions may be named short (`ns/model`, `model` in namespace
`default`, `ns/model:7`) or by resource name. Every method is defined once, as
a pure function that builds a `_Call` (method, request, how to unwrap the
reply); each client turns those into its methods, so the two cannot drift.

Failures raise one error tree, with the status details the server attached:

    RegistryError                   code, message, reason, metadata, field_violations
    ├── InvalidArgumentError        also raised before sending, for a malformed name
    ├── NotFoundError
    ├── AlreadyExistsError
    ├── FailedPreconditionError
    ├── AbortedError                stale etag or expected version
    ├── PermissionDeniedError
    ├── UnauthenticatedError
    ├── ResourceExhaustedError
    ├── UnavailableError            after the retries of an idempotent call
    └── DeadlineExceededError
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import random
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeAlias, TypeVar, cast

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelreg.domain import errors as domain_errors
from modelreg.domain import names
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc
from modelreg.v1 import resources_pb2 as res

ACTOR_HEADER = "x-modelreg-actor"
DETAILS_HEADER = "grpc-status-details-bin"

_FIRST_BACKOFF = 0.1  # seconds before the first retry; doubles each time
_MAX_BACKOFF = 2.0

T = TypeVar("T")
P = ParamSpec("P")
StateArg: TypeAlias = "res.ModelVersionState.ValueType | str"  # a state, or its short name


# --- errors -------------------------------------------------------------------------------


class RegistryError(Exception):
    """A failed call: its status code and the details the server attached."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[tuple[str, str]] = list(field_violations)


class InvalidArgumentError(RegistryError):
    """INVALID_ARGUMENT: the request is malformed; see `field_violations`."""


class NotFoundError(RegistryError):
    """NOT_FOUND: the named resource does not exist."""


class AlreadyExistsError(RegistryError):
    """ALREADY_EXISTS: the id is taken."""


class FailedPreconditionError(RegistryError):
    """FAILED_PRECONDITION: the resource is in the wrong state for this call."""


class AbortedError(RegistryError):
    """ABORTED: a concurrent change won (etag or expected version mismatch)."""


class PermissionDeniedError(RegistryError):
    """PERMISSION_DENIED: the caller may not do this."""


class UnauthenticatedError(RegistryError):
    """UNAUTHENTICATED: the caller is unknown."""


class ResourceExhaustedError(RegistryError):
    """RESOURCE_EXHAUSTED: a quota or size limit was hit."""


class UnavailableError(RegistryError):
    """UNAVAILABLE: the server (or a service behind it) cannot be reached."""


class DeadlineExceededError(RegistryError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[RegistryError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def make_error(code: grpc.StatusCode, message: str, details: Iterable[Any] = ()) -> RegistryError:
    """The typed error for `code`, with reason, metadata and field violations from `details`."""
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    for detail in details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    violations = [(v.field, v.description) for v in bad_request.field_violations]
    cls = _ERROR_CLASSES.get(code, RegistryError)
    return cls(code, message, info.reason, dict(info.metadata), violations)


def error_from_status(status: status_pb2.Status) -> RegistryError:
    """The typed error for a `google.rpc.Status`, e.g. one result of `batch_get`."""
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return make_error(code, status.message, status.details)


def error_from_rpc(exc: grpc.RpcError) -> RegistryError:
    """The typed error for a failed call of either client."""
    if isinstance(exc, grpc.aio.AioRpcError):
        status = _status_from_trailers(exc.trailing_metadata())
    else:
        status = _status_from_call(exc)
    if status is not None:
        return error_from_status(status)
    return make_error(exc.code(), exc.details() or "")


def _status_from_call(exc: grpc.RpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, exc))
    except ValueError:  # details disagree with the code or message: trust the plain status
        return None
    return status


def _status_from_trailers(trailers: Iterable[Any]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == DETAILS_HEADER and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


@contextmanager
def _checked_locally() -> Iterator[None]:
    """Raise the name parser's errors as this module's `InvalidArgumentError`."""
    try:
        yield
    except domain_errors.InvalidArgument as exc:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.reason, exc.metadata, exc.violations
        ) from None


# --- names ----------------------------------------------------------------------------------


def namespace_name(namespace: str) -> str:
    """`ns` or `namespaces/ns` -> `namespaces/ns`."""
    with _checked_locally():
        if namespace.startswith("namespaces/"):
            namespace = names.parse_namespace_name(namespace, "namespace")
        return f"namespaces/{names.check_id(namespace, 'namespace', 'namespace id')}"


def model_key(model: str) -> names.ModelKey:
    """`ns/model`, `model` (namespace `default`) or a model resource name -> ModelKey."""
    with _checked_locally():
        ref = names.parse_reference(model, "model")
        if ref.number is not None or ref.alias is not None:
            raise domain_errors.InvalidArgument.field(
                "model", f"{model!r} names a version; expected ns/model"
            )
        return ref.model


def model_name(model: str) -> str:
    """`ns/model`, `model` or a model resource name -> `namespaces/ns/models/model`."""
    return model_key(model).name


def version_name(version: str, number: int | None = None) -> str:
    """`ns/model:7` or a version resource name, or a model and `number`, -> resource name."""
    if number is not None:
        key = model_key(version)
        with _checked_locally():
            return names.VersionKey(key, names.check_number(number, "number")).name
    with _checked_locally():
        ref = names.parse_reference(version, "version")
        if ref.number is None:
            raise domain_errors.InvalidArgument.field(
                "version", f"{version!r} names no version number; expected ns/model:N"
            )
        return names.VersionKey(ref.model, ref.number).name


def alias_name(model: str, alias: str) -> str:
    """A model and an alias id -> `namespaces/ns/models/model/aliases/alias`."""
    key = model_key(model)
    with _checked_locally():
        return names.AliasKey(key, names.check_alias(alias, "alias")).name


# --- calls: what to send, built once for both clients ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One unary call, ready to send: which RPC, what request, how to unwrap the reply."""

    method: str
    request: Message
    unwrap: Callable[[Any], T]
    idempotent: bool
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class _Pages(Generic[T]):
    """A paged list: how to ask for the page after `token`, and the items of a reply."""

    method: str
    page: Callable[[str], Message]
    items: Callable[[Any], Iterable[T]]
    timeout: float | None = None

    def call(self, token: str) -> _Call[Any]:
        """The call that fetches the page at `token` ("" for the first)."""
        return _Call(self.method, self.page(token), _reply, idempotent=True, timeout=self.timeout)


def _reply(reply: Any) -> Any:
    return reply


def _request_id(request_id: str | None) -> str:
    return request_id or str(uuid.uuid4())


def _consistency(strong: bool) -> res.Consistency.ValueType:
    return res.CONSISTENCY_STRONG if strong else res.CONSISTENCY_UNSPECIFIED


def _mask(**fields: object) -> field_mask_pb2.FieldMask:
    """The update mask naming every field given (not None); at least one is required."""
    paths = [name for name, value in fields.items() if value is not None]
    if not paths:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "nothing to update",
            field_violations=[("update_mask", f"give at least one of {', '.join(fields)}")],
        )
    return field_mask_pb2.FieldMask(paths=paths)


def _state(state: StateArg) -> res.ModelVersionState.ValueType:
    if not isinstance(state, str):
        return state
    try:
        return res.ModelVersionState.Value(f"MODEL_VERSION_STATE_{state.upper()}")
    except ValueError:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown version state {state!r}",
            field_violations=[("states", "use pending, ready, failed or archived")],
        ) from None


def _create_namespace(
    namespace: str,
    *,
    description: str = "",
    request_id: str | None = None,
    timeout: float | None = None,
) -> _Call[res.Namespace]:
    """Create a namespace (`ns`); safe to retry thanks to its request id."""
    request = rs.CreateNamespaceRequest(
        namespace_id=namespace_name(namespace).removeprefix("namespaces/"),
        namespace=res.Namespace(description=description),
        request_id=_request_id(request_id),
    )
    return _Call("CreateNamespace", request, lambda r: r.namespace, True, timeout)


def _get_namespace(namespace: str, *, timeout: float | None = None) -> _Call[res.Namespace]:
    """Return one namespace."""
    request = rs.GetNamespaceRequest(name=namespace_name(namespace))
    return _Call("GetNamespace", request, lambda r: r.namespace, True, timeout)


def _list_namespaces(
    *, page_size: int | None = None, timeout: float | None = None
) -> _Pages[res.Namespace]:
    """Iterate over every namespace, in id order."""

    def page(token: str) -> Message:
        return rs.ListNamespacesRequest(page_size=page_size or 0, page_token=token)

    return _Pages("ListNamespaces", page, lambda r: r.namespaces, timeout)


def _create_model(
    model: str,
    *,
    description: str = "",
    tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> _Call[res.Model]:
    """Create a model (`ns/model`); safe to retry thanks to its request id."""
    key = model_key(model)
    request = rs.CreateModelRequest(
        parent=f"namespaces/{key.namespace}",
        model_id=key.model,
        model=res.Model(description=description, tags=tags, labels=labels),
        request_id=_request_id(request_id),
    )
    return _Call("CreateModel", request, lambda r: r.model, True, timeout)


def _get_model(
    model: str, *, strong: bool = False, timeout: float | None = None
) -> _Call[res.Model]:
    """Return one model, also when soft-deleted; `strong` skips the caches."""
    request = rs.GetModelRequest(name=model_name(model), consistency=_consistency(strong))
    return _Call("GetModel", request, lambda r: r.model, True, timeout)


def _list_models(
    namespace: str = names.DEFAULT_NAMESPACE,
    *,
    prefix: str = "",
    tags: Iterable[str] = (),
    order_by: str = "",
    show_deleted: bool = False,
    page_size: int | None = None,
    timeout: float | None = None,
) -> _Pages[res.Model]:
    """Iterate over the models of a namespace; `order_by`: name, create_time [desc]."""
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
        )

    return _Pages("ListModels", page, lambda r: r.models, timeout)


def _update_model(
    model: str,
    *,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    etag: str | None = None,
    timeout: float | None = None,
) -> _Call[res.Model]:
    """Change the fields given (others are left alone); ABORTED if `etag` is stale."""
    mask = _mask(description=description, tags=tags, labels=labels)
    body = res.Model(
        name=model_name(model),
        description=description or "",
        tags=tags,
        labels=labels,
        etag=etag or "",
    )
    request = rs.UpdateModelRequest(model=body, update_mask=mask)
    return _Call("UpdateModel", request, lambda r: r.model, False, timeout)


def _delete_model(
    model: str, *, etag: str | None = None, timeout: float | None = None
) -> _Call[res.Model]:
    """Soft-delete a model; it can be restored with `undelete_model`."""
    request = rs.DeleteModelRequest(name=model_name(model), etag=etag or "")
    return _Call("DeleteModel", request, lambda r: r.model, False, timeout)


def _undelete_model(
    model: str, *, etag: str | None = None, timeout: float | None = None
) -> _Call[res.Model]:
    """Restore a soft-deleted model."""
    request = rs.UndeleteModelRequest(name=model_name(model), etag=etag or "")
    return _Call("UndeleteModel", request, lambda r: r.model, False, timeout)


def _create_version(
    model: str,
    *,
    ready: bool = False,
    description: str = "",
    tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    source: res.VersionSource | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> _Call[res.ModelVersion]:
    """Create the next version of a model, PENDING or (`ready`) READY; safe to retry."""
    body = res.ModelVersion(
        state=res.MODEL_VERSION_STATE_READY if ready else res.MODEL_VERSION_STATE_PENDING,
        description=description,
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
    )
    request = rs.CreateModelVersionRequest(
        parent=model_name(model), version=body, request_id=_request_id(request_id)
    )
    return _Call("CreateModelVersion", request, lambda r: r.version, True, timeout)


def _get_version(
    version: str,
    number: int | None = None,
    *,
    strong: bool = False,
    timeout: float | None = None,
) -> _Call[res.ModelVersion]:
    """Return one version: `get_version("ns/model:3")` or `get_version("ns/model", 3)`."""
    name = version_name(version, number)
    request = rs.GetModelVersionRequest(name=name, consistency=_consistency(strong))
    return _Call("GetModelVersion", request, lambda r: r.version, True, timeout)


def _list_versions(
    model: str,
    *,
    states: Iterable[StateArg] = (),
    order_by: str = "",
    page_size: int | None = None,
    timeout: float | None = None,
) -> _Pages[res.ModelVersion]:
    """Iterate over a model's versions, newest first (`order_by="number"`: oldest first)."""
    parent, state_list = model_name(model), [_state(s) for s in states]

    def page(token: str) -> Message:
        return rs.ListModelVersionsRequest(
            parent=parent,
            page_size=page_size or 0,
            page_token=token,
            order_by=order_by,
            states=state_list,
        )

    return _Pages("ListModelVersions", page, lambda r: r.versions, timeout)


def _update_version(
    version: str,
    number: int | None = None,
    *,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    source: res.VersionSource | None = None,
    etag: str | None = None,
    timeout: float | None = None,
) -> _Call[res.ModelVersion]:
    """Change the metadata given (others are left alone); `source` is replaced whole."""
    mask = _mask(
        description=description,
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
    )
    body = res.ModelVersion(
        name=version_name(version, number),
        description=description or "",
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
        etag=etag or "",
    )
    request = rs.UpdateModelVersionRequest(version=body, update_mask=mask)
    return _Call("UpdateModelVersion", request, lambda r: r.version, False, timeout)


def _archive_version(
    version: str,
    number: int | None = None,
    *,
    etag: str | None = None,
    timeout: float | None = None,
) -> _Call[res.ModelVersion]:
    """Archive a READY version, hiding it from `latest`."""
    request = rs.ArchiveModelVersionRequest(name=version_name(version, number), etag=etag or "")
    return _Call("ArchiveModelVersion", request, lambda r: r.version, False, timeout)


def _restore_version(
    version: str,
    number: int | None = None,
    *,
    etag: str | None = None,
    timeout: float | None = None,
) -> _Call[res.ModelVersion]:
    """Restore an ARCHIVED version to READY."""
    request = rs.RestoreModelVersionRequest(name=version_name(version, number), etag=etag or "")
    return _Call("RestoreModelVersion", request, lambda r: r.version, False, timeout)


def _set_alias(
    model: str,
    alias: str,
    version_number: int,
    *,
    etag: str | None = None,
    expected_version: int | None = None,
    timeout: float | None = None,
) -> _Call[rs.SetAliasResponse]:
    """Point an alias at a version; `expected_version` (0: must not exist) guards the move."""
    request = rs.SetAliasRequest(
        name=alias_name(model, alias),
        version_number=version_number,
        etag=etag or "",
        expected_version_number=expected_version,
    )
    # Retried on UNAVAILABLE: a repeated move lands on the same version. A guarded
    # move whose first attempt did land may then report ABORTED.
    return _Call("SetAlias", request, _reply, True, timeout)


def _delete_alias(
    model: str, alias: str, *, etag: str | None = None, timeout: float | None = None
) -> _Call[res.Alias]:
    """Delete an alias; returns it as it was."""
    request = rs.DeleteAliasRequest(name=alias_name(model, alias), etag=etag or "")
    return _Call("DeleteAlias", request, lambda r: r.alias, False, timeout)


def _list_aliases(model: str, *, timeout: float | None = None) -> _Call[list[res.Alias]]:
    """Every alias of a model, by id."""
    request = rs.ListAliasesRequest(parent=model_name(model))
    return _Call("ListAliases", request, lambda r: list(r.aliases), True, timeout)


def _alias_history(
    model: str, alias: str, *, page_size: int | None = None, timeout: float | None = None
) -> _Pages[res.AliasEvent]:
    """Iterate over the moves of an alias, newest first."""
    name = alias_name(model, alias)

    def page(token: str) -> Message:
        return rs.ListAliasHistoryRequest(name=name, page_size=page_size or 0, page_token=token)

    return _Pages("ListAliasHistory", page, lambda r: r.events, timeout)


def _rollback_alias(
    model: str,
    alias: str,
    *,
    etag: str | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> _Call[rs.RollbackAliasResponse]:
    """Move an alias back to where it pointed before its last move; safe to retry."""
    request = rs.RollbackAliasRequest(
        name=alias_name(model, alias), etag=etag or "", request_id=_request_id(request_id)
    )
    return _Call("RollbackAlias", request, _reply, True, timeout)


def _resolve(
    reference: str, *, strong: bool = False, timeout: float | None = None
) -> _Call[res.ModelVersion]:
    """The version `ns/model@alias`, `ns/model:7` or `ns/model` (latest READY) points to."""
    request = rs.ResolveReferenceRequest(reference=reference, consistency=_consistency(strong))
    return _Call("ResolveReference", request, lambda r: r.version, True, timeout)


def _batch_get(
    references: Iterable[str], *, strong: bool = False, timeout: float | None = None
) -> _Call[list[rs.BatchGetModelVersionsResult]]:
    """Resolve up to 1,000 references at once; each result holds a version or an error."""
    request = rs.BatchGetModelVersionsRequest(
        references=list(references), consistency=_consistency(strong)
    )
    return _Call("BatchGetModelVersions", request, lambda r: list(r.results), True, timeout)


# --- clients --------------------------------------------------------------------------------


def _default_actor() -> str:
    try:
        return os.environ.get("MODELREG_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in this container
        return "unknown"


class _Attempts:
    """The deadline and retry budget of one call."""

    def __init__(self, timeout: float, retries: int) -> None:
        self._deadline = time.monotonic() + timeout
        self._retries_left = retries
        self._backoff = _FIRST_BACKOFF

    def remaining(self) -> float:
        """Seconds left for the next attempt."""
        return max(self._deadline - time.monotonic(), 0.0)

    def next_delay(self, code: grpc.StatusCode) -> float | None:
        """Seconds to wait before retrying after `code`, or None to give up."""
        if code is not grpc.StatusCode.UNAVAILABLE or self._retries_left <= 0:
            return None
        delay = self._backoff * (0.5 + random.random() / 2)  # jitter spreads out the herd
        if delay >= self.remaining():
            return None
        self._retries_left -= 1
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        return delay


class _Settings:
    """What both clients share: actor metadata, default timeout, retry budget."""

    def __init__(self, *, actor: str | None, timeout: float, retries: int) -> None:
        self._metadata = ((ACTOR_HEADER, actor or _default_actor()),)
        self._timeout = timeout
        self._retries = retries

    def _attempts(self, call: _Call[Any]) -> _Attempts:
        timeout = self._timeout if call.timeout is None else call.timeout
        return _Attempts(timeout, self._retries if call.idempotent else 0)


def _blocking(build: Callable[P, _Call[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(build(*args, **kwargs))

    return method


def _blocking_pages(build: Callable[P, _Pages[T]]) -> Callable[Concatenate[Client, P], Iterator[T]]:
    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._iterate(build(*args, **kwargs))

    return method


class Client(_Settings):
    """Blocking client; every method also takes `timeout=` to override the default."""

    def __init__(
        self, target: str, *, actor: str | None = None, timeout: float = 10.0, retries: int = 4
    ) -> None:
        super().__init__(actor=actor, timeout=timeout, retries=retries)
        self.target = target
        self._channel = grpc.insecure_channel(target)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _run(self, call: _Call[T]) -> T:
        attempts = self._attempts(call)
        rpc = getattr(self._stub, call.method)
        while True:
            try:
                reply = rpc(call.request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                delay = attempts.next_delay(exc.code())
                if delay is None:
                    raise error_from_rpc(exc) from exc
                time.sleep(delay)
            else:
                return call.unwrap(reply)

    def _iterate(self, pages: _Pages[T]) -> Iterator[T]:
        token = ""
        while True:
            reply = self._run(pages.call(token))
            yield from pages.items(reply)
            token = reply.next_page_token
            if not token:
                return

    create_namespace = _blocking(_create_namespace)
    get_namespace = _blocking(_get_namespace)
    list_namespaces = _blocking_pages(_list_namespaces)
    create_model = _blocking(_create_model)
    get_model = _blocking(_get_model)
    list_models = _blocking_pages(_list_models)
    update_model = _blocking(_update_model)
    delete_model = _blocking(_delete_model)
    undelete_model = _blocking(_undelete_model)
    create_version = _blocking(_create_version)
    get_version = _blocking(_get_version)
    list_versions = _blocking_pages(_list_versions)
    update_version = _blocking(_update_version)
    archive_version = _blocking(_archive_version)
    restore_version = _blocking(_restore_version)
    set_alias = _blocking(_set_alias)
    delete_alias = _blocking(_delete_alias)
    list_aliases = _blocking(_list_aliases)
    alias_history = _blocking_pages(_alias_history)
    rollback_alias = _blocking(_rollback_alias)
    resolve = _blocking(_resolve)
    batch_get = _blocking(_batch_get)


def _awaitable(
    build: Callable[P, _Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    @functools.wraps(build)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(build(*args, **kwargs))

    return method


def _async_pages(
    build: Callable[P, _Pages[T]],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[T]]:
    @functools.wraps(build)
    def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        return self._iterate(build(*args, **kwargs))

    return method


class AsyncClient(_Settings):
    """asyncio client; every method also takes `timeout=` to override the default."""

    def __init__(
        self, target: str, *, actor: str | None = None, timeout: float = 10.0, retries: int = 4
    ) -> None:
        super().__init__(actor=actor, timeout=timeout, retries=retries)
        self.target = target
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        await self._channel.close(grace=None)

    async def _run(self, call: _Call[T]) -> T:
        attempts = self._attempts(call)
        rpc = getattr(self._stub, call.method)
        while True:
            try:
                reply = await rpc(
                    call.request, timeout=attempts.remaining(), metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                delay = attempts.next_delay(exc.code())
                if delay is None:
                    raise error_from_rpc(exc) from exc
                await asyncio.sleep(delay)
            else:
                return call.unwrap(reply)

    async def _iterate(self, pages: _Pages[T]) -> AsyncIterator[T]:
        token = ""
        while True:
            reply = await self._run(pages.call(token))
            for item in pages.items(reply):
                yield item
            token = reply.next_page_token
            if not token:
                return

    create_namespace = _awaitable(_create_namespace)
    get_namespace = _awaitable(_get_namespace)
    list_namespaces = _async_pages(_list_namespaces)
    create_model = _awaitable(_create_model)
    get_model = _awaitable(_get_model)
    list_models = _async_pages(_list_models)
    update_model = _awaitable(_update_model)
    delete_model = _awaitable(_delete_model)
    undelete_model = _awaitable(_undelete_model)
    create_version = _awaitable(_create_version)
    get_version = _awaitable(_get_version)
    list_versions = _async_pages(_list_versions)
    update_version = _awaitable(_update_version)
    archive_version = _awaitable(_archive_version)
    restore_version = _awaitable(_restore_version)
    set_alias = _awaitable(_set_alias)
    delete_alias = _awaitable(_delete_alias)
    list_aliases = _awaitable(_list_aliases)
    alias_history = _async_pages(_alias_history)
    rollback_alias = _awaitable(_rollback_alias)
    resolve = _awaitable(_resolve)
    batch_get = _awaitable(_batch_get)
