"""`push`: upload a file or a directory as the files of a PENDING version, then finalize it.

Files are hashed first (streaming), FindMissingBlobs says which bytes the registry
lacks, files it holds are sent as a header alone (the server adds them without data),
the others are streamed concurrently under a bound. A stream that breaks (UNAVAILABLE,
or the server holding another offset) asks GetUploadStatus and resumes from
`committed_size`; nothing becomes READY unless every file is in.

Pushing to a model first looks up its latest READY version: with `if_changed`, files
whose manifest digest equals that version's make no new version; without it, the
caller is told the new version repeats it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import grpc

from modelreg.client.artifacts import (
    MAX_DIGESTS,
    LocalFile,
    Meter,
    Progress,
    Transport,
    fail_version,
    finalize_version,
    find_missing_blobs,
    upload_status,
    wrong_state,
)
from modelreg.client.calls import get_model
from modelreg.client.errors import InvalidArgumentError, NotFoundError, RegistryError
from modelreg.client.files import BLOCK, local_files, run_bounded, sha256_of
from modelreg.client.names import model_name, version_name
from modelreg.client.versions import create_version, get_version, resolve
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res

CHUNK_SIZE = 256 * 1024  # bytes per upload message (DESIGN.md §5: 64-256 KiB)
RESUMES = 8  # times one file's upload may resume before push gives up
_PAUSE = 0.2  # seconds before asking where a broken upload stands; doubles each time
_RESUMABLE_REASONS = ("OFFSET_MISMATCH", "UPLOAD_IN_PROGRESS")


class Pushed(NamedTuple):
    """What a push did: the version it leaves (READY, or PENDING if not finalized), whether
    it made that version, and the model's latest READY version before it (None when there
    was none, or when the push went into a PENDING version named by number)."""

    version: res.ModelVersion
    created: bool
    previous: res.ModelVersion | None

    @property
    def repeats_previous(self) -> bool:
        """True if a new version holds exactly the files of the latest READY one before it."""
        return (
            self.created
            and self.previous is not None
            and bool(self.version.digest)
            and self.version.digest == self.previous.digest
        )


def manifest_digest(files: Iterable[LocalFile]) -> str:
    """The version digest the server computes at finalize (its `manifest_digest` in
    domain/artifacts.py): sha256 over `path TAB size TAB sha256 LF`, by path's UTF-8 bytes."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path.encode()):
        digest.update(f"{f.path}\t{f.size}\t{f.sha256}\n".encode())
    return f"sha256:{digest.hexdigest()}"


async def push(
    client: Transport,
    target: str,
    path: Path,
    *,
    finalize: bool,
    concurrency: int,
    chunk_size: int,
    progress: Progress | None,
    fail_on_error: bool,
    if_changed: bool = False,
) -> res.ModelVersion:
    """`push_report`, returning only the version."""
    pushed = await push_report(
        client,
        target,
        path,
        finalize=finalize,
        concurrency=concurrency,
        chunk_size=chunk_size,
        progress=progress,
        fail_on_error=fail_on_error,
        if_changed=if_changed,
    )
    return pushed.version


async def push_report(
    client: Transport,
    target: str,
    path: Path,
    *,
    finalize: bool,
    concurrency: int,
    chunk_size: int,
    progress: Progress | None,
    fail_on_error: bool,
    if_changed: bool,
) -> Pushed:
    """Upload `path` into the version `target` names (a new one for `ns/model`); with
    `if_changed`, not if the model's latest READY version holds exactly these files."""
    if if_changed and _names_version(target):
        raise _not_a_model(target)
    version = await _existing_version(client, target)
    files = await _hash(path, concurrency, progress)  # first: an unreadable file leaves no version
    previous = None if version is not None else await _latest_ready(client, target)
    if if_changed and previous is not None and previous.digest == manifest_digest(files):
        return Pushed(previous, False, previous)
    created = version is None
    if version is None:
        version = await client._run(create_version(model_name(target)))
    try:
        missing = await _missing(client, [f.sha256 for f in files])
        meter = Meter(progress, "upload", sum(f.size for f in files if f.sha256 in missing))
        upload = functools.partial(_upload, client, version.name, meter=meter, chunk=chunk_size)
        jobs = (functools.partial(upload, f, send_data=f.sha256 in missing) for f in files)
        await run_bounded(jobs, concurrency)
        if not finalize:
            return Pushed(
                await client._run(get_version(version.name, strong=True)), created, previous
            )
        entries = [f.entry() for f in files]
        finalized = await client._run(finalize_version(version.name, entries, timeout=60.0))
        return Pushed(finalized, created, previous)
    except BaseException:
        if fail_on_error:
            with contextlib.suppress(RegistryError):
                await client._run(fail_version(version.name, timeout=60.0))
        raise


def _names_version(target: str) -> bool:
    return ":" in target or "/versions/" in target


