"""Server interceptors: admit the caller (api/identity.py), check requests at the edge,
map errors to statuses, honour deadlines, log failures, and count each call by method
and status for the metrics (modelreg/metrics.py), all in one wrapper per method."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from modelreg import tracing
from modelreg.api.errors import grpc_status
from modelreg.api.identity import Gate, OpenGate, admitted, dismissed
from modelreg.api.validation import check_request, checked_deserializer
from modelreg.domain.errors import RegistryError
from modelreg.domain.principals import Principal
from modelreg.metrics import Recorder

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
    Unary = Callable[[Any, Context], Awaitable[Any]]
    Streaming = Callable[[Any, Context], AsyncIterator[Any]]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every call is admitted by the gate first (who calls, and may it), its request
    checked by field type (api/validation.py); expected errors become their status;
    anything else is logged and becomes INTERNAL.

    Deadlines need nothing here: when a call's deadline passes (or its client goes),
    gRPC cancels the handler's task, so a stuck backend cannot hold a call past the time
    its client will wait (tests/integration/test_server.py shows the cut statement
    cancelled), and a call that never waits pays for no timer.
    """

    def __init__(self, gate: Gate | None = None, recorder: Recorder | None = None) -> None:
        self._gate = gate or OpenGate()
        self._recorder = recorder
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
        wrapped = _wrap(handler, method, self._gate, self._recorder)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(handler: Handler, method: str, gate: Gate, recorder: Recorder | None) -> Handler:
    codecs = {
        # grpc answers a deserializer that raises with UNKNOWN before we see the call; this
        # one never raises: it hands on a Refused, which check_request turns into its status.
        "request_deserializer": checked_deserializer(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if recorder is not None:
        recorder.method(method, _kind(handler))
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _guarded(handler.unary_unary, method, gate, recorder, streamed=False),  # type: ignore[arg-type]
            **codecs,
        )
    if handler.stream_unary is not None:  # called as (request iterator, context), like unary
        return grpc.stream_unary_rpc_method_handler(
            _guarded(handler.stream_unary, method, gate, recorder, streamed=True),  # type: ignore[arg-type]
            **codecs,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _guarded_stream(handler.unary_stream, method, gate, recorder, streamed=False),  # type: ignore[arg-type]
            **codecs,
        )
    return grpc.stream_stream_rpc_method_handler(
        _guarded_stream(handler.stream_stream, method, gate, recorder, streamed=True),  # type: ignore[arg-type]
        **codecs,
    )


def _kind(handler: Handler) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.stream_unary is not None:
        return "client_stream"
    return "server_stream" if handler.unary_stream is not None else "bidi_stream"


def _aborted(context: Context) -> str:
    """The status a handler aborted its call with."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _checked(request: Any, *, streamed: bool) -> Any:
    """The request, refused at the edge if it breaks a rule of its field types (see
    api/validation.py); a stream of requests is checked message by message."""
    if streamed:
        return _CheckedRequests(request)
    check_request(request)
    return request


class _CheckedRequests:
    """A request stream whose every message is checked as it is read. A bad message raises
    in the reader but leaves the stream readable, so a servicer can still drain it."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = aiter(requests)
        self._peeked: list[Any] = []

    def __aiter__(self) -> _CheckedRequests:
        return self

    async def __anext__(self) -> Any:
        if self._peeked:
            return self._peeked.pop()
        request = await anext(self._requests)
        check_request(request)
        return request

    async def peek(self) -> Any:
        """The first message, read now and read again by the handler (the gate decides
        an upload on the version its first message names); StopAsyncIteration if none."""
        if not self._peeked:
            self._peeked.append(await self.__anext__())
        return self._peeked[0]

    async def aclose(self) -> None:
        """Close the stream unread (a refused call): its reader is finalized now, not
        left for the garbage collector to find half-started."""
        close = getattr(self._requests, "aclose", None)
        if close is not None:
            await close()


async def _admit(gate: Gate, method: str, checked: Any, context: Context) -> Principal:
    """The gate's answer; a refused client stream is closed unread."""
    try:
        return await gate.admit(method, checked, context)
    except BaseException:
        if isinstance(checked, _CheckedRequests):
            await checked.aclose()
        raise


def _guarded(
    inner: Unary, method: str, gate: Gate, recorder: Recorder | None, *, streamed: bool
) -> Unary:
    """One call, checked, admitted, its errors mapped, counted; traced with MODELREG_TRACING
    (a span around it all, so the gate and the checks are inside the call's span)."""

    async def call(request: Any, context: Context) -> Any:
        if recorder is not None:
            recorder.started(method)
        start, code = time.perf_counter(), "OK"
        try:
            checked = _checked(request, streamed=streamed)
            token = admitted(await _admit(gate, method, checked, context))
            try:
                return await inner(checked, context)
            finally:
                dismissed(token)
        except grpc.aio.AbortError:
            code = _aborted(context)
            raise  # the handler (or an abort below) set its status
        except RegistryError as exc:
            status = grpc_status(exc)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except TimeoutError:
            code = "DEADLINE_EXCEEDED"
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went, or its deadline passed
            raise
        except Exception:  # the one place a bug becomes a status, with its traceback logged
            log.exception("internal error in %s", method)
            code = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            if recorder is not None:
                recorder.finished(method, code, time.perf_counter() - start)

    return _traced(call, method) if tracing.STATE.enabled else call


def _guarded_stream(
    inner: Streaming, method: str, gate: Gate, recorder: Recorder | None, *, streamed: bool
) -> Streaming:
    """The same mapping for a server stream; gRPC itself ends it at the deadline. The
    caller stays admitted until the stream ends: each call runs in a task of its own, so
    the caller set here never leaks into another call."""

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if recorder is not None:
            recorder.started(method)
        start, code = time.perf_counter(), "OK"
        try:
            checked = _checked(request, streamed=streamed)
            admitted(await _admit(gate, method, checked, context))
            stream = inner(checked, context)
            if inspect.isawaitable(stream):  # it writes with context.write (Health.Watch)
                await stream
                return
            async for response in stream:
                yield response
        except grpc.aio.AbortError:
            code = _aborted(context)
            raise
        except RegistryError as exc:
            status = grpc_status(exc)
            code = status.code.name
            await context.abort(status.code, status.details, status.trailing_metadata)
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except Exception:  # as in _guarded: a bug becomes INTERNAL, its traceback logged
            log.exception("internal error in %s", method)
            code = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            if recorder is not None:
                recorder.finished(method, code, time.perf_counter() - start)

    return _traced_stream(call, method) if tracing.STATE.enabled else call


def _traced(call: Unary, method: str) -> Unary:
    """`call` in a SERVER span, a child of the caller's trace (MODELREG_TRACING)."""

    async def traced(request: Any, context: Context) -> Any:
        with tracing.server_span(method, context.invocation_metadata()) as span:
            code = "OK"
            try:
                return await call(request, context)
            except grpc.aio.AbortError:
                code = _aborted(context)
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                tracing.ended(span, code)

    return traced


def _traced_stream(call: Streaming, method: str) -> Streaming:
    async def traced(request: Any, context: Context) -> AsyncIterator[Any]:
        with tracing.server_span(method, context.invocation_metadata()) as span:
            code = "OK"
            try:
                async for response in call(request, context):
                    yield response
            except grpc.aio.AbortError:
                code = _aborted(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            finally:
                tracing.ended(span, code)

    return traced
