"""Pure conversions between protobuf messages and domain values."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.types import (
    Alias,
    AliasEvent,
    Model,
    ModelVersion,
    Namespace,
    VersionSource,
    VersionState,
    etag_of,
)
from modelreg.v1 import resources_pb2 as pb


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def namespace_to_proto(ns: Namespace) -> pb.Namespace:
    return pb.Namespace(
        name=ns.name,
        description=ns.description,
        etag=etag_of(ns.revision),
        create_time=timestamp(ns.create_time),
        update_time=timestamp(ns.update_time),
    )


def model_to_proto(model: Model) -> pb.Model:
    return pb.Model(
        name=model.key.name,
        description=model.description,
        tags=model.tags,
        labels=model.labels,
        etag=etag_of(model.revision),
        create_time=timestamp(model.create_time),
        update_time=timestamp(model.update_time),
        delete_time=timestamp(model.delete_time),
        latest_version_number=model.latest_version_number,
    )


def model_from_proto(key: ModelKey, msg: pb.Model) -> Model:
    return Model(
        key=key, description=msg.description, tags=tuple(msg.tags), labels=dict(msg.labels)
    )


def version_to_proto(version: ModelVersion) -> pb.ModelVersion:
    src = version.source
    return pb.ModelVersion(
        name=version.key.name,
        number=version.key.number,
        state=version.state.value,  # type: ignore[arg-type]
        description=version.description,
        tags=version.tags,
        labels=version.labels,
        metrics=version.metrics,
        params=version.params,
        source=pb.VersionSource(
            run_id=src.run_id,
            code_commit=src.code_commit,
            framework=src.framework,
            framework_version=src.framework_version,
        ),
        digest=version.digest,
        total_size=version.total_size,
        creator=version.creator,
        etag=etag_of(version.revision),
        create_time=timestamp(version.create_time),
        update_time=timestamp(version.update_time),
    )


def version_from_proto(key: VersionKey, msg: pb.ModelVersion) -> ModelVersion:
    return ModelVersion(
        key=key,
        state=state_from_proto(msg.state, "version.state"),
        description=msg.description,
        tags=tuple(msg.tags),
        labels=dict(msg.labels),
        metrics=dict(msg.metrics),
        params=dict(msg.params),
        source=VersionSource(
            run_id=msg.source.run_id,
            code_commit=msg.source.code_commit,
            framework=msg.source.framework,
            framework_version=msg.source.framework_version,
        ),
    )


def state_from_proto(value: int, field: str) -> VersionState:
    """UNSPECIFIED means PENDING; an unknown number is INVALID_ARGUMENT."""
    if value == pb.MODEL_VERSION_STATE_UNSPECIFIED:
        return VersionState.PENDING
    try:
        return VersionState(value)
    except ValueError:
        raise InvalidArgument.field(field, f"unknown state {value}") from None


def states_from_proto(values: list[int], field: str) -> list[VersionState]:
    """A filter of states; UNSPECIFIED is not a state to filter on."""
    if pb.MODEL_VERSION_STATE_UNSPECIFIED in values:
        raise InvalidArgument.field(field, "MODEL_VERSION_STATE_UNSPECIFIED is not a state")
    return [state_from_proto(v, field) for v in values]


def alias_to_proto(alias: Alias) -> pb.Alias:
    return pb.Alias(
        name=alias.key.name,
        version_number=alias.number,
        version=VersionKey(alias.key.model, alias.number).name,
        etag=etag_of(alias.revision),
        updater=alias.updater,
        update_time=timestamp(alias.update_time),
    )


def alias_event_to_proto(event: AliasEvent) -> pb.AliasEvent:
    return pb.AliasEvent(
        alias=event.key.name,
        previous_version_number=event.previous_number,
        version_number=event.number,
        actor=event.actor,
        time=timestamp(event.time),
        event_id=event.event_id,
        change_request=event.change_request,
        approvers=event.approvers,
    )
