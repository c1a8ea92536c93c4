"""Artifact throughput: upload and download MB/s of one file through a real `modelreg serve`,
on the filesystem store and on S3 (moto's server, or --s3-endpoint-url), next to a raw
grpc.aio stream of the same bytes in the same run (the ceiling), with the server's peak RSS.

    PYTHONPATH=src .venv/bin/python benchmarks/artifacts.py --size-mib 1024

The client streams the file from disk in 256 KiB messages and verifies the sha256 of
every download, read through the SDK's `AsyncClient.download_file`; each download runs
--repeat times and the best counts, for the ceiling too. CPU seconds per GiB of the
best download are shown for server and client: steadier than MB/s on a busy machine.
`sdk pull` is the SDK's `AsyncClient.pull` of the same file: download, sha256, write to
disk, fsync, rename. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from modelreg.client import AsyncClient
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import artifact_service_pb2_grpc as art_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc

CHUNK = 256 * 1024
MiB = 1024 * 1024
RAW_SERVICE = "bench.Raw"


# --- the ceiling: a raw server that sends or swallows bytes ------------------------------------


async def raw_server(port: int, size: int) -> None:
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


class Download:
    """The best of several timed downloads: MB/s, and the CPU seconds per GiB that the
    server and this client spent on it (steadier than wall time on a shared machine)."""

    def __init__(self, size: int, server_pid: int) -> None:
        self.size, self.pid = size, server_pid
        self.mb_s = self.server_cpu = self.client_cpu = 0.0

    async def time(self, receive: Callable[[], Awaitable[object]]) -> None:
        wall, server, client = time.perf_counter(), cpu_seconds(self.pid), time.process_time()
        await receive()
        mb_s = self.size / (time.perf_counter() - wall) / 1e6
        if mb_s > self.mb_s:
            gib = self.size / 2**30
            self.mb_s = mb_s
            self.server_cpu = (cpu_seconds(self.pid) - server) / gib
            self.client_cpu = (time.process_time() - client) / gib


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def raw_round(
    target: str, path: Path, download: Download, repeat: int
) -> tuple[float, Download]:
    async with grpc.aio.insecure_channel(target) as channel:
        send = channel.stream_unary(f"/{RAW_SERVICE}/Upload")
        started = time.perf_counter()
        await send(_raw_chunks(path))
        up = download.size / (time.perf_counter() - started) / 1e6
        receive = channel.unary_stream(f"/{RAW_SERVICE}/Download")

        async def drain() -> None:
            async for _ in receive(b""):
                pass

        for _ in range(repeat):
            await download.time(drain)
    return up, download


async def _raw_chunks(path: Path) -> AsyncIterator[bytes]:
    async for data in _file_chunks(path, 0):
        yield data


# --- modelreg -----------------------------------------------------------------------------


async def modelreg_round(
    target: str, path: Path, sha256: str, download: Download, repeat: int
) -> tuple[float, Download, str]:
    size = download.size
    async with grpc.aio.insecure_channel(target) as channel:
        registry, artifacts = (
            rs_grpc.RegistryServiceStub(channel),
            art_grpc.ArtifactServiceStub(channel),
        )
        model = f"b{uuid.uuid4().hex[:10]}"
        await registry.CreateModel(
            rs.CreateModelRequest(parent="namespaces/default", model_id=model)
        )
        version = (
            await registry.CreateModelVersion(
                rs.CreateModelVersionRequest(parent=f"namespaces/default/models/{model}")
            )
        ).version.name
        file = art.ManifestEntry(path="weights.bin", size=size, sha256=sha256)
        started = time.perf_counter()
        reply = await artifacts.UploadFile(_upload_stream(version, file, path))
        up = size / (time.perf_counter() - started) / 1e6
        assert reply.complete, reply
        await artifacts.FinalizeModelVersion(
            art.FinalizeModelVersionRequest(name=version, files=[file])
        )
    async with AsyncClient(target) as client:  # the SDK's stream: data as views, no copies

        async def verified() -> None:
            digest = await _hashed(client.download_file(version, "weights.bin"))
            assert digest == sha256, "download corrupted"

        for _ in range(repeat):
            await download.time(verified)
    return up, download, version


async def sdk_pull(target: str, version: str, dest: Path, size: int) -> float:
    """MB/s of `AsyncClient.pull`: download, sha256, write, fsync and rename."""
    async with AsyncClient(target) as client:
        started = time.perf_counter()
        await client.pull(version, dest)
        return size / (time.perf_counter() - started) / 1e6


async def _hashed(chunks: AsyncIterator[memoryview]) -> str:
    """sha256 of the chunks, hashed on the event loop as they come: at about 1.5 GB/s per
    core (SHA-NI) that is cheaper on two cores than a thread hop and the GIL hand-offs
    of hashing elsewhere."""
    digest = hashlib.sha256()
    async for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


async def _upload_stream(
    version: str, file: art.ManifestEntry, path: Path
) -> AsyncIterator[art.UploadFileRequest]:
    header = art.UploadHeader(
        version=version, path=file.path, size=file.size, sha256=file.sha256, upload_id="bench"
    )
    yield art.UploadFileRequest(header=header)
    async for data in _file_chunks(path, 0):
        yield art.UploadFileRequest(data=data)


async def _file_chunks(path: Path, offset: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(offset)
        while data := await asyncio.to_thread(source.read, CHUNK):
            yield data


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited at start (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listened on port {port}")


@contextmanager
def process(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_port(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def modelreg(home: Path, blob_url: str, s3_endpoint: str) -> Iterator[tuple[str, int]]:
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
    args = [sys.executable, "-m", "modelreg", "serve", "--address", f"127.0.0.1:{port}"]
    with process(args, port, env) as pid:
        yield f"127.0.0.1:{port}", pid


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    with path.open("wb") as out:
        for start in range(0, size, MiB):
            data = block[: min(MiB, size - start)]
            digest.update(data)
            out.write(data)
    return digest.hexdigest()


async def make_bucket(endpoint: str, bucket: str) -> None:
    import aioboto3

    async with aioboto3.Session().client("s3", endpoint_url=endpoint) as client:
        await client.create_bucket(Bucket=bucket)


# --- main ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = args.size_mib * MiB
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        root = Path(tmp)
        path = root / "blob.bin"
        sha256 = make_file(path, size)
        port = free_port()
        raw_args = [
            sys.executable,
            __file__,
            "--raw-server",
            str(port),
            "--size-mib",
            str(args.size_mib),
        ]
        with process(raw_args, port) as pid:
            up, down = asyncio.run(
                raw_round(f"127.0.0.1:{port}", path, Download(size, pid), args.repeat)
            )
            rows.append(_row("raw grpc (ceiling)", up=up, down=down, rss=peak_rss_mib(pid)))
        ceiling = rows[0]
        for store in args.stores.split(","):
            blobs = _blob_url(store, root, args)
            with (
                blobs as (blob_url, endpoint),
                modelreg(root / f"home-{store}", blob_url, endpoint) as (target, pid),
            ):
                before = peak_rss_mib(pid)
                up, down, version = asyncio.run(
                    modelreg_round(target, path, sha256, Download(size, pid), args.repeat)
                )
                pulled = asyncio.run(sdk_pull(target, version, root / f"pull-{store}", size))
                shutil.rmtree(root / f"pull-{store}")
                row = _row(
                    f"modelreg {store}",
                    up=up,
                    down=down,
                    rss=peak_rss_mib(pid),
                    rss_idle=before,
                    ceiling=ceiling,
                )
                row["sdk_pull_mb_s"] = round(pulled, 1)
                rows.append(row)
    return rows


@contextmanager
def _blob_url(store: str, root: Path, args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if store == "fs":
        yield (root / "blobs").as_uri(), ""
        return
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"modelreg-bench-{uuid.uuid4().hex[:8]}"
    if args.s3_endpoint_url:
        asyncio.run(make_bucket(args.s3_endpoint_url, bucket))
        yield f"s3://{bucket}/blobs", args.s3_endpoint_url
        return
    port = free_port()
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(moto, port):
        endpoint = f"http://127.0.0.1:{port}"
        asyncio.run(make_bucket(endpoint, bucket))
        yield f"s3://{bucket}/blobs", endpoint


def _row(
    system: str,
    *,
    up: float,
    down: Download,
    rss: float,
    rss_idle: float | None = None,
    ceiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "system": system,
        "upload_mb_s": round(up, 1),
        "download_mb_s": round(down.mb_s, 1),
        "download_server_cpu_s_per_gib": round(down.server_cpu, 2),
        "download_client_cpu_s_per_gib": round(down.client_cpu, 2),
        "server_peak_rss_mib": round(rss, 1),
    }
    if rss_idle is not None:
        row["server_rss_before_mib"] = round(rss_idle, 1)
    if ceiling is not None:
        row["upload_vs_ceiling"] = round(up / ceiling["upload_mb_s"], 2)
        row["download_vs_ceiling"] = round(down.mb_s / ceiling["download_mb_s"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1 GiB)")
    parser.add_argument("--stores", default="fs,s3", help="comma-separated: fs, s3")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="downloads per system, the best one counts (a shared machine is noisy)",
    )
    parser.add_argument("--s3-endpoint-url", default="", help="S3 endpoint; unset = start moto")
    parser.add_argument("--raw-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server:
        asyncio.run(raw_server(args.raw_server, args.size_mib * MiB))
        return
    rows = run(args)
    columns = {
        "upload MB/s": "upload_mb_s",
        "download MB/s": "download_mb_s",
        "down/ceiling": "download_vs_ceiling",
        "srv CPU s/GiB": "download_server_cpu_s_per_gib",
        "cli CPU s/GiB": "download_client_cpu_s_per_gib",
        "sdk pull MB/s": "sdk_pull_mb_s",
        "peak RSS MiB": "server_peak_rss_mib",
    }
    print(f"{'system':<20}" + "".join(f"{title:>14}" for title in columns))
    for r in rows:
        print(f"{r['system']:<20}" + "".join(f"{r.get(k, ''):>14}" for k in columns.values()))
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    result = {
        "benchmark": "artifacts",
        "size_mib": args.size_mib,
        "chunk": CHUNK,
        "load_average": [round(x, 2) for x in load],
        "rows": rows,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
