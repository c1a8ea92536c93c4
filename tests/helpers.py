"""Small helpers the integration tests share."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb

if TYPE_CHECKING:  # the async stub types exist only in the generated .pyi files
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub as Stub

DETAILS_KEY = "grpc-status-details-bin"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a server attached to a failed call."""
    # grpc-stubs types every RpcError's trailers as the sync API's _Metadatum tuple; an
    # AioRpcError's are a grpc.aio.Metadata, (key, value) pairs
    trailers = cast(grpc.aio.Metadata, err.trailing_metadata())
    for key, value in trailers or ():
        if key == DETAILS_KEY:
            assert isinstance(value, bytes), f"{key} holds {value!r}"
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError(f"no rich status on {err.code()}: {err.details()}")


def reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo in status")


def violations_of(status: status_pb2.Status) -> list[str]:
    """Field names of the BadRequest violations in a status."""
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


async def make_model(stub: Stub, model: str = "m", ns: str = "default") -> pb.Model:
    reply = await stub.CreateModel(rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=model))
    return reply.model


async def make_version(
    stub: Stub, model: str = "m", ns: str = "default", ready: bool = True
) -> pb.ModelVersion:
    state = pb.MODEL_VERSION_STATE_READY if ready else pb.MODEL_VERSION_STATE_PENDING
    reply = await stub.CreateModelVersion(
        rs.CreateModelVersionRequest(
            parent=f"namespaces/{ns}/models/{model}", version=pb.ModelVersion(state=state)
        )
    )
    return reply.version
