"""Pure conversions between WatchService messages and the change log's values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.events import Event
from modelreg.domain.watch import Delivery, WatchSpec, watch_spec
from modelreg.v1 import watch_service_pb2 as ws

_MAX_NANOS = 999_999_999


def spec_from_proto(request: ws.WatchRequest) -> WatchSpec:
    """The checked spec of a WatchRequest; InvalidArgument naming every bad field."""
    start = request.WhichOneof("start")
    after = request.after_revision if start == "after_revision" else None
    start_at = request.start_at if start == "start_at" else ws.WATCH_START_UNSPECIFIED
    if start_at not in ws.WatchStart.values():
        raise InvalidArgument.field("start_at", f"unknown WatchStart value {start_at}")
    seconds = None
    if request.HasField("bookmark_interval"):
        seconds = _seconds(request.bookmark_interval, "bookmark_interval")
    return watch_spec(
        namespaces=request.namespaces,
        models=request.models,
        aliases=request.aliases,
        kinds=request.kinds,
        after_revision=after,
        oldest=start_at == ws.WATCH_START_OLDEST,
        bookmark_seconds=seconds,
    )


def _seconds(duration: Duration, field: str) -> float:
    """A well-formed Duration in seconds (the nanos carry the seconds' sign, |nanos| < 1e9)."""
    secs, nanos = duration.seconds, duration.nanos
    if abs(nanos) > _MAX_NANOS or (secs > 0 and nanos < 0) or (secs < 0 and nanos > 0):
        raise InvalidArgument.field(field, "is not a valid Duration")
    return secs + nanos / 1e9


def delivery_to_proto(delivery: Delivery) -> ws.WatchResponse:
    """One message: a transaction's matching events, or a bookmark."""
    if delivery.bookmark:
        return ws.WatchResponse(revision=delivery.revision, bookmark=True)
    return ws.WatchResponse(
        revision=delivery.revision,
        events=[_event_to_proto(event, delivery.time) for event in delivery.events],
    )


def _event_to_proto(event: Event, time: datetime | None) -> ws.ChangeEvent:
    message = ws.ChangeEvent(
        kind=event.kind.value,
        resource=event.resource,
        actor=event.actor,
        latest_moved=event.latest_moved,
    )
    if time is not None:
        stamp = Timestamp()
        stamp.FromDatetime(time)
        message.time.CopyFrom(stamp)
    if event.before is not None:
        message.before.CopyFrom(_struct(event.before))
    if event.after is not None:
        message.after.CopyFrom(_struct(event.after))
    return message


def _struct(snapshot: Mapping[str, Any]) -> Struct:
    """The stored JSON snapshot as a Struct (its numbers become doubles, as in JSON)."""
    struct = Struct()
    struct.update(snapshot)
    return struct
