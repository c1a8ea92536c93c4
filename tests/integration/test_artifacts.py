"""Artifacts end to end through the real gRPC server, on the filesystem and on S3 (moto):
uploads, resumes, dedup, finalize, manifests and ranged downloads."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelreg.config import Settings
from modelreg.domain.artifacts import manifest_digest
from modelreg.domain.types import VersionFile
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import reason_of, rich_status, violations_of
from tests.integration.conftest import S3_PART_SIZE, ArtifactServer, serve_artifacts

CHUNK = 256 * 1024
MiB = 1024 * 1024


# --- helpers: a minimal client of the raw stubs ---------------------------------------------


def write_random(path: Path, size: int, seed: int) -> VersionFile:
    """A file of `size` pseudo-random bytes, written a MiB at a time; its manifest entry."""
    rng, digest = random.Random(seed), hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for start in range(0, size, MiB):
            block = rng.randbytes(min(MiB, size - start))
            digest.update(block)
            out.write(block)
    return VersionFile(path.name, size, digest.hexdigest())


def entry(path: str, data: bytes) -> VersionFile:
    return VersionFile(path, len(data), hashlib.sha256(data).hexdigest())


def to_proto(file: VersionFile) -> art.ManifestEntry:
    return art.ManifestEntry(path=file.path, size=file.size, sha256=file.sha256)


async def new_version(server: ArtifactServer, model: str = "m") -> str:
    await server.registry.CreateModel(
        rs.CreateModelRequest(parent="namespaces/default", model_id=model)
    )
    reply = await server.registry.CreateModelVersion(
        rs.CreateModelVersionRequest(parent=f"namespaces/default/models/{model}")
    )
    return reply.version.name


async def requests(
    version: str,
    file: VersionFile,
    source: Path | bytes,
    *,
    upload_id: str,
    offset: int = 0,
    stop_at: int | None = None,
    finish: bool = False,
) -> AsyncIterator[art.UploadFileRequest]:
    """Header, then the bytes from `offset` (up to `stop_at`) in 256 KiB chunks."""
    header = art.UploadHeader(
        version=version,
        path=file.path,
        size=file.size,
        sha256=file.sha256,
        upload_id=upload_id,
        offset=offset,
    )
    yield art.UploadFileRequest(header=header)
    data = await asyncio.to_thread(source.read_bytes) if isinstance(source, Path) else source
    end = len(data) if stop_at is None else stop_at
    for start in range(offset, end, CHUNK):
        yield art.UploadFileRequest(data=data[start : min(start + CHUNK, end)])
    if finish:
        yield art.UploadFileRequest(finish_write=True)


async def upload(
    server: ArtifactServer,
    version: str,
    file: VersionFile,
    source: Path | bytes,
    *,
    upload_id: str | None = None,
    **options: Any,
) -> art.UploadFileResponse:
    stream = requests(version, file, source, upload_id=upload_id or uuid.uuid4().hex, **options)
    reply: art.UploadFileResponse = await server.artifacts.UploadFile(stream)
    return reply


async def finalize(
    server: ArtifactServer, version: str, files: list[VersionFile]
) -> pb.ModelVersion:
    reply = await server.artifacts.FinalizeModelVersion(
        art.FinalizeModelVersionRequest(name=version, files=[to_proto(f) for f in files])
    )
    return reply.version


async def download(
    server: ArtifactServer, reference: str, path: str, offset: int = 0, limit: int = 0
) -> tuple[list[art.DownloadFileResponse], bytes]:
    request = art.DownloadFileRequest(reference=reference, path=path, offset=offset, limit=limit)
    messages = [m async for m in server.artifacts.DownloadFile(request)]
    return messages, b"".join(m.data for m in messages)


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def manifest(server: ArtifactServer, reference: str) -> art.ListManifestResponse:
    reply: art.ListManifestResponse = await server.artifacts.ListManifest(
        art.ListManifestRequest(reference=reference)
    )
    return reply


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_push_and_pull_a_directory_byte_identical(
    store: ArtifactServer, tmp_path: Path
) -> None:
    src = tmp_path / "model"
    big = write_random(src / "weights.bin", 64 * MiB + 12345, seed=1)  # > 64 MiB, multipart on S3
    small = write_random(src / "config" / "tokenizer.json", 3000, seed=2)
    files = [
        big,
        VersionFile("config/tokenizer.json", small.size, small.sha256),
        entry("README", b""),
        entry("config/params.yaml", b"lr: 0.001\n"),
    ]
    sources: dict[str, Path | bytes] = {
        "weights.bin": src / "weights.bin",
        "config/tokenizer.json": src / "config" / "tokenizer.json",
        "README": b"",
        "config/params.yaml": b"lr: 0.001\n",
    }
    version = await new_version(store)
    replies = await asyncio.gather(*(upload(store, version, f, sources[f.path]) for f in files))
    assert all(r.complete for r in replies)
    # The empty blob is the same everywhere: other modules' tests may have stored it already.
    assert not any(r.deduplicated for r in replies if r.file.size)
    ready = await finalize(store, version, files)

    assert ready.state == pb.MODEL_VERSION_STATE_READY
    assert ready.digest == manifest_digest(files)
    assert ready.total_size == sum(f.size for f in files)
    await store.registry.SetAlias(
        rs.SetAliasRequest(name="namespaces/default/models/m/aliases/production", version_number=1)
    )
    listed = await manifest(store, "default/m@production")
    assert (listed.version, listed.digest) == (version, ready.digest)
    assert [f.path for f in listed.files] == sorted(f.path for f in files)
    for file in files:
        messages, data = await download(store, "m@production", file.path)
        source = sources[file.path]
        expected = source.read_bytes() if isinstance(source, Path) else source
        assert data == expected, file.path
        assert hashlib.sha256(data).hexdigest() == messages[0].file.sha256 == file.sha256
        assert messages[0].version == version
        assert all(len(m.data) <= CHUNK for m in messages)


# --- rejected uploads leave nothing behind ----------------------------------------------------


@pytest.mark.parametrize("size", [1000, 10 * MiB], ids=["small", "multipart"])
async def test_wrong_sha256_is_rejected_and_nothing_becomes_visible(
    store: ArtifactServer, s3_client: Any, size: int
) -> None:
    data = random.Random(size).randbytes(size)
    version = await new_version(store)
    lie = VersionFile("w.bin", size, hashlib.sha256(b"other").hexdigest())

    err = await failure(upload(store, version, lie, data))

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(rich_status(err)) == "DIGEST_MISMATCH"
    assert violations_of(rich_status(err)) == ["header.sha256"]
    assert (await manifest(store, version)).files == []
    missing = await store.artifacts.FindMissingBlobs(
        art.FindMissingBlobsRequest(sha256=[lie.sha256, entry("", data).sha256])
    )
    assert len(missing.missing_sha256) == 2
    await assert_store_lacks(store, s3_client, lie.sha256)


async def test_wrong_size_is_rejected(store: ArtifactServer) -> None:
    version = await new_version(store)
    data = b"x" * 5000
    too_small = VersionFile("a", 4000, hashlib.sha256(data[:4000]).hexdigest())
    err = await failure(upload(store, version, too_small, data))
    assert (err.code(), reason_of(rich_status(err))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIZE_MISMATCH",
    )
    too_big = VersionFile("b", 6000, hashlib.sha256(data).hexdigest())
    err = await failure(upload(store, version, too_big, data, finish=True))
    assert reason_of(rich_status(err)) == "SIZE_MISMATCH"
    assert "5000 of the 6000" in (err.details() or "")
    assert (await manifest(store, version)).files == []


async def assert_store_lacks(store: ArtifactServer, s3_client: Any, sha256: str) -> None:
    """Neither the blob nor any staged upload of it is left in the blob store."""
    if store.kind == "fs":
        assert store.blob_root is not None
        assert not (store.blob_root / "sha256" / sha256[:2] / sha256[2:]).exists()
        assert list((store.blob_root / "uploads").iterdir()) == []
        return
    key = f"blobs/sha256/{sha256[:2]}/{sha256[2:]}"
    objects = await s3_client.list_objects_v2(Bucket=store.bucket, Prefix=key)
    assert objects.get("KeyCount", 0) == 0
    uploads = await s3_client.list_multipart_uploads(Bucket=store.bucket, Prefix=key)
    assert uploads.get("Uploads", []) == []  # the multipart upload was aborted


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "a/../../b", "/abs/path", "", "a//b", "./a", "a\\b", "a\x00b", "x" * 1025],
)
async def test_bad_paths_are_invalid_argument(
    fs_server: ArtifactServer, clean: None, path: str
) -> None:
    version = await new_version(fs_server)
    err = await failure(upload(fs_server, version, entry(path, b"abc"), b"abc"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(rich_status(err)) == ["header.path"]


async def test_upload_to_a_ready_version_is_failed_precondition(store: ArtifactServer) -> None:
    version = await new_version(store)
    await finalize(store, version, [])
    err = await failure(upload(store, version, entry("late", b"abc"), b"abc"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(rich_status(err)) == "VERSION_NOT_PENDING"


async def test_finalize_with_a_missing_file_names_it(store: ArtifactServer) -> None:
    version = await new_version(store)
    here, gone = entry("here.bin", b"here"), entry("gone.bin", b"gone")
    await upload(store, version, here, b"here")
    err = await failure(finalize(store, version, [here, gone]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "gone.bin" in (err.details() or "")
    assert reason_of(rich_status(err)) == "MISSING_FILE"
    again = await finalize(store, version, [here])
    assert again.state == pb.MODEL_VERSION_STATE_READY
    assert (await finalize(store, version, [here])).digest == again.digest  # a retry is fine


# --- resume -----------------------------------------------------------------------------------


async def test_a_cut_upload_resumes_from_committed_size(store: ArtifactServer) -> None:
    size = 3 * S3_PART_SIZE + 777  # S3 keeps whole parts, the filesystem every byte
    data = random.Random(7).randbytes(size)
    file, upload_id = entry("w.bin", data), "resume-1"
    version = await new_version(store)
    cut_at = random.Random(f"cut {store.kind}").randrange(S3_PART_SIZE + 1, size - 1)

    call = store.artifacts.UploadFile(
        requests(version, file, data, upload_id=upload_id, stop_at=cut_at, finish=False)
    )
    await partial(call, cut_at)
    status = await settled_status(store, version, upload_id)
    assert status.committed_size <= cut_at
    assert not status.complete

    reply = await resume(store, version, file, data, upload_id)

    assert reply.complete
    assert reply.file.sha256 == file.sha256
    await finalize(store, version, [file])
    assert (await download(store, version, "w.bin"))[1] == data


async def partial(call: Any, cut_at: int) -> bool:
    """Let the upload send `cut_at` bytes, then drop the connection's call."""
    await asyncio.sleep(0)
    try:
        await asyncio.wait_for(asyncio.shield(call), timeout=0.5)
    except TimeoutError:
        call.cancel()
        return True
    return False  # the server answered first: a paused upload, not a cut one


