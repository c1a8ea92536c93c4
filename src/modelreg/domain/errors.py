"""The registry's one error tree; `api/errors.py` maps each class to a gRPC status.

    RegistryError                      expected; message is safe to show a caller
    ├── InvalidArgument                field violations: [(field, description)]; field ""
    │                                  is the whole request
    ├── NotFound                       the named resource does not exist
    ├── AlreadyExists                  the id (or request_id) is taken
    ├── FailedPrecondition             the resource is in the wrong state
    ├── Aborted                        etag or compare-and-set mismatch
    ├── PermissionDenied               the caller may not do this
    ├── Unauthenticated                the caller is unknown
    ├── ResourceExhausted              a quota or size limit was hit
    ├── OutOfRange                     a position the registry no longer keeps
    └── Unavailable                    a backing service is down; retry later

Every error carries a `reason` (UPPER_SNAKE_CASE, stable, for machines) and
`metadata` (small string map) that become `google.rpc.ErrorInfo`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class RegistryError(Exception):
    """An expected failure of a request; it changed nothing."""

    reason = "REGISTRY_ERROR"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(RegistryError):
    """The request is malformed; `violations` name each bad field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[tuple[str, str]], *, reason: str | None = None) -> None:
        self.violations = list(violations)
        text = "; ".join(f"{field}: {what}" if field else what for field, what in self.violations)
        super().__init__(f"invalid request: {text}", reason=reason)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One bad field."""
        return cls([(field, description)])


class NotFound(RegistryError):
    """The named resource does not exist."""

    reason = "NOT_FOUND"

    def __init__(
        self, resource: str, *, reason: str | None = None, message: str | None = None
    ) -> None:
        text = message or f"{resource} not found"
        super().__init__(text, reason=reason, metadata={"resource": resource})
        self.resource = resource


class AlreadyExists(RegistryError):
    """A resource with that name already exists."""

    reason = "ALREADY_EXISTS"

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} already exists", metadata={"resource": resource})
        self.resource = resource


class FailedPrecondition(RegistryError):
    """The resource is not in a state that allows the request."""

    reason = "FAILED_PRECONDITION"


class Aborted(RegistryError):
    """A concurrent change won: the etag or expected value no longer matches."""

    reason = "ETAG_MISMATCH"


class PermissionDenied(RegistryError):
    """The caller is known but may not do this."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(RegistryError):
    """The caller did not prove who it is."""

    reason = "UNAUTHENTICATED"


class ResourceExhausted(RegistryError):
    """A limit was reached."""

    reason = "RESOURCE_EXHAUSTED"


class OutOfRange(RegistryError):
    """The request names a position past what is kept (a revision older than the change
    log's oldest kept one)."""

    reason = "OUT_OF_RANGE"


class Unavailable(RegistryError):
    """A backing service cannot be reached; the request may be retried."""

    reason = "BACKEND_UNAVAILABLE"
