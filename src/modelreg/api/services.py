"""Registering a servicer's RPCs, with chosen ones answering in pre-serialized bytes.

The generated `add_*Servicer_to_server` helpers serialize every response message.
The hot lookups and the download stream instead answer with bytes they framed
themselves (api/wire.py), so those methods get no response serializer.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(
    server: grpc.aio.Server,
    servicer: Any,
    service: ServiceDescriptor,
    messages: ModuleType,
    *,
    encoded: Collection[str] = (),
) -> None:
    """Register every RPC of `service` on `server`; methods in `encoded` return bytes."""
    handlers = {}
    for method in service.methods:
        request = getattr(messages, method.input_type.name)
        response = getattr(messages, method.output_type.name)
        make = _KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=None if method.name in encoded else response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