async def settled_status(
    store: ArtifactServer, version: str, upload_id: str
) -> art.GetUploadStatusResponse:
    """The upload's status once the server has finished pausing it."""
    request = art.GetUploadStatusRequest(version=version, upload_id=upload_id)
    previous = None
    for _ in range(300):  # generous: a loaded CI machine may take seconds to pause it
        status = await store.artifacts.GetUploadStatus(request)
        if previous is not None and status.committed_size == previous.committed_size:
            return status
        previous = status
        await asyncio.sleep(0.1)
    raise AssertionError("the upload never settled")


async def resume(
    store: ArtifactServer, version: str, file: VersionFile, data: bytes, upload_id: str
) -> art.UploadFileResponse:
    for _ in range(300):  # generous, as in settled_status
        status = await store.artifacts.GetUploadStatus(
            art.GetUploadStatusRequest(version=version, upload_id=upload_id)
        )
        stream = requests(version, file, data, upload_id=upload_id, offset=status.committed_size)
        try:
            reply: art.UploadFileResponse = await store.artifacts.UploadFile(stream)
            return reply
        except grpc.aio.AioRpcError as exc:
            if reason_of(rich_status(exc)) not in ("UPLOAD_IN_PROGRESS", "OFFSET_MISMATCH"):
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the upload never resumed")


