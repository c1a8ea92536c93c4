"""Pure conversions between AuditService messages and the audit log's values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from modelreg.api.convert import timestamp
from modelreg.domain.audit import (
    AuditEvent,
    DenialQuery,
    EventQuery,
    MismatchKind,
    RecordedDenial,
    Verification,
    denial_query,
    event_query,
)
from modelreg.domain.errors import InvalidArgument
from modelreg.v1 import audit_service_pb2 as au

_MISMATCH_KINDS = {
    MismatchKind.CHANGED: au.AUDIT_MISMATCH_KIND_CHANGED,
    MismatchKind.UNLINKED: au.AUDIT_MISMATCH_KIND_UNLINKED,
}
_MAX_NANOS = 999_999_999


def events_query_from_proto(request: au.ListEventsRequest) -> EventQuery:
    """The checked filters of a ListEventsRequest."""
    return event_query(
        namespace=request.namespace,
        model=request.model,
        actor=request.actor,
        kinds=list(request.kinds),
        start_time=_time(request, "start_time"),
        end_time=_time(request, "end_time"),
        newest_first=request.newest_first,
    )


def denials_query_from_proto(request: au.ListDenialsRequest) -> DenialQuery:
    """The checked filters of a ListDenialsRequest."""
    return denial_query(
        actor=request.actor,
        method=request.method,
        start_time=_time(request, "start_time"),
        end_time=_time(request, "end_time"),
        newest_first=request.newest_first,
    )


def event_to_proto(event: AuditEvent) -> au.AuditEvent:
    message = au.AuditEvent(
        event_id=event.event_id,
        revision=event.revision,
        kind=event.kind,
        resource=event.resource,
        actor=event.actor,
        time=timestamp(event.time),
        latest_moved=event.latest_moved,
        namespace=event.namespace,
        previous_hash=event.previous_hash,
        hash=event.hash,
    )
    if event.before is not None:
        message.before.CopyFrom(_struct(event.before))
    if event.after is not None:
        message.after.CopyFrom(_struct(event.after))
    return message


def denial_to_proto(recorded: RecordedDenial) -> au.Denial:
    denial = recorded.denial
    return au.Denial(
        denial_id=recorded.denial_id,
        time=timestamp(recorded.time),
        actor=denial.actor,
        method=denial.method,
        resource=denial.resource,
        permission=denial.permission,
        reason=denial.reason,
    )


def verification_to_proto(result: Verification) -> au.VerifyAuditLogResponse:
    message = au.VerifyAuditLogResponse(
        checked=result.checked,
        last_revision=result.last.revision,
        last_event_id=result.last.event_id,
        last_hash=result.last_hash,
        done=result.done,
        head_revision=result.head_revision,
    )
    if result.mismatch is not None:
        found = result.mismatch
        message.mismatch.CopyFrom(
            au.AuditMismatch(
                kind=_MISMATCH_KINDS[found.kind],
                event_id=found.event_id,
                revision=found.revision,
                resource=found.resource,
                stored_hash=found.stored_hash,
                recomputed_hash=found.recomputed_hash,
                stored_previous_hash=found.stored_previous_hash,
                expected_previous_hash=found.expected_previous_hash,
            )
        )
    return message


def _time(request: Message, field: str) -> datetime | None:
    """A set Timestamp field as an aware datetime; one out of range is refused."""
    if not request.HasField(field):
        return None
    stamp = getattr(request, field)
    if not 0 <= stamp.nanos <= _MAX_NANOS:
        raise InvalidArgument.field(field, "is not a valid Timestamp")
    try:
        return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument.field(
            field, "must be between 0001-01-01 and 9999-12-31 (UTC)"
        ) from None


def _struct(snapshot: Any) -> Struct:
    struct = Struct()
    struct.update(snapshot)
    return struct
