"""An upload started on one server process and finished on another: another worker or
replica after a cut, or a new process after the first was SIGKILLed mid-stream; and a
second stream of an upload that is still streaming elsewhere, refused until it ends."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest

from modelreg.config import Settings
from modelreg.domain.errors import Unavailable
from modelreg.domain.names import parse_version_name
from modelreg.domain.ports import VersionFile
from modelreg.domain.uploads import Chunk, UploadHeader, Uploads
from modelreg.v1 import artifact_service_pb2 as art
from tests.helpers import reason_of, rich_status
from tests.integration.conftest import (
    S3_PART_SIZE,
    ArtifactServer,
    HookedBlobs,
    blob_settings,
    serve_artifacts,
)
from tests.integration.serverproc import ServerProcess
from tests.integration.test_artifacts import (
    CHUNK,
    download,
    entry,
    failure,
    finalize,
    new_version,
    requests,
    resume,
    settled_status,
)

MiB = 1024 * 1024


@pytest.fixture
async def other(
    store: ArtifactServer, database_url: str, s3_endpoint_url: str, tmp_path: Path
) -> AsyncIterator[ArtifactServer]:
    """A second server on the same database and blob store: another worker or replica,
    with no state in memory shared with `store`. Its upload leases last 1.5 s, so it
    takes a stream that sends nothing for 1 s for cut."""
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        grace_seconds=1,
        home=tmp_path / "other",
        upload_lease_seconds=1.5,
        **blob_settings(store, s3_endpoint_url),  # type: ignore[arg-type]
    )
    async with AsyncExitStack() as stack:
        yield await serve_artifacts(store.kind, settings, stack, blob_root=store.blob_root)


async def held_open(
    version: str,
    file: VersionFile,
    data: bytes,
    upload_id: str,
    *,
    sent: int,
    release: asyncio.Event,
) -> AsyncIterator[art.UploadFileRequest]:
    """An upload that sends `sent` bytes, then waits for `release` before sending the rest."""
    async for message in requests(version, file, data, upload_id=upload_id, stop_at=sent):
        yield message
    await release.wait()
    for start in range(sent, len(data), CHUNK):
        yield art.UploadFileRequest(data=data[start : start + CHUNK])


async def resumes_whole(
    server: ArtifactServer,
    version: str,
    file: VersionFile,
    data: bytes,
    upload_id: str,
    *,
    read_from: ArtifactServer | None = None,
) -> None:
    """Resume the upload on `server` to the end, finalize, and read the same bytes back."""
    reply = await resume(server, version, file, data, upload_id)
    assert reply.complete
    assert reply.file.sha256 == file.sha256
    await finalize(server, version, [file])
    assert (await download(read_from or server, version, "w.bin"))[1] == data


async def wait_committed(
    server: ArtifactServer, version: str, upload_id: str, at_least: int
) -> art.GetUploadStatusResponse:
    request = art.GetUploadStatusRequest(version=version, upload_id=upload_id)
    for _ in range(600):  # generous: a loaded CI machine
        try:
            status = await server.artifacts.GetUploadStatus(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # the stream has not begun yet
                raise
        else:
            if status.committed_size >= at_least:
                return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upload never reached {at_least} committed bytes")


@pytest.mark.slow
async def test_an_upload_cut_on_one_server_resumes_on_another(
    store: ArtifactServer, other: ArtifactServer
) -> None:
    size = 3 * S3_PART_SIZE + 4321
    data = random.Random(11).randbytes(size)
    file, upload_id = entry("w.bin", data), "handover-1"
    version = await new_version(store)
    release = asyncio.Event()  # never set: the stream is cut while it waits
    call = store.artifacts.UploadFile(
        held_open(version, file, data, upload_id, sent=2 * S3_PART_SIZE + 1000, release=release)
    )
    await wait_committed(other, version, upload_id, 2 * S3_PART_SIZE)
    call.cancel()
    status = await settled_status(other, version, upload_id)
    assert 2 * S3_PART_SIZE <= status.committed_size <= 2 * S3_PART_SIZE + 1000

    await resumes_whole(other, version, file, data, upload_id, read_from=store)


async def test_a_second_stream_of_a_live_upload_is_refused_until_the_first_ends(
    store: ArtifactServer, other: ArtifactServer
) -> None:
    data = random.Random(12).randbytes(3 * CHUNK + 5)
    file, upload_id = entry("w.bin", data), "live-1"
    version = await new_version(store)
    release = asyncio.Event()
    first = store.artifacts.UploadFile(
        held_open(version, file, data, upload_id, sent=CHUNK, release=release)
    )
    await wait_committed(store, version, upload_id, 0)  # the session exists
    await asyncio.sleep(0.2)  # and the first stream holds its lease

    for server in (other, store):  # another process, and the same one
        stream = requests(version, file, data, upload_id=upload_id, offset=0)
        err = await failure(server.artifacts.UploadFile(stream))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(rich_status(err)) == "UPLOAD_IN_PROGRESS"

    release.set()
    reply = await first
    assert reply.complete
    assert reply.file.sha256 == file.sha256


@pytest.mark.slow
async def test_a_server_killed_mid_upload_hands_it_to_another(
    store: ArtifactServer, database_url: str, s3_endpoint_url: str, tmp_path: Path
) -> None:
    size = 3 * S3_PART_SIZE + 99
    data = random.Random(13).randbytes(size)
    file, upload_id = entry("w.bin", data), uuid.uuid4().hex
    version = await new_version(store)
    env = {f"MODELREG_{k.upper()}": v for k, v in blob_settings(store, s3_endpoint_url).items()}
    doomed = ServerProcess(
        tmp_path / "doomed.log",
        MODELREG_POSTGRES_URL=database_url,
        MODELREG_UPLOAD_LEASE_SECONDS="2",
        MODELREG_HOME=str(tmp_path / "doomed"),
        **env,
    )
    try:
        await asyncio.to_thread(doomed.wait_serving)
        async with grpc.aio.insecure_channel(doomed.target) as channel:
            stub = store.artifacts.__class__(channel)
            release = asyncio.Event()
            call = stub.UploadFile(
                held_open(
                    version, file, data, upload_id, sent=2 * S3_PART_SIZE + 1000, release=release
                )
            )
            await wait_committed(store, version, upload_id, 2 * S3_PART_SIZE)
            os.kill(doomed.proc.pid, signal.SIGKILL)
            err = await failure(call)
            assert err.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        doomed.proc.kill()
        doomed.proc.wait()

    # The dead process's lease runs out (2 s), then the upload goes on where it was.
    await resumes_whole(store, version, file, data, upload_id)


async def test_a_stream_that_goes_silent_lets_its_upload_go(
    store: ArtifactServer, other: ArtifactServer
) -> None:
    """A client that stops sending without closing (a half-open connection looks the
    same) does not hold the upload: the server pauses it, and it resumes elsewhere."""
    data = random.Random(14).randbytes(5 * CHUNK + 9)
    file, upload_id = entry("w.bin", data), "silent-1"
    version = await new_version(store)
    silent = other.artifacts.UploadFile(
        held_open(version, file, data, upload_id, sent=2 * CHUNK, release=asyncio.Event())
    )

    err = await failure(silent)

    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(rich_status(err)) == "UPLOAD_IDLE"
    await resumes_whole(store, version, file, data, upload_id)


async def test_a_stream_that_lost_its_lease_writes_nothing_more(
    store: ArtifactServer, other: ArtifactServer, db: asyncpg.Connection
) -> None:
    """`other` buffers part of an upload, its lease lapses (as if PostgreSQL had been
    unreachable) and `store` takes the upload over and publishes it; what `other` still
    held must never land in the published blob."""
    data = random.Random(15).randbytes(6 * CHUNK)  # under one write batch / one S3 part
    file, upload_id = entry("w.bin", data), "lapsed-1"
    version = await new_version(store)
    release = asyncio.Event()
    first = other.artifacts.UploadFile(
        held_open(version, file, data, upload_id, sent=4 * CHUNK, release=release)
    )
    await wait_committed(store, version, upload_id, 0)
    await asyncio.sleep(0.2)  # the first stream has buffered its four chunks
    await db.execute("UPDATE upload_sessions SET lease_until = now() - interval '1 second'")

    taken_over = await resume(store, version, file, data, upload_id)
    release.set()
    err = await failure(first)

    assert taken_over.complete
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    # LEASE_LOST once its renewal failed; IDLE if the takeover outlasted its idle limit
    # (a loaded machine): either way it ended without writing.
    assert reason_of(rich_status(err)) in ("UPLOAD_LEASE_LOST", "UPLOAD_IDLE")
    await finalize(store, version, [file])
    assert (await download(store, version, "w.bin"))[1] == data


async def test_finalize_and_fail_wait_for_a_live_stream(store: ArtifactServer) -> None:
    data = random.Random(16).randbytes(3 * CHUNK)
    file, upload_id = entry("w.bin", data), "live-2"
    version = await new_version(store)
    release = asyncio.Event()
    streaming = store.artifacts.UploadFile(
        held_open(version, file, data, upload_id, sent=CHUNK, release=release)
    )
    await wait_committed(store, version, upload_id, 0)
    await asyncio.sleep(0.2)

    refused = await failure(finalize(store, version, [file]))
    not_failed = await failure(
        store.artifacts.FailModelVersion(art.FailModelVersionRequest(name=version))
    )

    for err in (refused, not_failed):
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(rich_status(err)) == "UPLOAD_IN_PROGRESS"
    release.set()
    assert (await streaming).complete
    await finalize(store, version, [file])


async def chunks_of(data: bytes, sent: int, release: asyncio.Event) -> AsyncIterator[Chunk]:
    for start in range(0, sent, CHUNK):
        yield Chunk(data[start : min(start + CHUNK, sent)])
    await release.wait()


async def test_a_stream_cancelled_twice_releases_its_upload_only_once_it_stopped_writing(
    store: ArtifactServer, other: ArtifactServer
) -> None:
    """grpc cancels a handler more than once (its deadline, then the call's end); the
    upload must stay claimed until the staged bytes are closed, or another server could
    publish the blob and then see the first one's buffered bytes land in it."""
    data = random.Random(17).randbytes(5 * MiB + 11)
    file, upload_id = entry("w.bin", data), "twice-1"
    version = await new_version(store)
    services = store.running.services

    async def slowly(pause: Callable[[], Awaitable[int]]) -> int:
        await asyncio.sleep(2.5)  # a slow disk, a hung mount: longer than the lease
        return await pause()

    paused_slowly = HookedBlobs(services.blobs, close=slowly)
    slow = Uploads(store=services.store, blobs=paused_slowly, lease_seconds=1.5)  # type: ignore[arg-type]
    header = UploadHeader(parse_version_name(version), file, upload_id)
    first = asyncio.ensure_future(
        slow.upload(header=header, chunks=chunks_of(data, 3 * MiB, asyncio.Event()), actor="t")
    )
    await wait_committed(store, version, upload_id, 0)
    await asyncio.sleep(0.2)  # 3 MiB buffered, under one write batch / one S3 part

    first.cancel()
    await asyncio.sleep(0.05)
    first.cancel()  # again, while it pauses
    reply = await resume(other, version, file, data, upload_id)

    assert reply.complete
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(2.7)  # anything the first stream still had in hand has landed
    await finalize(other, version, [file])
    assert (await download(store, version, "w.bin"))[1] == data


async def test_a_staged_upload_starts_no_write_once_its_lease_is_gone(
    store: ArtifactServer,
) -> None:
    """The blob stores ask `held` right before each write they start (a batch on the
    filesystem, a part on S3), not only when the data arrived."""
    blobs = store.running.services.blobs
    data = random.Random(18).randbytes(2 * S3_PART_SIZE + 7)
    sha256 = entry("w.bin", data).sha256
    lease, key = {"held": True}, uuid.uuid4().hex
    staged = await blobs.open_upload(
        key=key, sha256=sha256, size=len(data), held=lambda: lease["held"]
    )
    await staged.write(data[:CHUNK])
    lease["held"] = False

    async def write_the_rest() -> None:
        for start in range(CHUNK, len(data), CHUNK):
            await staged.write(data[start : start + CHUNK])
        await staged.sha256()

    with pytest.raises(Unavailable) as refused:
        await write_the_rest()

    assert refused.value.reason == "UPLOAD_LEASE_LOST"
    await staged.abandon()
    assert (await blobs.sizes(digests=[sha256])) == {}
    await blobs.discard_upload(key=key)  # the servers are shared: leave nothing staged
