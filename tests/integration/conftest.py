"""Artifact servers: modelreg with its blobs on the filesystem (a temporary home) and on S3
over HTTP (moto's server in a subprocess on a free loopback port, unless
MODELREG_TEST_S3_ENDPOINT_URL names an endpoint), sharing the session's database."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import grpc
import pytest

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.domain.ports import BlobStore, StagedBlob
from modelreg.v1 import artifact_service_pb2_grpc, registry_service_pb2_grpc
from tests.helpers import authed_channel, free_port

S3_PART_SIZE = 8 * 1024 * 1024  # the S3BlobStore default, so a >8 MiB file is multipart


@pytest.fixture(scope="session")
def s3_endpoint_url() -> Iterator[str]:
    """An S3 endpoint: MODELREG_TEST_S3_ENDPOINT_URL, else moto's server started here."""
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        os.environ.setdefault(name, value)  # moto accepts any; boto3 insists on some
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    given = os.environ.get("MODELREG_TEST_S3_ENDPOINT_URL")
    if given:
        yield given
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
async def s3_client(s3_endpoint_url: str) -> AsyncIterator[Any]:
    """An aioboto3 S3 client on the test endpoint, for checking what the bucket holds."""
    async with aioboto3.Session().client("s3", endpoint_url=s3_endpoint_url) as client:
        yield client


@pytest.fixture(scope="session")
async def s3_bucket(s3_client: Any) -> str:
    name = f"modelreg-test-{uuid.uuid4().hex[:12]}"
    await s3_client.create_bucket(Bucket=name)
    return name


@dataclass
class ArtifactServer:
    """A running modelreg with stubs, and where its blobs live."""

    kind: str  # "fs" or "s3"
    running: RunningServer
    channel: grpc.aio.Channel
    registry: registry_service_pb2_grpc.RegistryServiceAsyncStub
    artifacts: artifact_service_pb2_grpc.ArtifactServiceAsyncStub
    blob_root: Path | None = None  # fs: the blob store's directory
    bucket: str = ""  # s3: the bucket, blobs under the prefix "blobs/"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


async def serve_artifacts(
    kind: str, settings: Settings, stack: AsyncExitStack, **where: Any
) -> ArtifactServer:
    """Start modelreg with `settings` on `stack`, with stubs on a channel to it."""
    running = await start_server(settings, stack)
    channel = await stack.enter_async_context(authed_channel(f"127.0.0.1:{running.port}"))
    registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
    artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(channel)
    return ArtifactServer(kind, running, channel, registry, artifacts, **where)


Hook = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Hooked:
    """A double of one of our own ports around the real adapter, running a hook in place
    of some of its methods: the hook gets the real method (its arguments bound) and
    decides when to call it (after a slow disk's delay, before a collection, once the
    test says so...)."""

    def __init__(self, real: Any, **hooks: Hook) -> None:
        self._real, self._hooks = real, hooks

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._real, name)
        hook = self._hooks.get(name)
        if hook is None:
            return real
        return lambda *args, **kwargs: hook(functools.partial(real, *args, **kwargs))


class HookedBlobs:
    """A BlobStore around the real one whose staged uploads are Hooked with `hooks`."""

    def __init__(self, blobs: BlobStore, **hooks: Hook) -> None:
        self._blobs, self._hooks = blobs, hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    async def open_upload(self, **request: Any) -> StagedBlob:
        staged = await self._blobs.open_upload(**request)
        return Hooked(staged, **self._hooks)


def blob_settings(store: ArtifactServer, s3_endpoint_url: str) -> dict[str, str]:
    """The blob store of `store` as Settings fields, for another server to share it."""
    if store.kind == "fs":
        assert store.blob_root is not None
        return {"blob_url": store.blob_root.as_uri()}
    return {"blob_url": f"s3://{store.bucket}/blobs", "s3_endpoint_url": s3_endpoint_url}


@pytest.fixture(scope="session")
async def fs_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ArtifactServer]:
    """modelreg with the filesystem blob store under a temporary home."""
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        address="127.0.0.1:0", postgres_url=database_url, grace_seconds=1, home=home
    )
    async with AsyncExitStack() as stack:
        yield await serve_artifacts("fs", settings, stack, blob_root=home / "blobs")


@pytest.fixture(scope="session")
async def s3_server(
    database_url: str,
    s3_endpoint_url: str,
    s3_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ArtifactServer]:
    """modelreg with the S3 blob store on the test endpoint."""
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        grace_seconds=1,
        home=tmp_path_factory.mktemp("home"),
        blob_url=f"s3://{s3_bucket}/blobs",
        s3_endpoint_url=s3_endpoint_url,
    )
    async with AsyncExitStack() as stack:
        yield await serve_artifacts("s3", settings, stack, bucket=s3_bucket)


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, clean: None) -> ArtifactServer:
    """Each artifact test runs against both blob stores (`clean` empties every table)."""
    server: ArtifactServer = request.getfixturevalue(f"{request.param}_server")
    return server


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto's server exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.1)  # polls until moto listens (it says nowhere else); orders nothing
        else:
            return
    raise RuntimeError(f"moto's server did not listen on port {port} within {timeout} s")
