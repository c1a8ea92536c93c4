"""The one table from domain errors to gRPC status codes, with rich details
(`google.rpc.ErrorInfo` always, `google.rpc.BadRequest` for field violations)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelreg.domain import errors

ERROR_DOMAIN = "modelreg.v1"

CODES: dict[type[errors.RegistryError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def code_of(exc: errors.RegistryError) -> grpc.StatusCode:
    """The status code of an expected error (its nearest class in the table)."""
    for kind in type(exc).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.UNKNOWN


def status_of(exc: errors.RegistryError) -> status_pb2.Status:
    """The google.rpc.Status of an expected error, details included."""
    code = code_of(exc)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
    )
    details = [_packed(info)]
    if isinstance(exc, errors.InvalidArgument):
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in exc.violations
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def grpc_status(exc: errors.RegistryError) -> grpc.Status:
    """The status to abort a call with: code, message and the details trailer."""
    return rpc_status.to_status(status_of(exc))


def internal_status(message: str) -> status_pb2.Status:
    """A bare INTERNAL status, for bugs (the traceback goes to the log, not the caller)."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message)


def _packed(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
