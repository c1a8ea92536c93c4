"""Uploads: one file of a PENDING version streamed into the blob store, resumable.

An upload streams into a staged blob, hashed as it arrives; only when size and sha256
match is the blob published (content-addressed, so the same bytes are stored once) and
the file added to the version. What the blob store holds durably is recorded in the
upload's row as the stream goes (`UploadProgress`), so a cut stream resumes from there in
any server process.

The fence is in the database: a stream holds the upload's lease (domain/leases.py) under
a token, and every write of the upload's progress, the one before publishing included, is
an UPDATE guarded on that token. A stream that lost the upload to another (it stalled
past its lease) is refused there and writes nothing more; the blob stores publish only
what the database recorded (S3 completes with the recorded parts, whose checksums reject
bytes swapped since; the filesystem renames the stream's own staging file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from modelreg.domain.artifacts import (
    MAX_FILES,
    check_file,
    file_name,
    require_pending,
    staging_key,
)
from modelreg.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    RegistryError,
    ResourceExhausted,
    Unavailable,
)
from modelreg.domain.events import Event, EventKind
from modelreg.domain.leases import SystemClock, UploadLease, lease_lost
from modelreg.domain.names import VersionKey, check_upload_id
from modelreg.domain.ports import (
    ArtifactStore,
    ArtifactTransaction,
    BlobStore,
    Clock,
    StagedBlob,
    UploadLeases,
)
from modelreg.domain.types import UploadProgress, UploadSession, VersionFile

T = TypeVar("T")
log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0

_CANNOT_RESUME = ("SIZE_MISMATCH", "DIGEST_MISMATCH", "UPLOAD_EXPIRED")


@dataclass(frozen=True, slots=True)
class UploadHeader:
    """The first message of an upload stream."""

    version: VersionKey
    file: VersionFile
    upload_id: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """How far an upload got; `file` is part of the version once `complete`."""

    file: VersionFile
    committed_size: int
    complete: bool
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message of an upload stream after the header."""

    data: bytes
    finish: bool = False


def check_header(header: UploadHeader) -> UploadHeader:
    """Validate an upload header."""
    check_file(header.file, "header")
    check_upload_id(header.upload_id, "header.upload_id")
    if not 0 <= header.offset <= header.file.size:
        raise InvalidArgument.field("header.offset", "must be between 0 and the file's size")
    return header


