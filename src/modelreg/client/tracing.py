"""The caller's trace passed on: when the calling code is inside an OpenTelemetry span,
each call carries its W3C trace context (`traceparent`, `tracestate`) in the metadata, so
the server's span of the call is a child of it (tracing.py on the server)."""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the SDK works without OpenTelemetry; then there is nothing to pass
    propagate = trace = None  # type: ignore[assignment]

Metadata = tuple[tuple[str, str], ...]


def with_trace_context(metadata: Metadata) -> Metadata:
    """`metadata`, plus the current span's context if there is one."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return metadata
    carrier: dict[str, Any] = {}
    propagate.inject(carrier)
    return (*metadata, *((key, str(value)) for key, value in carrier.items()))
