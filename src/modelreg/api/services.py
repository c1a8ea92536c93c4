"""Registering a servicer's RPCs, with chosen ones answering in pre-serialized bytes.

The generated `add_*Servicer_to_server` helpers serialize every response message.
The hot lookups and the download stream instead answer with bytes they framed
themselves (api/wire.py), so those methods get no response serializer.

Consistency tokens are handled here, by the descriptors, for every RPC at once: a
response with a `revision` field gets the revision its call committed at, and a request
with a `min_revision` field is answered under the Plan for it (domain/consistency.py).
Both are for unary RPCs only: a streaming method is registered as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from types import ModuleType
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, ServiceDescriptor

from modelreg.domain.consistency import Consistency, lookup_plan, receipt

REVISION = "revision"  # a mutation's consistency token, in its response
MIN_REVISION = "min_revision"  # a lookup's, in its request
Unary = Callable[[Any, Any], Awaitable[Any]]

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
    consistency: Consistency,
    encoded: Collection[str] = (),
) -> None:
    """Register every RPC of `service` on `server`; methods in `encoded` return bytes."""
    handlers = {}
    for method in service.methods:
        request = getattr(messages, method.input_type.name)
        response = getattr(messages, method.output_type.name)
        make = _KINDS[(method.client_streaming, method.server_streaming)]
        behaviour = getattr(servicer, method.name)
        if _has(method.output_type, REVISION) and not method.server_streaming:
            behaviour = _answering_revision(behaviour, consistency)
        if _has(method.input_type, MIN_REVISION) and not (
            method.client_streaming or method.server_streaming
        ):  # the wrapper awaits one answer; a stream that takes a token plans it itself
            behaviour = _honouring_min_revision(behaviour, consistency)
        handlers[method.name] = make(
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=None if method.name in encoded else response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]


def _has(message: Descriptor, field: str) -> bool:
    return field in message.fields_by_name


def _answering_revision(behaviour: Unary, consistency: Consistency) -> Unary:
    async def answer(request: Any, context: Any) -> Any:
        with receipt() as collected:
            response = await behaviour(request, context)
        response.revision = await consistency.token(collected)
        return response

    return answer


def _honouring_min_revision(behaviour: Unary, consistency: Consistency) -> Unary:
    async def answer(request: Any, context: Any) -> Any:
        if not request.min_revision:  # no token: the hot path pays nothing more
            return await behaviour(request, context)
        plan = await consistency.plan(
            min_revision=request.min_revision, deadline=context.time_remaining()
        )
        with lookup_plan(plan):
            return await behaviour(request, context)

    return answer
