"""The SDK's error tree, and the one place that maps gRPC failures onto it.

RegistryError                   code, message, reason, metadata, field_violations
├── InvalidArgumentError        also raised before sending, for a malformed name
├── NotFoundError
├── AlreadyExistsError
├── FailedPreconditionError
├── AbortedError                stale etag or expected version
├── PermissionDeniedError
├── UnauthenticatedError
├── ResourceExhaustedError
├── OutOfRangeError             a revision older than the change log keeps (`watch`)
├── UnavailableError            after the retries of an idempotent call
├── DeadlineExceededError
└── DataLossError               a pulled file's bytes do not match its manifest entry
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelreg.domain import errors as domain_errors

DETAILS_HEADER = "grpc-status-details-bin"


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


class OutOfRangeError(RegistryError):
    """OUT_OF_RANGE: a revision the registry no longer keeps (metadata `oldest_revision`)."""


class UnavailableError(RegistryError):
    """UNAVAILABLE: the server (or a service behind it) cannot be reached."""


class DeadlineExceededError(RegistryError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout."""


class DataLossError(RegistryError):
    """DATA_LOSS: bytes received do not match their size or sha256 (raised by `pull`)."""


_ERROR_CLASSES: dict[grpc.StatusCode, type[RegistryError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
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
def checked_locally() -> Iterator[None]:
    """Raise the name parser's errors as this module's `InvalidArgumentError`."""
    try:
        yield
    except domain_errors.InvalidArgument as exc:
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT, exc.message, exc.reason, exc.metadata, exc.violations
        ) from None