async def test_a_paused_upload_reports_its_offset_and_a_wrong_offset_is_refused(
    fs_server: ArtifactServer, clean: None
) -> None:
    data = random.Random(3).randbytes(1_000_000)
    file, version = entry("w.bin", data), await new_version(fs_server)
    paused = await upload(fs_server, version, file, data, upload_id="u1", stop_at=600_000)
    assert (paused.complete, paused.committed_size) == (False, 600_000)
    err = await failure(upload(fs_server, version, file, data, upload_id="u1", offset=1000))
    assert reason_of(rich_status(err)) == "OFFSET_MISMATCH"
    done = await upload(fs_server, version, file, data, upload_id="u1", offset=600_000)
    assert done.complete


async def test_a_cut_download_resumes_from_its_offset(store: ArtifactServer) -> None:
    data = random.Random(5).randbytes(5 * MiB + 3)
    file, version = entry("w.bin", data), await new_version(store)
    await upload(store, version, file, data)
    await finalize(store, version, [file])

    call = store.artifacts.DownloadFile(art.DownloadFileRequest(reference=version, path="w.bin"))
    received = b""
    async for message in call:
        received += message.data
        if len(received) >= 2 * MiB:
            call.cancel()
            break
    rest = (await download(store, version, "w.bin", offset=len(received)))[1]
    assert received + rest == data
    header = (await download(store, "m:1", "w.bin", offset=0, limit=8))[1]
    assert header == data[:8]
    middle = (await download(store, "m", "w.bin", offset=MiB, limit=300_000))[1]
    assert middle == data[MiB : MiB + 300_000]