class Uploads:
    """The upload aggregate: receive a file (or the rest of it), report progress."""

    def __init__(
        self,
        *,
        store: ArtifactStore,
        leases: UploadLeases,
        blobs: BlobStore,
        lease_seconds: float = LEASE_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        self._store, self._leases, self._blobs = store, leases, blobs
        self._lease_seconds = lease_seconds
        self._clock = clock or SystemClock()

    async def upload(
        self, *, header: UploadHeader, chunks: AsyncIterator[Chunk], actor: str
    ) -> UploadStatus:
        """Receive one file (or the rest of it); commit it when size and sha256 match."""
        session, lease = await self._begin(check_header(header))
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        stream = _Stream(session, lease, _Recorder(self._store, session, lease))
        outcome: UploadStatus | RegistryError | None
        try:
            outcome = await self._run(stream, header.offset, chunks, actor)
        except RegistryError as exc:
            outcome = exc
        finally:  # cancelled too (then the cancellation goes on once this is done)
            await _finish_even_if_cancelled(self._end(stream))
        if lease.superseded and not stream.published:  # the database's word is the last
            raise lease_lost() from (outcome if isinstance(outcome, RegistryError) else None)
        if isinstance(outcome, RegistryError):
            raise outcome
        committed = stream.recorder.recorded.committed_size
        return outcome or UploadStatus(session.file, committed, complete=False)

    async def _run(
        self, stream: _Stream, offset: int, chunks: AsyncIterator[Chunk], actor: str
    ) -> UploadStatus | None:
        """Link the blob if it is there, else receive it and link it; None if paused."""
        if offset == 0 and await self._present(stream.session.file):
            linked = await self._link(stream, actor, deduplicated=True)
            if linked is not None:
                return linked
            # collected since we looked: the bytes are needed after all
        stream.lease.start_renewing()
        if not await self._receive(stream, offset, chunks):
            return None
        linked = await self._link(stream, actor)
        if linked is None:
            raise Unavailable(
                "the uploaded blob was collected before it was linked; upload it again",
                reason="BLOB_COLLECTED",
            )
        return linked

    async def status(self, *, version: VersionKey, upload_id: str) -> UploadStatus:
        """How many bytes of an upload are committed (the offset to resume from)."""
        session = await self._store.get_upload(version=version, upload_id=upload_id)
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        return UploadStatus(session.file, session.progress.committed_size, complete=False)

    async def _begin(self, header: UploadHeader) -> tuple[UploadSession, UploadLease]:
        wanted = UploadSession(header.upload_id, header.version, header.file)
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=header.version, shared=True)
            require_pending(version, "uploaded to")
            session = await tx.save_upload(session=wanted)
            if session.file != header.file:
                raise InvalidArgument.field(
                    "header.upload_id", "was used for another file; choose a new upload id"
                )
            lease = UploadLease(self._leases, session, self._lease_seconds, self._clock)
            if not session.complete:
                await _check_slot(tx, header)
                await lease.claim(tx)
                size, sha = header.file.size, header.file.sha256
                await tx.reserve_blob(model=header.version.model, sha256=sha, size=size)
        return session, lease

    async def _present(self, file: VersionFile) -> bool:
        size = (await self._blobs.sizes(digests=[file.sha256])).get(file.sha256)
        if size is not None and size != file.size:
            raise InvalidArgument.field(
                "header.size", f"the blob with this sha256 has {size} bytes, not {file.size}"
            )
        return size is not None

    async def _receive(self, stream: _Stream, offset: int, chunks: AsyncIterator[Chunk]) -> bool:
        """Stage the stream's bytes; True once they are published, False if the stream
        paused early."""
        session, recorder = stream.session, stream.recorder
        file = session.file
        staged = await self._blobs.open_upload(
            key=staging_key(session.version, session.upload_id),
            sha256=file.sha256,
            size=file.size,
            token=stream.lease.token,
            resume=session.progress,
            on_progress=recorder.offer,
        )
        stream.staged = staged
        if staged.progress != session.progress and not await recorder.record(staged.progress):
            raise lease_lost()  # moved to this stream's staging, or lost: say so first
        _check_offset(session, staged.progress.committed_size, offset)
        try:
            received = _within(chunks, self._clock, idle=self._lease_seconds)
            if not await _write(staged, received, offset, file.size, stream.lease):
                return False
            digest, whole = await staged.finish()
            _verify(digest, file)
            if not await recorder.record(whole):  # the fence: nothing unrecorded is published
                raise lease_lost()
            await staged.publish(whole)
        except RegistryError as exc:
            stream.keep = exc.reason not in _CANNOT_RESUME  # those start again from 0
            raise
        stream.published = True
        return True

    async def _end(self, stream: _Stream) -> None:
        """After a stream: stop renewing, keep what is durable (or drop bytes a resume
        cannot mend) and record it, then release the lease."""
        staged, recorder, lease = stream.staged, stream.recorder, stream.lease
        await lease.stop_renewing()  # a stop that hangs (a hung disk) lets the upload go
        try:
            if staged is not None and not stream.published:
                await self._stop(stream, staged)
        finally:
            await recorder.settle()
            await lease.release()

    async def _stop(self, stream: _Stream, staged: StagedBlob) -> None:
        progress = await staged.pause()  # whatever happens next, nothing more is written
        if stream.lease.superseded:
            return  # the upload is another stream's: touch nothing
        if stream.keep:
            await stream.recorder.record(progress)
        elif await stream.recorder.record(UploadProgress()):
            await staged.discard()  # only once the database no longer points at it

    async def _link(
        self, stream: _Stream, actor: str, *, deduplicated: bool = False
    ) -> UploadStatus | None:
        """Link the blob as the version's file; None if it is gone (collected)."""
        session, lease = stream.session, stream.lease
        file, key = session.file, session.version
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=key, shared=True)
            require_pending(version, "uploaded to")
            await tx.lock_blob(sha256=file.sha256)  # no collection until this commits
            if not await self._present(file):
                return None
            await tx.add_file(version=key, file=file)
            await tx.reserve_blob(model=key.model, sha256=file.sha256, size=file.size)
            done = await tx.record_progress(
                version=key,
                upload_id=session.upload_id,
                token=lease.token,
                progress=stream.recorder.recorded,
                complete=True,
            )
            if not done:
                lease.superseded = True
                raise lease_lost()
            await tx.append_event(event=_file_event(key, file, actor))
        stream.published = True
        return UploadStatus(file, file.size, complete=True, deduplicated=deduplicated)


@dataclass(slots=True)
class _Stream:
    """One UploadFile call: its upload, its lease, and how far it got."""

    session: UploadSession
    lease: UploadLease
    recorder: _Recorder
    staged: StagedBlob | None = None
    published: bool = False
    keep: bool = True  # False: the bytes were wrong, a resume cannot mend them


