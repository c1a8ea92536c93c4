"""artifacts.py's rounds at one size: fresh servers all up together (raw, moto, one
`modelreg serve` per store), one upload to each, then rounds of one download from every
system in turn, then an SDK pull from each modelreg; the rows."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc

from artifacts_ceilings import S3_PREFIX, direct_read, raw_command, raw_upload, s3_endpoint
from artifacts_memory import note_rss
from artifacts_report import row
from artifacts_systems import (
    Blob,
    Endpoint,
    MiB,
    Receive,
    System,
    file_chunks,
    hashed,
    make_file,
    mb_s,
    timed,
)
from modelreg.client import AsyncClient
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import artifact_service_pb2_grpc as art_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from procs import free_port, process


def measure(size_mib: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fresh servers for one size (VmHWM is per process): upload, rounds, pulls; the rows."""
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        path = root / "blob.bin"
        blob = Blob(path, size_mib * MiB, make_file(path, size_mib * MiB))
        systems, endpoint = start(stack, root, size_mib, args)
        for system in systems:
            note_rss(system, "idle")
        asyncio.run(exercise(systems, endpoint, blob, (args.warmup, args.repeat)))
        for system in systems:
            note_rss(system, "end")
    raw, direct = systems[0], next((s for s in systems if s.kind == "direct"), None)
    return [row(system, size_mib, raw, direct) for system in systems]


# --- the servers of one size -----------------------------------------------------------------


def start(
    stack: ExitStack, root: Path, size_mib: int, args: argparse.Namespace
) -> tuple[list[System], Endpoint | None]:
    """Every server of one size, all up together: raw, moto, one modelreg per store."""
    port = free_port()
    raw_pid = stack.enter_context(process(raw_command(port, size_mib), port, root / "raw.log"))
    systems = [System("raw grpc (ceiling)", "raw", f"127.0.0.1:{port}", raw_pid)]
    endpoint = None
    if "s3" in args.stores:
        endpoint = stack.enter_context(s3_endpoint(args.s3_endpoint_url, root))
    systems += [_start_modelreg(stack, root, store, endpoint) for store in args.stores]
    if endpoint is not None:
        systems.append(System("s3 endpoint direct", "direct", endpoint.url, endpoint.pid))
    return systems, endpoint


def _start_modelreg(stack: ExitStack, root: Path, store: str, endpoint: Endpoint | None) -> System:
    if store == "fs":
        blob_url, s3_url, endpoint_pid = (root / "blobs").as_uri(), "", None
    else:
        assert endpoint is not None
        blob_url = f"s3://{endpoint.bucket}/{S3_PREFIX}"
        s3_url, endpoint_pid = endpoint.url, endpoint.pid
    target, pid = stack.enter_context(modelreg(root / f"home-{store}", blob_url, s3_url))
    return System(f"modelreg {store}", "modelreg", target, pid, endpoint_pid)


@contextmanager
def modelreg(home: Path, blob_url: str, s3_endpoint: str) -> Iterator[tuple[str, int]]:
    """One `modelreg serve` process on a store; its target and pid."""
    port = free_port()
    env = {
        "MODELREG_HOME": str(home),
        "MODELREG_BLOB_URL": blob_url,
        "MODELREG_LOG_LEVEL": "WARNING",
        "MODELREG_WORKERS": "1",  # one process, so its RSS is the server's
    }
    if s3_endpoint:
        env["MODELREG_S3_ENDPOINT_URL"] = s3_endpoint
    if os.environ.get("MODELREG_POSTGRES_URL"):
        env["MODELREG_POSTGRES_URL"] = os.environ["MODELREG_POSTGRES_URL"]
    env["MODELREG_AUTH"] = "off"  # measures transfers, not authentication (loopback only)
    args = [sys.executable, "-m", "modelreg", "serve", "--address", f"127.0.0.1:{port}"]
    with process(args, port, home.with_suffix(".log"), env) as pid:
        yield f"127.0.0.1:{port}", pid


# --- uploading once, then downloads to repeat ------------------------------------------------


async def exercise(
    systems: list[System], endpoint: Endpoint | None, blob: Blob, rounds: tuple[int, int]
) -> None:
    """Upload to each system; then rounds of one download from each, `rounds` = (warm-up,
    timed); then pulls."""
    warmup, repeat = rounds
    async with AsyncExitStack() as stack:
        for system in systems:
            system.receive = await _prepare(stack, system, endpoint, blob)
        for system in systems:
            note_rss(system, "upload", reset=True)
        for _ in range(warmup):
            for system in systems:
                await system.download()
        for _ in range(repeat):
            for system in systems:
                system.samples.append(await timed(system, blob.size))
    for system in systems:
        if system.kind == "modelreg":
            system.pull_mb_s = await sdk_pull(system, blob.path.parent / "pull", blob.size)


async def _prepare(
    stack: AsyncExitStack, system: System, endpoint: Endpoint | None, blob: Blob
) -> Receive:
    if system.kind == "raw":
        return await raw_upload(stack, system, blob)
    if system.kind == "modelreg":
        return await modelreg_upload(stack, system, blob)
    assert endpoint is not None
    return await direct_read(stack, endpoint, blob.sha256)


async def modelreg_upload(stack: AsyncExitStack, system: System, blob: Blob) -> Receive:
    """Upload the file to a new version (timed) and finalize it; return its download."""
    file = art.ManifestEntry(path="weights.bin", size=blob.size, sha256=blob.sha256)
    async with grpc.aio.insecure_channel(system.target) as channel:
        version = await _create_version(rs_grpc.RegistryServiceStub(channel))
        artifacts = art_grpc.ArtifactServiceStub(channel)
        started = time.perf_counter()
        reply = await artifacts.UploadFile(_upload_stream(version, file, blob.path))
        system.upload_mb_s = mb_s(file.size, started)
        assert reply.complete, reply
        await artifacts.FinalizeModelVersion(
            art.FinalizeModelVersionRequest(name=version, files=[file])
        )
    system.version = version
    # The SDK's stream: data as views, no copies.
    client = await stack.enter_async_context(AsyncClient(system.target))

    async def verified() -> None:
        digest = await hashed(client.download_file(version, "weights.bin"))
        assert digest == blob.sha256, "download corrupted"

    return verified


async def _create_version(registry: rs_grpc.RegistryServiceAsyncStub) -> str:
    model = f"b{uuid.uuid4().hex[:10]}"
    await registry.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id=model))
    request = rs.CreateModelVersionRequest(parent=f"namespaces/default/models/{model}")
    return (await registry.CreateModelVersion(request)).version.name


async def _upload_stream(
    version: str, file: art.ManifestEntry, path: Path
) -> AsyncIterator[art.UploadFileRequest]:
    header = art.UploadHeader(
        version=version, path=file.path, size=file.size, sha256=file.sha256, upload_id="bench"
    )
    yield art.UploadFileRequest(header=header)
    async for data in file_chunks(path):
        yield art.UploadFileRequest(data=data)


async def sdk_pull(system: System, dest: Path, size: int) -> float:
    """MB/s of `AsyncClient.pull`: download, sha256, write, fsync and rename."""
    async with AsyncClient(system.target) as client:
        started = time.perf_counter()
        await client.pull(system.version, dest)
        speed = mb_s(size, started)
    shutil.rmtree(dest)
    return speed
