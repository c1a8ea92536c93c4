"""Artifact throughput: upload and download MB/s of one file through a real `modelreg serve`,
on the filesystem store and on S3 (moto's server, or --s3-endpoint-url), next to two
ceilings measured in the same rounds: a raw grpc.aio stream of the same bytes, and the same
S3 object read straight from the endpoint with aioboto3. With the servers' peak RSS per size.

    PYTHONPATH=src .venv/bin/python benchmarks/artifacts.py --size-mib 128,1024 --repeat 5

For each size, fresh processes start and are all up together: the raw server, moto, one
`modelreg serve` per store. The file is uploaded once to each, streamed from disk in 256 KiB
messages: one upload MB/s each, set against the raw upload (a single sample, so that ratio
is only as steady as the machine). Then --warmup rounds, not counted, and --repeat rounds,
each downloading the file once from every system in turn: raw grpc, modelreg fs, modelreg
s3, s3 endpoint direct. The client checks the sha256 of every download but the raw one,
hashing on the event loop; modelreg's are read through the SDK's `AsyncClient.download_file`,
the direct one is aioboto3's get_object with no gRPC and no modelreg: the ceiling of the S3
endpoint itself on this machine (moto is a Python server on the same cores).

Per system: the best and the median download MB/s. `med/ceil` is the median over rounds of
(the system's MB/s / the raw MB/s of the same round): on a noisy machine only numbers taken
seconds apart compare, not runs minutes apart. `best/best` is the best over the best raw.
The s3 row is also set against the direct read (`s3/direct`; best over best in the JSON).
CPU seconds per GiB of the server (moto for the direct row), this client and the S3 endpoint
behind modelreg s3 (when started here) are of each system's median round (the lower middle
for an even --repeat). `sdk pull` is one `AsyncClient.pull` after the rounds: download,
sha256, write, fsync, rename.

Peak RSS is a server's VmHWM over the run; `peak-idle` subtracts its VmHWM once up, before
the first upload. VmHWM is reset after the uploads (/proc/<pid>/clear_refs), so the JSON has
the upload's and the downloads' peaks apart. With several sizes, a line per modelreg store
says how peak-idle grew from the smallest size to the largest: the memory an upload or a
download holds should not grow with the file. Prints a table per size, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

from modelreg.blobs.s3 import S3BlobStore
from modelreg.client import AsyncClient
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import artifact_service_pb2_grpc as art_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc

CHUNK = 256 * 1024
MiB = 1024 * 1024
RAW_SERVICE = "bench.Raw"
S3_PREFIX = "blobs"  # modelreg's prefix in the bucket, which the direct read needs too
STORES = ("fs", "s3")

Receive = Callable[[], Awaitable[None]]


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


# --- the systems and their samples ----------------------------------------------------------


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
    before = cpu_seconds(system.pid), time.process_time(), cpu_seconds(system.endpoint_pid)
    started = time.perf_counter()
    await system.download()
    mb_s = _mb_s(size, started)
    after = cpu_seconds(system.pid), time.process_time(), cpu_seconds(system.endpoint_pid)
    server, client, endpoint = (_per_gib(b, a, size) for b, a in zip(before, after, strict=True))
    assert client is not None
    return Sample(mb_s, server, client, endpoint)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process, all threads."""
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_gib(before: float | None, after: float | None, size: int) -> float | None:
    return None if before is None or after is None else (after - before) / (size / 2**30)


def _mb_s(size: int, started: float) -> float:
    return size / (time.perf_counter() - started) / 1e6


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
            _note_rss(system, "upload", reset=True)
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


async def raw_upload(stack: AsyncExitStack, system: System, blob: Blob) -> Receive:
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(system.target))
    send = channel.stream_unary(f"/{RAW_SERVICE}/Upload", None, None)
    started = time.perf_counter()
    await send(_file_chunks(blob.path))
    system.upload_mb_s = _mb_s(blob.size, started)
    receive = channel.unary_stream(f"/{RAW_SERVICE}/Download", None, None)

    async def drain() -> None:
        async for _ in receive(b""):
            pass

    return drain