class _Recorder:
    """Writes a stream's durable progress to the upload's row as it grows: the newest
    offered, one write at a time, each guarded by the lease token."""

    def __init__(self, store: ArtifactStore, session: UploadSession, lease: UploadLease) -> None:
        self._store, self._session, self._lease = store, session, lease
        self.recorded = session.progress
        self._offered: UploadProgress | None = None
        self._writing: asyncio.Task[None] | None = None

    def offer(self, progress: UploadProgress) -> None:
        """Record `progress` soon (the blob store calls this as its durable prefix grows)."""
        self._offered = progress
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_offered())

    async def record(self, progress: UploadProgress) -> bool:
        """Record `progress` now, over anything offered before; False, and nothing
        written, if the upload's lease has another token."""
        self._offered = None
        await self.settle()
        return await self._write(progress)

    async def settle(self) -> None:
        """Wait for the write in progress, if any."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)

    async def _write_offered(self) -> None:
        while self._offered is not None and not self._lease.superseded:
            progress, self._offered = self._offered, None
            try:
                await self._write(progress)
            except RegistryError as exc:  # PostgreSQL unreachable: the next offer retries
                log.warning("progress of upload %s not recorded: %s", self._session.upload_id, exc)
                return

    async def _write(self, progress: UploadProgress) -> bool:
        if self._lease.superseded:
            return False
        session = self._session
        async with self._store.transaction() as tx:
            written = await tx.record_progress(
                version=session.version,
                upload_id=session.upload_id,
                token=self._lease.token,
                progress=progress,
            )
        if not written:
            self._lease.superseded = True
            return False
        self.recorded = progress
        return True


async def _within(
    chunks: AsyncIterator[Chunk], clock: Clock, *, idle: float
) -> AsyncIterator[Chunk]:
    """The chunks, until none comes for `idle` seconds: a stream that silent is treated as
    cut (its client may be gone without the connection saying so), so that it does not
    hold the upload."""
    stream = aiter(chunks)
    while True:
        try:
            async with clock.timeout(idle):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise Unavailable(
                f"no data for {idle:.0f} s; the upload is paused, resume it",
                reason="UPLOAD_IDLE",
            ) from None
        if chunk is None:
            return
        yield chunk


async def _write(
    staged: StagedBlob, chunks: AsyncIterator[Chunk], offset: int, size: int, lease: UploadLease
) -> bool:
    """Write the stream's data; True if the file is whole, False if the stream paused early."""
    position = offset
    async for chunk in chunks:
        if lease.superseded:  # the database refused this stream: stop early
            raise lease_lost()
        position += len(chunk.data)
        if position > size:
            raise _size_mismatch(f"the stream sent more than the {size} bytes declared")
        if chunk.data:
            await staged.write(chunk.data)
        if chunk.finish and position < size:
            raise _size_mismatch(f"the stream finished at {position} of the {size} bytes declared")
        if chunk.finish:
            break
    return position == size


async def _finish_even_if_cancelled(cleanup: Coroutine[Any, Any, T]) -> T:
    """Run a clean-up to its end even if the stream's task is cancelled (again) meanwhile,
    as grpc does when a client goes away. Not for safety (the token fences that): so that
    a stream cut twice still records where it paused and releases its lease, rather than
    leave its resume waiting out a whole lease from an older offset. The caller still
    sees its cancellation."""
    task = asyncio.ensure_future(cleanup)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_failure)
        raise


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("an upload's clean-up failed", exc_info=task.exception())


def _size_mismatch(text: str) -> InvalidArgument:
    return InvalidArgument([("header.size", text)], reason="SIZE_MISMATCH")


def _verify(actual: str, file: VersionFile) -> None:
    if actual != file.sha256:
        raise InvalidArgument(
            [("header.sha256", f"the bytes received hash to {actual}, not {file.sha256}")],
            reason="DIGEST_MISMATCH",
        )


def _check_offset(session: UploadSession, committed: int, offset: int) -> None:
    if offset != committed:
        raise FailedPrecondition(
            f"upload {session.upload_id} has {committed} bytes committed; resume from there,"
            f" not from {offset}",
            reason="OFFSET_MISMATCH",
            metadata={"upload_id": session.upload_id, "committed_size": str(committed)},
        )


async def _check_slot(tx: ArtifactTransaction, header: UploadHeader) -> None:
    """The path must be free or hold the same bytes, and the version must have room."""
    existing = await tx.find_file(version=header.version, path=header.file.path)
    if existing is not None and existing != header.file:
        raise AlreadyExists(file_name(header.version, header.file.path))
    if existing is None and await tx.count_files(version=header.version) >= MAX_FILES:
        raise ResourceExhausted(
            f"{header.version.name} already has {MAX_FILES} files",
            reason="TOO_MANY_FILES",
            metadata={"resource": header.version.name},
        )


def _file_event(key: VersionKey, file: VersionFile, actor: str) -> Event:
    return Event(
        EventKind.FILE_ADDED,
        key,
        actor,
        after={"path": file.path, "size": file.size, "sha256": file.sha256},
        latest_moved=False,  # the version is PENDING: `latest` counts only READY ones
    )
