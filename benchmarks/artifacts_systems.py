"""What artifacts.py measures: the systems (one row each), the file they all get, a timed
download with the CPU it cost, and the byte streams every system reads and writes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CHUNK = 256 * 1024
MiB = 1024 * 1024

Receive = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Sample:
    """One timed download: MB/s, and CPU seconds per GiB that the server, this client and the
    S3 endpoint spent on it (None where there is no process of ours to read)."""

    mb_s: float
    server_cpu: float | None
    client_cpu: float
    endpoint_cpu: float | None


@dataclass
class System:
    """One row: where its server listens, how to download the file from it once, and what
    was measured. `pid` is the server (None: an S3 endpoint not started here); `endpoint_pid`
    is the S3 endpoint behind modelreg s3, when started here."""

    name: str
    kind: Literal["raw", "modelreg", "direct"]
    target: str
    pid: int | None
    endpoint_pid: int | None = None
    receive: Receive | None = None
    version: str = ""
    upload_mb_s: float | None = None
    pull_mb_s: float | None = None
    rss: dict[str, float] = field(default_factory=dict)  # VmHWM MiB at idle, upload, end
    rss_reset: bool = False  # VmHWM was reset after the upload: "end" is the downloads' peak
    samples: list[Sample] = field(default_factory=list)

    async def download(self) -> None:
        assert self.receive is not None, "a download before the upload"
        await self.receive()


@dataclass(frozen=True)
class Blob:
    """The file every system gets: where it is on disk, its size and its sha256."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Endpoint:
    """An S3 endpoint with a fresh bucket; `pid` when this program started it (moto)."""

    url: str
    pid: int | None
    bucket: str


async def timed(system: System, size: int) -> Sample:
    """Download the file from `system` once; its MB/s and CPU seconds per GiB."""
    before = cpu_seconds(system.pid), time.process_time(), cpu_seconds(system.endpoint_pid)
    started = time.perf_counter()
    await system.download()
    speed = mb_s(size, started)
    after = cpu_seconds(system.pid), time.process_time(), cpu_seconds(system.endpoint_pid)
    server, client, endpoint = (_per_gib(b, a, size) for b, a in zip(before, after, strict=True))
    assert client is not None
    return Sample(speed, server, client, endpoint)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, all threads."""
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_gib(before: float | None, after: float | None, size: int) -> float | None:
    return None if before is None or after is None else (after - before) / (size / 2**30)


def mb_s(size: int, started: float) -> float:
    """MB/s of `size` bytes moved since `started` (a perf_counter reading)."""
    return size / (time.perf_counter() - started) / 1e6


def make_file(path: Path, size: int) -> str:
    """Write `size` random bytes to `path`; return their sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as out:
        for start in range(0, size, MiB):
            data = block[: min(MiB, size - start)]
            digest.update(data)
            out.write(data)
    return digest.hexdigest()


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file in CHUNK-sized pieces, read off the event loop."""
    with path.open("rb") as source:
        while data := await asyncio.to_thread(source.read, CHUNK):
            yield data


async def hashed(chunks: AsyncIterator[bytes | memoryview]) -> str:
    """sha256 of the chunks, hashed on the event loop as they come: at about 1.5 GB/s per
    core (SHA-NI) that is cheaper on two cores than a thread hop and the GIL hand-offs
    of hashing elsewhere."""
    digest = hashlib.sha256()
    async for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