async def modelreg_upload(stack: AsyncExitStack, system: System, blob: Blob) -> Receive:
    file = art.ManifestEntry(path="weights.bin", size=blob.size, sha256=blob.sha256)
    async with grpc.aio.insecure_channel(system.target) as channel:
        version = await _create_version(rs_grpc.RegistryServiceStub(channel))
        artifacts = art_grpc.ArtifactServiceStub(channel)
        started = time.perf_counter()
        reply = await artifacts.UploadFile(_upload_stream(version, file, blob.path))
        system.upload_mb_s = _mb_s(file.size, started)
        assert reply.complete, reply
        await artifacts.FinalizeModelVersion(
            art.FinalizeModelVersionRequest(name=version, files=[file])
        )
    system.version = version
    # The SDK's stream: data as views, no copies.
    client = await stack.enter_async_context(AsyncClient(system.target))

    async def verified() -> None:
        digest = await _hashed(client.download_file(version, "weights.bin"))
        assert digest == blob.sha256, "download corrupted"

    return verified


async def _create_version(registry: rs_grpc.RegistryServiceAsyncStub) -> str:
    model = f"b{uuid.uuid4().hex[:10]}"
    await registry.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id=model))
    request = rs.CreateModelVersionRequest(parent=f"namespaces/default/models/{model}")
    return (await registry.CreateModelVersion(request)).version.name


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
            digest = await _hashed(body.iter_chunks(CHUNK))
        finally:
            body.close()
        assert digest == sha256, "direct read corrupted"

    return verified


async def sdk_pull(system: System, dest: Path, size: int) -> float:
    """MB/s of `AsyncClient.pull`: download, sha256, write, fsync and rename."""
    async with AsyncClient(system.target) as client:
        started = time.perf_counter()
        await client.pull(system.version, dest)
        mb_s = _mb_s(size, started)
    shutil.rmtree(dest)
    return mb_s


async def _hashed(chunks: AsyncIterator[bytes | memoryview]) -> str:
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
    async for data in _file_chunks(path):
        yield art.UploadFileRequest(data=data)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while data := await asyncio.to_thread(source.read, CHUNK):
            yield data


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far (or since its reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _note_rss(system: System, moment: str, *, reset: bool = False) -> None:
    """Note a modelreg or raw server's VmHWM; `reset` then sets it back to the current RSS
    (Linux 4.0+), so the next note is the peak of what came in between."""
    if system.kind == "direct" or system.pid is None:
        return
    system.rss[moment] = peak_rss_mib(system.pid)
    if reset:
        try:
            Path(f"/proc/{system.pid}/clear_refs").write_text("5")
        except OSError:  # not allowed here: the next note is the peak since the start
            return
        system.rss_reset = True


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"a server exited at start (code {proc.returncode}):\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listened on port {port}")


@contextmanager
def process(
    args: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """A server process listening on `port`; its stderr goes to `log` (a pipe nobody reads
    would stall a server that logs every request, as moto does)."""
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=errors
        )
    try:
        wait_port(port, proc, log)
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
    with process(args, port, home.with_suffix(".log"), env) as pid:
        yield f"127.0.0.1:{port}", pid


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


def start(
    stack: ExitStack, root: Path, size_mib: int, args: argparse.Namespace
) -> tuple[list[System], Endpoint | None]:
    """Every server of one size, all up together: raw, moto, one modelreg per store."""
    port = free_port()
    raw_args = [sys.executable, __file__, "--raw-server", str(port), "--size-mib", str(size_mib)]
    raw_pid = stack.enter_context(process(raw_args, port, root / "raw.log"))
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


# --- one size, and its rows ---------------------------------------------------------------