def _not_a_model(target: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"if_changed compares with the model's latest READY version, so it needs a model"
        f" (ns/model), not a version: {target!r}",
        reason="IF_CHANGED_NEEDS_MODEL",
        field_violations=[("target", "must name a model when if_changed is set")],
    )


async def _latest_ready(client: Transport, target: str) -> res.ModelVersion | None:
    """The model's latest READY version, read past the caches; None if it has none."""
    try:
        return await client._run(resolve(model_name(target), strong=True))
    except NotFoundError:
        return None


async def _existing_version(client: Transport, target: str) -> res.ModelVersion | None:
    """The version `target` names, which must be PENDING; None if it names a model (which
    must exist). Checked before hashing, which can take a while."""
    if not _names_version(target):
        await client._run(get_model(model_name(target)))
        return None
    version = await client._run(get_version(version_name(target), strong=True))
    if version.state != res.MODEL_VERSION_STATE_PENDING:
        raise wrong_state(version.name, version.state, "PENDING", "pushed to")
    return version


async def _hash(path: Path, concurrency: int, progress: Progress | None) -> list[LocalFile]:
    found = await asyncio.to_thread(local_files, path)
    sizes = await asyncio.to_thread(lambda: [source.stat().st_size for _, source in found])
    meter = Meter(progress, "hash", sum(sizes))
    files: list[LocalFile | None] = [None] * len(found)

    async def hash_one(index: int) -> None:
        name, source = found[index]
        size, sha256 = await sha256_of(source, meter.add)
        files[index] = LocalFile(name, str(source), size, sha256)

    await run_bounded((functools.partial(hash_one, i) for i in range(len(found))), concurrency)
    return [f for f in files if f is not None]


async def _missing(client: Transport, digests: Sequence[str]) -> set[str]:
    unique = sorted(set(digests))
    missing: set[str] = set()
    for start in range(0, len(unique), MAX_DIGESTS):
        batch = find_missing_blobs(unique[start : start + MAX_DIGESTS])
        found: list[str] = await client._run(batch)
        missing.update(found)
    return missing


async def _upload(
    client: Transport,
    version: str,
    file: LocalFile,
    *,
    send_data: bool,
    meter: Meter,
    chunk: int,
) -> None:
    """Upload one file under a fresh upload id, resuming after breaks; header alone first
    if the registry holds its bytes."""
    header = art.UploadHeader(
        version=version,
        path=file.path,
        size=file.size,
        sha256=file.sha256,
        upload_id=uuid.uuid4().hex,
    )
    if not send_data:
        reply = await client._upload(_header_only(header))
        if reply.complete:
            return
        meter.total += file.size  # the blob went away since FindMissingBlobs: send it after all
    sent = _Sent(meter)
    offset, pause = 0, _PAUSE
    for resumes in range(RESUMES + 1):
        try:
            header.offset = offset
            reply = await client._upload(_requests(header, file.source, chunk, sent.up_to))
        except RegistryError as error:
            if not _resumable(error) or resumes == RESUMES:
                raise
            await asyncio.sleep(pause)
            pause *= 2
            status = await client._run(upload_status(version, header.upload_id))
            reply = art.UploadFileResponse(
                complete=status.complete, committed_size=status.committed_size
            )
        if reply.complete:
            return
        offset = reply.committed_size


def _resumable(error: RegistryError) -> bool:
    return error.code is grpc.StatusCode.UNAVAILABLE or error.reason in _RESUMABLE_REASONS


class _Sent:
    """Reports each byte of a file to the meter once, however often a resume re-sends it."""

    def __init__(self, meter: Meter) -> None:
        self._meter, self._counted = meter, 0

    def up_to(self, position: int) -> None:
        if position > self._counted:
            self._meter.add(position - self._counted)
            self._counted = position


async def _header_only(header: art.UploadHeader) -> AsyncIterator[art.UploadFileRequest]:
    # No finish_write: were the blob gone after all, the server pauses at 0, not fails.
    yield art.UploadFileRequest(header=header)


async def _requests(
    header: art.UploadHeader, source: str, chunk: int, sent: Callable[[int], None]
) -> AsyncIterator[art.UploadFileRequest]:
    """The header, then the file's bytes from `header.offset`, the last message finishing."""
    size, position = header.size, header.offset
    yield art.UploadFileRequest(header=header, finish_write=position == size)
    fd = await asyncio.to_thread(os.open, source, os.O_RDONLY)
    try:
        while position < size:
            block = await asyncio.to_thread(os.pread, fd, min(BLOCK, size - position), position)
            if not block:
                raise OSError(f"{source} shrank while it was being pushed")
            for start in range(0, len(block), chunk):
                data = block[start : start + chunk]
                position += len(data)
                yield art.UploadFileRequest(data=data, finish_write=position == size)
                sent(position)
    finally:
        os.close(fd)
