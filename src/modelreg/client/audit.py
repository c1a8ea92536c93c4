"""Request builders for AuditService (each builder's docstring is its method's)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.client.calls import AUDIT, Call, Pages
from modelreg.client.names import model_name, namespace_name
from modelreg.v1 import audit_service_pb2 as au


def list_events(
    *,
    namespace: str | None = None,
    model: str | None = None,
    actor: str | None = None,
    kinds: Iterable[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    newest_first: bool = False,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[au.AuditEvent]:
    """Iterate over the audit log's events matching the filters (a namespace id, a model
    as `ns/model`, an actor, event kinds, a time range [since, until)), oldest first or
    newest first, each with its revision and its place in the hash chain."""
    base = au.ListEventsRequest(
        namespace=namespace_name(namespace) if namespace else "",
        model=model_name(model) if model else "",
        actor=actor or "",
        kinds=list(kinds),
        start_time=_timestamp(since),
        end_time=_timestamp(until),
        newest_first=newest_first,
        page_size=page_size or 0,
    )

    def page(token: str) -> Message:
        request = au.ListEventsRequest()
        request.CopyFrom(base)
        request.page_token = token
        return request

    return Pages("ListEvents", page, lambda r: r.events, timeout, AUDIT)


def list_denials(
    *,
    actor: str | None = None,
    method: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    newest_first: bool = False,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[au.Denial]:
    """Iterate over the refused calls matching the filters."""
    base = au.ListDenialsRequest(
        actor=actor or "",
        method=method or "",
        start_time=_timestamp(since),
        end_time=_timestamp(until),
        newest_first=newest_first,
        page_size=page_size or 0,
    )

    def page(token: str) -> Message:
        request = au.ListDenialsRequest()
        request.CopyFrom(base)
        request.page_token = token
        return request

    return Pages("ListDenials", page, lambda r: r.denials, timeout, AUDIT)


def verify_audit_log(
    *,
    after_revision: int = 0,
    after_event_id: int = 0,
    expected_previous_hash: bytes = b"",
    max_events: int = 0,
    timeout: float | None = None,
) -> Call[au.VerifyAuditLogResponse]:
    """Recompute the hash chain for up to `max_events` events after a position (the
    start by default); pass the answer's last_revision, last_event_id and last_hash to
    go on. The answer names the first event that does not match, if any."""
    request = au.VerifyAuditLogRequest(
        after_revision=after_revision,
        after_event_id=after_event_id,
        expected_previous_hash=expected_previous_hash,
        max_events=max_events,
    )
    return Call("VerifyAuditLog", request, lambda r: r, True, timeout, AUDIT)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
