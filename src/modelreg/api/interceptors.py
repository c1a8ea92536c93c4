"""Server interceptors: map errors to statuses, honour deadlines, log failures."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.errors import grpc_status
from modelreg.domain.errors import RegistryError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
    Unary = Callable[[Any, Context], Awaitable[Any]]
    Streaming = Callable[[Any, Context], AsyncIterator[Any]]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Expected errors become their status; anything else is logged and becomes INTERNAL.

    The handler also runs under the call's deadline, so a stuck backend cannot
    hold a call past the time its client will wait.
    """

    def __init__(self) -> None:
        # Wrapped handlers by method (bounded: only methods that have a handler get in),
        # built once per method rather than once per call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Handler, method: str) -> Handler:
    if handler.unary_unary is None:
        return _guarded_streaming(handler, method)
    return grpc.unary_unary_rpc_method_handler(
        _guarded(handler.unary_unary, method),  # type: ignore[arg-type]
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _guarded_streaming(handler: Handler, method: str) -> Handler:
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.stream_unary is not None:  # called as (request iterator, context), like unary
        return grpc.stream_unary_rpc_method_handler(
            _guarded(handler.stream_unary, method),  # type: ignore[arg-type]
            **codecs,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guarded_stream(handler.unary_stream, method),  # type: ignore[arg-type]
            **codecs,
        )
    return handler  # no bidirectional streams yet


def _guarded(inner: Unary, method: str) -> Unary:
    async def call(request: Any, context: Context) -> Any:
        try:
            async with asyncio.timeout(context.time_remaining()):
                return await inner(request, context)
        except grpc.aio.AbortError:
            raise  # the handler set its own status
        except RegistryError as exc:
            status = grpc_status(exc)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except Exception:  # the one place a bug becomes a status, with its traceback logged
            log.exception("internal error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return call


def _guarded_stream(inner: Streaming, method: str) -> Streaming:
    """The same mapping for a server stream; gRPC itself ends it at the deadline."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            stream = inner(request, context)
            if inspect.isawaitable(stream):  # it writes with context.write (Health.Watch)
                await stream
                return
            async for response in stream:
                yield response
        except grpc.aio.AbortError:
            raise
        except RegistryError as exc:
            status = grpc_status(exc)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except Exception:  # as in _guarded: a bug becomes INTERNAL, its traceback logged
            log.exception("internal error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return call
