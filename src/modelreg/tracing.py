"""OpenTelemetry tracing (docs/architecture.md, "Tracing"), off unless MODELREG_TRACING
says otherwise.

With it on, each call is a SERVER span named after its method, parented to the caller's
W3C trace context (`traceparent` in the call's metadata); the lookup's cache tiers are
spans under it (`cache.l1`, `cache.l2`, `cache.postgres`), and every SQL statement is a
span of the official asyncpg instrumentation. The SDK passes the current context on in
its calls' metadata (client/tracing.py), so a caller's trace continues into the server.

Off, nothing here runs on a call: call sites test `STATE.enabled` (an attribute read)
before touching OpenTelemetry, whose no-op spans would still cost microseconds on an L1
hit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)


class _State:
    enabled = False
    tracer: Tracer | None = None


STATE = _State()
# codes of the server's own failures: the span is an error (the callers' mistakes are not)
SERVER_FAULTS = frozenset(
    {"UNKNOWN", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED", "DATA_LOSS", "UNIMPLEMENTED"}
)


def configure(mode: str, processor: SpanProcessor | None = None) -> None:
    """Turn tracing on: `otlp` exports in batches to the OTLP endpoint the standard
    OTEL_EXPORTER_OTLP_* variables name; `processor` (tests) takes the spans instead.
    `off` (and no processor) leaves everything off."""
    if mode == "off" and processor is None:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first configuration in this process
        provider = TracerProvider(resource=Resource.create({"service.name": "modelreg"}))
        trace.set_tracer_provider(provider)
    if processor is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor = BatchSpanProcessor(OTLPSpanExporter())
        log.info("tracing: OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT, MODELREG_TRACING)")
    provider.add_span_processor(processor)
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    STATE.tracer = trace.get_tracer("modelreg")
    STATE.enabled = True


def reset() -> None:
    """Tracing off again (tests): no more spans of ours, asyncpg no longer instrumented.
    Handlers wrapped while it was on still open server spans, on the global provider."""
    if STATE.enabled:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    STATE.enabled = False


def _tracer_of() -> Tracer:
    if STATE.tracer is None:
        from opentelemetry import trace

        STATE.tracer = trace.get_tracer("modelreg")
    return STATE.tracer


def server_span(method: str, metadata: Iterable[Any] | None) -> Any:
    """A context manager: the SERVER span of one call, a child of the caller's context."""
    from opentelemetry import propagate, trace

    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    service, _, name = method.strip("/").rpartition("/")
    return _tracer_of().start_as_current_span(
        f"{service}/{name}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    )


def ended(span: Span, code: str) -> None:
    """Record a call's status code on its span."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", code)
    if code in SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code))


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Span | None]:
    """An INTERNAL span under the current one; with tracing off, a shared no-op context
    (no OpenTelemetry call: a function call and an attribute read)."""
    if not STATE.enabled:
        return _OFF
    return _tracer_of().start_as_current_span(name, attributes=attributes)