async def test_downloads_read_with_pread_match_the_mapped_ones(
    fs_server: ArtifactServer, clean: None, database_url: str, tmp_path: Path
) -> None:
    """MODELREG_BLOB_READ=pread: the same bytes, from windows read instead of mapped,
    across window boundaries (8 MiB) and at odd offsets."""
    data = random.Random(8).randbytes(17 * MiB + 5)
    file, version = entry("w.bin", data), await new_version(fs_server)
    await upload(fs_server, version, file, data)
    await finalize(fs_server, version, [file])
    assert fs_server.blob_root is not None
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        grace_seconds=1,
        home=tmp_path,
        blob_url=fs_server.blob_root.as_uri(),
        blob_read="pread",
    )
    async with AsyncExitStack() as stack:
        reader = await serve_artifacts("fs", settings, stack, blob_root=fs_server.blob_root)
        for offset, limit in ((0, 0), (8 * MiB - 3, 10), (MiB + 1, 9 * MiB), (17 * MiB, 0)):
            end = len(data) if limit == 0 else offset + limit
            mapped = (await download(fs_server, version, "w.bin", offset, limit))[1]
            read = (await download(reader, version, "w.bin", offset, limit))[1]
            assert mapped == read == data[offset:end]


# --- dedup, fail, orphans ----------------------------------------------------------------------


async def test_the_same_file_under_a_second_model_uploads_no_data(store: ArtifactServer) -> None:
    data = random.Random(11).randbytes(2 * MiB)
    file = entry("weights.bin", data)
    first = await new_version(store, "a")
    await upload(store, first, file, data)
    second = await new_version(store, "b")

    missing = await store.artifacts.FindMissingBlobs(
        art.FindMissingBlobsRequest(sha256=[file.sha256])
    )
    reply = await upload(store, second, file, b"", stop_at=0)  # the header alone

    assert list(missing.missing_sha256) == []
    assert reply.complete
    assert reply.deduplicated
    await finalize(store, second, [file])
    assert (await download(store, "b", "weights.bin"))[1] == data


async def test_a_failed_version_takes_no_uploads_and_its_blobs_are_collected(
    store: ArtifactServer, s3_client: Any
) -> None:
    version = await new_version(store)
    data = b"abandoned" * 1000
    await upload(store, version, entry("a.bin", data), data)
    await upload(store, version, entry("b.bin", data * 2), data * 2, stop_at=100)  # staged
    failed = await store.artifacts.FailModelVersion(art.FailModelVersionRequest(name=version))
    assert failed.version.state == pb.MODEL_VERSION_STATE_FAILED
    err = await failure(upload(store, version, entry("c.bin", b"c"), b"c"))
    assert reason_of(rich_status(err)) == "VERSION_NOT_PENDING"

    collected = await store.running.services.artifacts.collect_orphans(grace_seconds=0)

    stored, staged = entry("a.bin", data).sha256, entry("b.bin", data * 2).sha256
    assert set(collected) == {stored, staged}  # a staged upload's blob was reserved too
    await assert_store_lacks(store, s3_client, stored)
    assert await store.running.services.artifacts.collect_orphans(grace_seconds=0) == []
