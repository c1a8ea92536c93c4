"""The access log (MODELREG_ACCESS_LOG=on) as JSON lines (MODELREG_LOG_FORMAT=json): one
line per call through a real server — the caller's request id (or a fresh one), the
authenticated principal, the method, the status and the latency — and never the key."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelreg.app import start_server
from modelreg.config import Settings
from modelreg.logs import JsonFormatter
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import ADMIN_TOKEN, authed_channel

RESOLVE = "/modelreg.v1.RegistryService/ResolveReference"


async def test_each_call_is_one_json_line_with_who_what_and_how_long(
    new_database: DatabaseFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(address="127.0.0.1:0", postgres_url=await new_database(), home=tmp_path,
                        grace_seconds=1, access_log="on", log_format="json")  # fmt: skip
    async with AsyncExitStack() as stack:
        running = await start_server(settings, stack)
        target = f"127.0.0.1:{running.port}"
        channel = await stack.enter_async_context(authed_channel(target))
        stub = rs_grpc.RegistryServiceStub(channel)
        caplog.set_level(logging.INFO, logger="modelreg.access")
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ResolveReference(rs.ResolveReferenceRequest(reference="default/m@x"),
                                        metadata=(("x-request-id", "deploy-42"),))  # fmt: skip
        await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="m"))
        async with grpc.aio.insecure_channel(target) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await rs_grpc.RegistryServiceStub(anonymous).ResolveReference(
                    rs.ResolveReferenceRequest(reference="default/m@x")
                )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    formatter = JsonFormatter()
    text = [formatter.format(r) for r in caplog.records if r.name == "modelreg.access"]
    assert all(ADMIN_TOKEN not in line for line in text)
    lines: list[dict[str, Any]] = [json.loads(line) for line in text]
    assert [(line["method"].rsplit("/", 1)[1], line["code"]) for line in lines] == [
        ("ResolveReference", "NOT_FOUND"), ("CreateModel", "OK"),
        ("ResolveReference", "UNAUTHENTICATED"),
    ]  # fmt: skip
    first, created, anonymous_line = lines
    assert first["request_id"] == "deploy-42"
    assert len(created["request_id"]) == 32  # none given: a fresh one
    assert created["request_id"] != anonymous_line["request_id"]
    assert first["principal"] == created["principal"] == "admin"
    assert anonymous_line["principal"] == ""  # refused before anyone was admitted
    assert all(line["latency_ms"] > 0 and line["level"] == "INFO" for line in lines)
    assert all(line["logger"] == "modelreg.access" and line["peer"] for line in lines)
    assert first["method"] == RESOLVE
