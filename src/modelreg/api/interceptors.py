"""Server interceptors: admit the caller (api/identity.py), check requests at the edge,
map errors to statuses, honour deadlines, log failures, and count each call by method
and status for the metrics (modelreg/metrics.py), all in one wrapper per method."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from modelreg import logs, tracing
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

    def __init__(
        self, gate: Gate | None = None, recorder: Recorder | None = None, access_log: bool = False
    ) -> None:
        self._edge = _Edge(gate or OpenGate(), recorder, access_log)
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
        wrapped = _wrap(handler, method, self._edge)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


@dataclass(frozen=True)
class _Edge:
    """What every wrapped method shares: the gate, the metrics' recorder (or None), and
    whether the access log is on."""

    gate: Gate
    recorder: Recorder | None
    access_log: bool


def _wrap(handler: Handler, method: str, edge: _Edge) -> Handler:
    codecs = {
        # grpc answers a deserializer that raises with UNKNOWN before we see the call; this
        # one never raises: it hands on a Refused, which check_request turns into its status.
        "request_deserializer": checked_deserializer(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if edge.recorder is not None:
        edge.recorder.method(method, _kind(handler))
    if handler.unary_unary is not None:
        call = _guarded(handler.unary_unary, method, edge, streamed=False)  # type: ignore[arg-type]
        return grpc.unary_unary_rpc_method_handler(call, **codecs)
    if handler.stream_unary is not None:  # called as (request iterator, context), like unary
        call = _guarded(handler.stream_unary, method, edge, streamed=True)  # type: ignore[arg-type]
        return grpc.stream_unary_rpc_method_handler(call, **codecs)
    if handler.unary_stream is not None:
        stream = _guarded_stream(handler.unary_stream, method, edge, streamed=False)  # type: ignore[arg-type]
        return grpc.unary_stream_rpc_method_handler(stream, **codecs)
    stream = _guarded_stream(handler.stream_stream, method, edge, streamed=True)  # type: ignore[arg-type]
    return grpc.stream_stream_rpc_method_handler(stream, **codecs)


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
        principal = await gate.admit(method, checked, context)
        logged = _LOGGED.get(None)
        if logged is not None:  # the access log is on
            logged.principal = principal.name
        return principal
    except BaseException:
        if isinstance(checked, _CheckedRequests):
            await checked.aclose()
        raise


def _guarded(inner: Unary, method: str, edge: _Edge, *, streamed: bool) -> Unary:
    """One call, checked, admitted, its errors mapped, counted; traced with MODELREG_TRACING
    and logged with MODELREG_ACCESS_LOG (an outer wrapper, so the gate and the checks are
    inside the call's span)."""
    gate, recorder = edge.gate, edge.recorder

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

    traced, logged = tracing.STATE.enabled, edge.access_log
    return _outer(call, method, traced=traced, logged=logged) if traced or logged else call


def _guarded_stream(inner: Streaming, method: str, edge: _Edge, *, streamed: bool) -> Streaming:
    """The same mapping for a server stream; gRPC itself ends it at the deadline. The
    caller stays admitted until the stream ends: each call runs in a task of its own, so
    the caller set here never leaks into another call."""
    gate, recorder = edge.gate, edge.recorder

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

    traced, logged = tracing.STATE.enabled, edge.access_log
    return _outer_stream(call, method, traced=traced, logged=logged) if traced or logged else call


@dataclass
class _Logged:
    """One call of the access log: filled by the wrapper and by the admission."""

    method: str
    request_id: str
    peer: str
    principal: str = ""


_LOGGED: contextvars.ContextVar[_Logged] = contextvars.ContextVar("modelreg_logged")


def _outer(call: Unary, method: str, *, traced: bool, logged: bool) -> Unary:
    """`call` in a SERVER span (MODELREG_TRACING) and/or written to the access log
    (MODELREG_ACCESS_LOG); only built when one of them is on."""

    async def outer(request: Any, context: Context) -> Any:
        with _observed(method, context, traced=traced, logged=logged) as end:
            try:
                response = await call(request, context)
            except BaseException as exc:
                end(_code_of(exc, context))
                raise
            end("OK")
            return response

    return outer


def _outer_stream(call: Streaming, method: str, *, traced: bool, logged: bool) -> Streaming:
    async def outer(request: Any, context: Context) -> AsyncIterator[Any]:
        with _observed(method, context, traced=traced, logged=logged) as end:
            try:
                async for response in call(request, context):
                    yield response
            except BaseException as exc:
                end(_code_of(exc, context))
                raise
            end("OK")

    return outer


def _code_of(exc: BaseException, context: Context) -> str:
    if isinstance(exc, grpc.aio.AbortError):
        return _aborted(context)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"


@contextlib.contextmanager
def _observed(
    method: str, context: Context, *, traced: bool, logged: bool
) -> Iterator[Callable[[str], None]]:
    """Yield what records the call's end (its status code) on its span and in the log."""
    metadata = context.invocation_metadata() or ()
    start = time.perf_counter()
    entry = None
    if logged:  # each call runs in a task of its own: the variable ends with the call
        given = next((v for k, v in metadata if k == logs.REQUEST_ID), None)
        entry = _Logged(method, str(given or uuid.uuid4().hex), context.peer())
        _LOGGED.set(entry)
    span_context = tracing.server_span(method, metadata) if traced else contextlib.nullcontext()
    with span_context as span:

        def end(code: str) -> None:
            if span is not None:
                tracing.ended(span, code)
            if entry is not None:
                _access(entry, code, time.perf_counter() - start)

        yield end


def _access(entry: _Logged, code: str, seconds: float) -> None:
    fields = {"request_id": entry.request_id, "principal": entry.principal,
              "method": entry.method, "code": code, "latency_ms": round(seconds * 1000, 3),
              "peer": entry.peer}  # fmt: skip
    logs.ACCESS.info("%s %s %.3f ms", entry.method, code, seconds * 1000, extra=fields)
