"""An upload started on one server process and finished on another: another worker or
replica after a cut, or a new process after the first was SIGKILLed mid-stream; a
second stream of an upload that is still streaming elsewhere, refused until it ends;
and a stream that stalled past its lease, refused by the database once it wakes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from modelreg.config import Settings
from modelreg.domain.errors import FailedPrecondition, Unavailable
from modelreg.domain.names import parse_version_name
from modelreg.domain.types import VersionFile
from modelreg.domain.uploads import Chunk, UploadHeader, Uploads, UploadStatus
from modelreg.v1 import artifact_service_pb2 as art
from tests.helpers import authed_channel, reason_of, rich_status
from tests.integration.conftest import (
    S3_PART_SIZE,
    ArtifactServer,
    Hooked,
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
from tests.unit.fakes import FakeClock

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
        await asyncio.sleep(0.05)  # polls what the database recorded; orders nothing
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
    # The session exists, so the first stream holds its lease: both are committed together.
    await wait_committed(store, version, upload_id, 0)

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
        async with authed_channel(doomed.target) as channel:
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
    await wait_committed(store, version, upload_id, 0)  # it holds the lease
    # Whether its chunks have reached it yet or not, none of them may land.
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
    await wait_committed(store, version, upload_id, 0)  # it holds the lease

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


async def chunks_of(
    data: bytes, sent: int, sent_all: asyncio.Event, release: asyncio.Event, start: int = 0
) -> AsyncIterator[Chunk]:
    """`data[start:sent]`, then (`sent_all`: the stream has written all of it) the rest
    once `release` is set."""
    for at in range(start, sent, CHUNK):
        yield Chunk(data[at : min(at + CHUNK, sent)])
    sent_all.set()
    await release.wait()
    for at in range(sent, len(data), CHUNK):
        yield Chunk(data[at : at + CHUNK])


async def test_a_stream_cancelled_twice_still_pauses_and_releases_and_lands_nothing_late(
    store: ArtifactServer, other: ArtifactServer
) -> None:
    """grpc cancels a handler more than once (its deadline, then the call's end). The
    stream's clean-up still runs to its end, on a pause slower than the lease (a slow
    disk): the upload goes to another server meanwhile, and what the first still had in
    hand never lands in the blob."""
    data = random.Random(17).randbytes(5 * MiB + 11)
    file, upload_id = entry("w.bin", data), "twice-1"
    version = await new_version(store)
    services = store.running.services
    sent_all, pausing, go_on, released = (asyncio.Event() for _ in range(4))

    async def slowly(pause: Callable[[], Awaitable[Any]]) -> Any:
        pausing.set()
        await go_on.wait()  # a slow disk, a hung mount: longer than the lease
        return await pause()

    async def release(real: Callable[[], Awaitable[None]]) -> None:
        await real()
        released.set()

    slow = Uploads(
        store=services.store,
        leases=Hooked(services.store, release=release),
        blobs=HookedBlobs(services.blobs, pause=slowly),
        lease_seconds=1.5,
    )
    header = UploadHeader(parse_version_name(version), file, upload_id)
    chunks = chunks_of(data, 3 * MiB, sent_all, asyncio.Event())  # under one batch / part
    first = asyncio.ensure_future(slow.upload(header=header, chunks=chunks, actor="t"))
    await sent_all.wait()

    first.cancel()
    await pausing.wait()
    first.cancel()  # again, while it pauses
    with pytest.raises(asyncio.CancelledError):
        await first
    # The first stopped renewing: its 1.5 s lease runs out, and `resume` retries till then.
    reply = await resume(other, version, file, data, upload_id)
    go_on.set()  # the first's pause goes on: its buffered bytes go to its own staging
    await released.wait()  # its clean-up is over: its progress was refused, its lease gone

    assert reply.complete
    await finalize(other, version, [file])
    assert (await download(store, version, "w.bin"))[1] == data


@pytest.mark.slow
@pytest.mark.parametrize("woken", ["while the takeover streams", "after it finished"])
async def test_a_stream_stalled_past_its_lease_is_refused_by_the_database(
    store: ArtifactServer, other: ArtifactServer, woken: str
) -> None:
    """A stream records two parts' worth (S3 parts, filesystem batches), then its process
    stalls: its clock stands still, so it neither renews nor times out, and its 1 s lease
    runs out in PostgreSQL. Another server takes the upload over from the recorded
    progress. Then the first wakes and sends the rest, the right bytes, as if nothing had
    happened: only the database can tell it is stale, and it does (its progress update
    changes no row), so it lands nothing and answers UPLOAD_LEASE_LOST."""
    data = random.Random(f"stalled, woken {woken}").randbytes(4 * S3_PART_SIZE + 4321)
    file, upload_id = entry("w.bin", data), "stalled-1"
    version = parse_version_name(await new_version(store))

    def stalled(server: ArtifactServer, lease_seconds: float) -> Uploads:
        """A stream's server whose clock stands still (no renewals, no idle limit)."""
        services = server.running.services
        store, blobs = services.store, services.blobs
        clock = FakeClock()
        return Uploads(
            store=store, leases=store, blobs=blobs, lease_seconds=lease_seconds, clock=clock
        )

    wake, held, go_on = asyncio.Event(), asyncio.Event(), asyncio.Event()
    first = asyncio.ensure_future(
        stalled(store, 1.0).upload(
            header=UploadHeader(version, file, upload_id),
            chunks=chunks_of(data, 2 * S3_PART_SIZE + 1000, asyncio.Event(), wake),
            actor="t",
        )
    )
    await wait_committed(other, version.name, upload_id, 2 * S3_PART_SIZE)
    taking_over = asyncio.ensure_future(
        once_free(
            stalled(other, 30.0),
            UploadHeader(version, file, upload_id, offset=2 * S3_PART_SIZE),
            lambda: chunks_of(data, 3 * S3_PART_SIZE, held, go_on, start=2 * S3_PART_SIZE),
        )
    )
    await wait_committed(other, version.name, upload_id, 3 * S3_PART_SIZE)  # it took over
    if woken == "after it finished":
        go_on.set()
        assert (await taking_over).complete
    wake.set()
    with pytest.raises(Unavailable) as refused:
        await first
    go_on.set()

    assert refused.value.reason == "UPLOAD_LEASE_LOST"
    assert (await taking_over).complete
    await finalize(other, version.name, [file])
    assert (await download(store, version.name, "w.bin"))[1] == data


async def once_free(
    uploads: Uploads, header: UploadHeader, chunks: Callable[[], AsyncIterator[Chunk]]
) -> UploadStatus:
    """Upload as soon as the upload's lease is free."""
    for _ in range(300):  # generous: a loaded CI machine
        try:
            return await uploads.upload(header=header, chunks=chunks(), actor="t")
        except FailedPrecondition as exc:
            if exc.reason != "UPLOAD_IN_PROGRESS":
                raise
        await asyncio.sleep(0.1)  # polls until the stalled stream's short lease ran out
    raise AssertionError("the upload was never free")
