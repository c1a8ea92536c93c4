"""The ceiling: a grpc.aio server answering the lookup methods with fixed, pre-serialized
responses of a real response's size. No parsing, no cache, no database.

    PYTHONPATH=src .venv/bin/python benchmarks/empty_server.py --port 50077

Prints `PORT <n>` on stdout once it listens (use --port 0 for any free port).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res

SERVICE = "modelreg.v1.RegistryService"
Handler = Callable[[bytes, Any], Awaitable[bytes]]


def sample_version(model: str = "m000123", number: int = 4711) -> res.ModelVersion:
    """A version shaped like a seeded one (same fields, similar sizes)."""
    when = Timestamp(seconds=1_767_225_600, nanos=123_000_000)
    return res.ModelVersion(
        name=f"namespaces/bench/models/{model}/versions/{number}",
        number=number,
        state=res.MODEL_VERSION_STATE_READY,
        tags=["candidate", "gpu"],
        metrics={"auc": 0.9123, "loss": 0.1877, "f1": 0.8},
        params={"lr": "0.0003", "epochs": "17", "batch": "256"},
        source=res.VersionSource(
            run_id="9f86d081884c7d659a2feaa0c55ad015",
            code_commit="a3f1c2e4b5d6978812aa34bc56de78f901a2b3c4",
            framework="pytorch",
            framework_version="2.3.1",
        ),
        digest="sha256:" + "ab" * 32,
        total_size=1_234_567,
        creator="ci@bench",
        etag='"3"',
        create_time=when,
        update_time=when,
    )


def _fixed(payload: bytes) -> Handler:
    async def handle(request: bytes, context: Any) -> bytes:
        return payload

    return handle


def _batch() -> Handler:
    by_size: dict[int, bytes] = {}

    async def handle(request: bytes, context: Any) -> bytes:
        size = len(rs.BatchGetModelVersionsRequest.FromString(request).references)
        if size not in by_size:
            results = [
                rs.BatchGetModelVersionsResult(reference="bench/m000123@production", version=v)
                for v in [sample_version()] * size
            ]
            by_size[size] = rs.BatchGetModelVersionsResponse(results=results).SerializeToString()
        return by_size[size]

    return handle


def _page() -> Handler:
    by_size: dict[int, bytes] = {}

    async def handle(request: bytes, context: Any) -> bytes:
        size = rs.ListModelVersionsRequest.FromString(request).page_size or 50
        if size not in by_size:
            page = rs.ListModelVersionsResponse(
                versions=[sample_version()] * size, next_page_token="x" * 24
            )
            by_size[size] = page.SerializeToString()
        return by_size[size]

    return handle


def handlers() -> dict[str, Handler]:
    """Method name -> handler; the single-version methods share one payload."""
    one = rs.ResolveReferenceResponse(version=sample_version()).SerializeToString()
    return {
        "ResolveReference": _fixed(one),
        "GetModelVersion": _fixed(one),
        "BatchGetModelVersions": _batch(),
        "ListModelVersions": _page(),
    }


async def serve(port: int) -> None:
    server = grpc.aio.server()
    methods = {
        name: grpc.unary_unary_rpc_method_handler(handle)  # identity (de)serializers
        for name, handle in handlers().items()
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"PORT {bound}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    args = p.parse_args(argv)
    try:
        if args.no_uvloop:
            asyncio.run(serve(args.port))
        else:
            import uvloop

            uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
