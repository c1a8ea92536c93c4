"""artifacts.py's ceilings: a raw grpc.aio stream of the same bytes (a server that sends or
swallows them), and the S3 endpoint read straight with aioboto3, with no gRPC and no
modelreg. Also the S3 endpoint itself: --s3-endpoint-url, or a moto server of our own."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc

from artifacts_systems import CHUNK, Blob, Endpoint, Receive, System, file_chunks, hashed, mb_s
from modelreg.blobs.s3 import S3BlobStore
from procs import free_port, process

HERE = Path(__file__).resolve().parent
RAW_SERVICE = "bench.Raw"
S3_PREFIX = "blobs"  # modelreg's prefix in the bucket, which the direct read needs too


# --- the raw server: sends or swallows bytes -------------------------------------------------


def raw_command(port: int, size_mib: int) -> list[str]:
    """The raw server's command line: artifacts.py's hidden --raw-server flag."""
    script = str(HERE / "artifacts.py")
    return [sys.executable, script, "--raw-server", str(port), "--size-mib", str(size_mib)]


async def raw_server(port: int, size: int) -> None:
    """Serve Download (`size` bytes in CHUNK messages) and Upload (read and drop) on `port`."""
    chunk = os.urandom(CHUNK)

    async def download(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for start in range(0, size, CHUNK):
            yield chunk[: min(CHUNK, size - start)]

    async def upload(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for _ in requests:
            pass
        return b""

    handlers = {
        "Download": grpc.unary_stream_rpc_method_handler(download),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(RAW_SERVICE, handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


async def raw_upload(stack: AsyncExitStack, system: System, blob: Blob) -> Receive:
    """Upload the file to the raw server once (timed); return its download."""
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(system.target))
    send = channel.stream_unary(f"/{RAW_SERVICE}/Upload", None, None)
    started = time.perf_counter()
    await send(file_chunks(blob.path))
    system.upload_mb_s = mb_s(blob.size, started)
    receive = channel.unary_stream(f"/{RAW_SERVICE}/Download", None, None)

    async def drain() -> None:
        async for _ in receive(b""):
            pass

    return drain


# --- S3: the endpoint, and the object read straight from it ----------------------------------


@contextmanager
def s3_endpoint(url: str, root: Path) -> Iterator[Endpoint]:
    """--s3-endpoint-url, or a moto server of our own; with a fresh bucket either way."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"modelreg-bench-{uuid.uuid4().hex[:8]}"
    if url:
        asyncio.run(make_bucket(url, bucket))
        yield Endpoint(url, None, bucket)
        return
    port = free_port()
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(moto, port, root / "moto.log") as pid:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(make_bucket(url, bucket))
        yield Endpoint(url, pid, bucket)


async def make_bucket(endpoint: str, bucket: str) -> None:
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as client:
        await client.create_bucket(Bucket=bucket)


async def direct_read(stack: AsyncExitStack, endpoint: Endpoint, sha256: str) -> Receive:
    """A download of the object modelreg s3 stored, straight from the endpoint."""
    import aioboto3

    session = aioboto3.Session()
    client = await stack.enter_async_context(session.client("s3", endpoint_url=endpoint.url))
    # The store's own key function (it only formats), so the key cannot drift from modelreg's.
    key = S3BlobStore(None, bucket=endpoint.bucket, prefix=S3_PREFIX).object_key(sha256)

    async def verified() -> None:
        body = (await client.get_object(Bucket=endpoint.bucket, Key=key))["Body"]
        try:
            digest = await hashed(body.iter_chunks(CHUNK))
        finally:
            body.close()
        assert digest == sha256, "direct read corrupted"

    return verified