def measure(size_mib: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fresh servers for one size (VmHWM is per process): upload, rounds, pulls; the rows."""
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        path = root / "blob.bin"
        blob = Blob(path, size_mib * MiB, make_file(path, size_mib * MiB))
        systems, endpoint = start(stack, root, size_mib, args)
        for system in systems:
            _note_rss(system, "idle")
        asyncio.run(exercise(systems, endpoint, blob, (args.warmup, args.repeat)))
        for system in systems:
            _note_rss(system, "end")
    raw, direct = systems[0], next((s for s in systems if s.kind == "direct"), None)
    return [_row(system, size_mib, raw, direct) for system in systems]


def _row(system: System, size_mib: int, raw: System, direct: System | None) -> dict[str, Any]:
    speeds = [s.mb_s for s in system.samples]
    middle = sorted(system.samples, key=lambda s: s.mb_s)[(len(speeds) - 1) // 2]
    row: dict[str, Any] = {
        "system": system.name,
        "size_mib": size_mib,
        "upload_mb_s": _rounded(system.upload_mb_s, 1),
        "download_best_mb_s": round(max(speeds), 1),
        "download_median_mb_s": round(statistics.median(speeds), 1),
        "download_mb_s_rounds": [round(x, 1) for x in speeds],
        "download_server_cpu_s_per_gib": _rounded(middle.server_cpu, 2),
        "download_client_cpu_s_per_gib": round(middle.client_cpu, 2),
        "download_s3_endpoint_cpu_s_per_gib": _rounded(middle.endpoint_cpu, 2),
    }
    if system is not raw:
        row |= _versus(system, raw, "ceiling")
    if system.upload_mb_s is not None and system is not raw:
        row["upload_vs_ceiling"] = round(system.upload_mb_s / (raw.upload_mb_s or 1), 2)
    if system.name == "modelreg s3" and direct is not None:
        row |= _versus(system, direct, "s3_direct")
    if system.pull_mb_s is not None:
        row["sdk_pull_mb_s"] = round(system.pull_mb_s, 1)
    return row | _memory(system)


def _versus(system: System, base: System, label: str) -> dict[str, float]:
    """The median over rounds of the ratio within each round, and best over best."""
    pairs = zip(system.samples, base.samples, strict=True)
    best = max(s.mb_s for s in system.samples) / max(s.mb_s for s in base.samples)
    return {
        f"download_vs_{label}": round(statistics.median(s.mb_s / b.mb_s for s, b in pairs), 2),
        f"download_best_vs_{label}_best": round(best, 2),
    }


def _memory(system: System) -> dict[str, float | None]:
    """Peak RSS over the whole run, and over idle: in all, in the upload, in the downloads."""
    rss = system.rss
    if "end" not in rss:
        return {}
    peak, idle = max(rss["upload"], rss["end"]), rss["idle"]
    download = round(rss["end"] - idle, 1) if system.rss_reset else None
    return {
        "server_idle_rss_mib": round(idle, 1),
        "server_peak_rss_mib": round(peak, 1),
        "server_peak_over_idle_mib": round(peak - idle, 1),
        "server_upload_peak_over_idle_mib": round(rss["upload"] - idle, 1),
        "server_download_peak_over_idle_mib": download,
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def memory_growth(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per modelreg store: how peak over idle RSS grew from the smallest size to the largest,
    in all and in each phase."""
    growth: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["system"] for r in rows if r["system"].startswith("modelreg")):
        mine = sorted((r for r in rows if r["system"] == name), key=lambda r: r["size_mib"])
        small, large = mine[0], mine[-1]
        growth[name] = {
            "from_size_mib": small["size_mib"],
            "to_size_mib": large["size_mib"],
            "peak_over_idle_mib": [
                small["server_peak_over_idle_mib"],
                large["server_peak_over_idle_mib"],
            ],
        } | {
            f"{phase}growth_mib": _grew(small, large, f"server_{phase}peak_over_idle_mib")
            for phase in ("", "upload_", "download_")
        }
    return growth


def _grew(small: dict[str, Any], large: dict[str, Any], key: str) -> float | None:
    if small[key] is None or large[key] is None:
        return None
    return round(float(large[key] - small[key]), 1)


