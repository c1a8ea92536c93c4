"""Tracing with OpenTelemetry's SDK and an in-memory exporter: a ResolveReference that
misses both caches, called through the SDK inside the caller's span, is one trace — the
server's span a child of the caller's (W3C trace context in the call's metadata), the
cache tiers' spans under it and the SQL statement (the asyncpg instrumentation) under
the PostgreSQL tier; a caller's mistake is not an error span, a missing version is not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from modelreg import tracing
from modelreg.app import start_server
from modelreg.client import AsyncClient
from modelreg.config import Settings
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import ADMIN_TOKEN, authed_channel, make_model, make_version

RESOLVE = "modelreg.v1.RegistryService/ResolveReference"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("off", processor=SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.reset()
        exporter.clear()


def under(span: ReadableSpan, ancestor: ReadableSpan, everything: list[ReadableSpan]) -> bool:
    """Whether `ancestor` is on `span`'s parent chain."""
    by_id = {s.context.span_id: s for s in everything}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        found = by_id.get(parent.span_id)
        parent = found.parent if found is not None else None
    return False


def named(finished: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


async def test_a_cold_lookup_is_one_trace_from_the_caller_down_to_its_sql(
    spans: InMemorySpanExporter, new_database: DatabaseFactory, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(address="127.0.0.1:0", postgres_url=await new_database(),
                        redis_url=redis_url, home=tmp_path, grace_seconds=1)  # fmt: skip
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        target = f"127.0.0.1:{running.port}"
        channel = await stack.enter_async_context(authed_channel(target))
        stub = rs_grpc.RegistryServiceStub(channel)
        await make_model(stub)
        version = await make_version(stub)
        await stub.SetAlias(rs.SetAliasRequest(
            name="namespaces/default/models/m/aliases/production", version_number=version.number
        ))  # fmt: skip
        client = await stack.enter_async_context(AsyncClient(target, token=ADMIN_TOKEN))
        assert running.services.local is not None
        running.services.local.clear()  # both caches cold for this reference
        async with redis.from_url(redis_url) as cache:
            await cache.flushdb()
        spans.clear()
        caller = trace.get_tracer("the caller")
        with caller.start_as_current_span("deploy step") as step:
            found = await client.resolve("default/m@production")
        assert found.number == version.number
        check_one_trace(list(spans.get_finished_spans()), step.get_span_context())

        # an L1 hit (once this process's cache follows the change log that far): no tier
        # below it has a span
        tiers_seen: list[str] = []
        for _ in range(100):
            spans.clear()
            await client.resolve("default/m@production")
            tiers_seen = [s.name for s in spans.get_finished_spans() if s.name.startswith("cache.")]
            if tiers_seen == ["cache.l1"]:
                break
            await asyncio.sleep(0.05)  # the follower applies the writes; the wait orders nothing
        assert tiers_seen == ["cache.l1"]

        await check_mistakes_are_not_errors(stub, spans)


def check_one_trace(finished: list[ReadableSpan], step: trace.SpanContext) -> None:
    """The server's span under the caller's, the three tiers under it, SQL under the last."""
    (call,) = named(finished, RESOLVE)
    assert call.kind is trace.SpanKind.SERVER
    assert call.context.trace_id == step.trace_id
    assert call.parent is not None
    assert call.parent.span_id == step.span_id
    attributes: dict[str, Any] = dict(call.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.method"] == "ResolveReference"
    assert attributes["rpc.grpc.status_code"] == "OK"
    tiers = {name: named(finished, name) for name in ("cache.l1", "cache.l2", "cache.postgres")}
    for name, found_spans in tiers.items():
        assert len(found_spans) == 1, f"{name}: {found_spans}"
        (tier,) = found_spans
        assert tier.parent is not None, name
        assert tier.parent.span_id == call.context.span_id, name
    (postgres,) = tiers["cache.postgres"]
    sql = [s for s in finished if (s.attributes or {}).get("db.system") == "postgresql"]
    assert any(under(s, postgres, finished) for s in sql), [s.name for s in sql]
    assert all(s.context.trace_id == call.context.trace_id for s in finished)


async def check_mistakes_are_not_errors(
    stub: rs_grpc.RegistryServiceAsyncStub, spans: InMemorySpanExporter
) -> None:
    """The callers' mistakes are answers, not errors of the server."""
    spans.clear()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.ResolveReference(rs.ResolveReferenceRequest(reference="default/m@gone"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ResolveReference(rs.ResolveReferenceRequest(reference="no such thing!"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    calls = named(list(spans.get_finished_spans()), RESOLVE)
    codes = [dict(s.attributes or {})["rpc.grpc.status_code"] for s in calls]
    assert codes == ["NOT_FOUND", "INVALID_ARGUMENT"]
    assert all(s.status.status_code is not StatusCode.ERROR for s in calls)
