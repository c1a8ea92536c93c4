"""api/services.py's descriptor-driven wrappers against a real grpc.aio server: a
server-streaming RPC whose request has `min_revision` still streams (a unary wrapper
awaiting an async generator would fail every call with a TypeError)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from modelreg.api.services import add_service
from modelreg.domain.consistency import Consistency


class _Heads:
    async def head(self) -> int:
        return 100


def _streaming_service() -> tuple[Any, ModuleType]:
    """A service with one server stream whose request carries a token."""
    file = descriptor_pb2.FileDescriptorProto(name="consfix_test.proto", package="t")
    request = file.message_type.add(name="StreamRequest")
    request.field.add(
        name="min_revision",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    response = file.message_type.add(name="StreamResponse")
    response.field.add(
        name="n",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    service = file.service.add(name="Streams")
    service.method.add(
        name="Stream",
        input_type=".t.StreamRequest",
        output_type=".t.StreamResponse",
        server_streaming=True,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    described = pool.FindFileByName(file.name)
    messages = ModuleType("consfix_test_pb2")
    for name in ("StreamRequest", "StreamResponse"):
        cls = message_factory.GetMessageClass(described.message_types_by_name[name])
        setattr(messages, name, cls)
    return described.services_by_name["Streams"], messages


async def test_a_server_stream_with_min_revision_streams() -> None:
    service, messages = _streaming_service()

    class Servicer:
        async def Stream(self, request: Any, context: Any) -> AsyncIterator[Any]:
            for n in range(3):
                yield messages.StreamResponse(n=n + request.min_revision)

    consistency = Consistency(heads=_Heads(), follower=None, replica=None, wait_seconds=0)
    server = grpc.aio.server()
    add_service(server, Servicer(), service, messages, consistency=consistency)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(
                "/t.Streams/Stream",
                request_serializer=messages.StreamRequest.SerializeToString,
                response_deserializer=messages.StreamResponse.FromString,
            )
            for token in (0, 7):
                got = [r.n async for r in call(messages.StreamRequest(min_revision=token))]
                assert got == [token, token + 1, token + 2]
    finally:
        await server.stop(None)