# --- output -------------------------------------------------------------------------------

COLUMNS = {
    "up MB/s": "upload_mb_s",
    "down best": "download_best_mb_s",
    "down med": "download_median_mb_s",
    "med/ceil": "download_vs_ceiling",
    "best/best": "download_best_vs_ceiling_best",
    "s3/direct": "download_vs_s3_direct",
    "srv s/GiB": "download_server_cpu_s_per_gib",
    "cli s/GiB": "download_client_cpu_s_per_gib",
    "s3 s/GiB": "download_s3_endpoint_cpu_s_per_gib",
    "pull MB/s": "sdk_pull_mb_s",
    "peak MiB": "server_peak_rss_mib",
    "peak-idle": "server_peak_over_idle_mib",
}
LEGEND = (
    "MB/s: best and median of the rounds; med/ceil, s3/direct: median over rounds of the ratio\n"
    "within a round; best/best: best over best raw; s/GiB: CPU of the server, this client and\n"
    "the S3 endpoint in the median round; peak, peak-idle: server VmHWM, less its idle VmHWM"
)


def print_table(size_mib: int, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    print(f"\n{size_mib} MiB: {args.repeat} rounds after {args.warmup} warm-up")
    print(f"{'system':<20}" + "".join(f"{title:>11}" for title in COLUMNS))
    for r in rows:
        cells = (r.get(key) for key in COLUMNS.values())
        print(f"{r['system']:<20}" + "".join(f"{'' if c is None else c:>11}" for c in cells))


def print_growth(growth: dict[str, dict[str, Any]]) -> None:
    for name, g in growth.items():
        (small, large), ratio = g["peak_over_idle_mib"], g["to_size_mib"] / g["from_size_mib"]
        print(
            f"{name}: peak over idle RSS {small} MiB at {g['from_size_mib']} MiB, {large} MiB "
            f"at {g['to_size_mib']} MiB: {g['growth_mib']:+} MiB for a {ratio:g}x larger file "
            f"(upload peak {_signed(g['upload_growth_mib'])}, "
            f"download peak {_signed(g['download_growth_mib'])})"
        )


def _signed(mib: float | None) -> str:
    return "unknown" if mib is None else f"{mib:+} MiB"


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# --- main ---------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes are positive whole MiB, like 128,1024: {text}")
    return sizes


def _stores(text: str) -> list[str]:
    stores = text.split(",")
    if not stores or any(store not in STORES for store in stores):
        raise argparse.ArgumentTypeError(f"stores are fs and s3: {text}")
    return stores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size-mib", type=_sizes, default=[1024], help="file sizes, comma-separated (1024)"
    )
    parser.add_argument("--stores", type=_stores, default=list(STORES), help="fs,s3 (both)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="rounds of one download from each system (5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="rounds first, not counted: connections, caches (1)"
    )
    parser.add_argument("--s3-endpoint-url", default="", help="S3 endpoint; unset = start moto")
    parser.add_argument("--raw-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0:
        parser.error("--repeat must be at least 1, --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    if args.raw_server:
        asyncio.run(raw_server(args.raw_server, args.size_mib[0] * MiB))
        return
    load_start, rows = os.getloadavg(), []
    for size_mib in args.size_mib:
        measured = measure(size_mib, args)
        print_table(size_mib, args, measured)
        rows += measured
    print(LEGEND)
    growth = memory_growth(rows) if len(set(args.size_mib)) > 1 else {}
    print_growth(growth)
    load_end = os.getloadavg()
    print(f"load average: {_load(load_start)} at start, {_load(load_end)} at end, "
          f"on {os.cpu_count()} cores")  # fmt: skip
    result = {
        "benchmark": "artifacts",
        "sizes_mib": args.size_mib,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "chunk": CHUNK,
        "cores": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "commit": git_commit(),
        "command": shlex.join(sys.argv),
        "rows": rows,
        "memory_growth": growth,
    }
    print(json.dumps(result))


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
