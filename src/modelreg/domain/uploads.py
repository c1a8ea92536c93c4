"""Uploads: one file of a PENDING version streamed into the blob store, resumable.

An upload streams into a staged blob, hashed as it arrives; only when size and sha256
match is the blob published (content-addressed, so the same bytes are stored once) and
the file added to the version. A cut stream keeps what the blob store holds durably
(`committed_size`) and resumes from there, in any server process.

While a stream runs, its process holds a lease on the upload (domain/leases.py): a
resume that reaches another worker or replica while the first stream is still alive
(the client's side of a cut is often seen first) is refused with UPLOAD_IN_PROGRESS
and retried, rather than writing the same staged bytes twice at once. A lease of a
process that died ends after `lease_seconds`; a stream that sends nothing for two
thirds of that is taken for cut (a half-open connection must not hold the upload); a
stream whose lease is no longer its own writes nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
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
from modelreg.domain.leases import UploadLease, lease_lost
from modelreg.domain.names import VersionKey
from modelreg.domain.ports import (
    ArtifactStore,
    ArtifactTransaction,
    BlobStore,
    StagedBlob,
    UploadSession,
    VersionFile,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0

_WRONG_BYTES = ("SIZE_MISMATCH", "DIGEST_MISMATCH")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
    if not _UPLOAD_ID.fullmatch(header.upload_id):
        raise InvalidArgument.field("header.upload_id", "must be 1-64 of [A-Za-z0-9_-]")
    if not 0 <= header.offset <= header.file.size:
        raise InvalidArgument.field("header.offset", "must be between 0 and the file's size")
    return header


class Uploads:
    """The upload aggregate: receive a file (or the rest of it), report progress."""

    def __init__(
        self, *, store: ArtifactStore, blobs: BlobStore, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._lease_seconds = lease_seconds

    async def upload(
        self, *, header: UploadHeader, chunks: AsyncIterator[Chunk], actor: str
    ) -> UploadStatus:
        """Receive one file (or the rest of it); commit it when size and sha256 match."""
        claimed_at = time.monotonic()  # no later than PostgreSQL's now() of the claim
        session, lease = await self._begin(check_header(header), claimed_at)
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        stream = _Stream(session, lease)
        try:
            if header.offset == 0 and await self._present(session.file):
                linked = await self._add(stream, actor, deduplicated=True)
                if linked is not None:
                    return linked
                # collected since we looked: the bytes are needed after all
            lease.start_renewing()
            if await self._receive(stream, header.offset, chunks):
                added = await self._add(stream, actor)
                if added is None:
                    raise Unavailable(
                        "the uploaded blob was collected before it was linked; upload it again",
                        reason="BLOB_COLLECTED",
                    )
                return added
        finally:
            # One shielded step: the staged bytes are closed (or left alone) *before* the
            # lease is released, however often this task is cancelled meanwhile.
            committed = await _finish_even_if_cancelled(self._end(stream))
        if committed < 0:
            raise lease_lost()
        return UploadStatus(session.file, committed, complete=False)

    async def status(self, *, version: VersionKey, upload_id: str) -> UploadStatus:
        """How many bytes of an upload are committed (the offset to resume from)."""
        session = await self._store.get_upload(version=version, upload_id=upload_id)
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        staged = await self._blobs.staged_size(key=staging_key(version, upload_id))
        return UploadStatus(session.file, staged, complete=False)

    async def _begin(
        self, header: UploadHeader, claimed_at: float
    ) -> tuple[UploadSession, UploadLease]:
        wanted = UploadSession(header.upload_id, header.version, header.file)
        owner = secrets.token_hex(8)
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=header.version, shared=True)
            require_pending(version, "uploaded to")
            session = await tx.save_upload(session=wanted)
            if session.file != header.file:
                raise InvalidArgument.field(
                    "header.upload_id", "was used for another file; choose a new upload id"
                )
            lease = UploadLease(self._store, session, owner, self._lease_seconds, claimed_at)
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
        paused early. Nothing is written once the lease is not this stream's any more."""
        session, lease = stream.session, stream.lease
        file = session.file
        key = staging_key(session.version, session.upload_id)
        staged = await self._blobs.open_upload(
            key=key, sha256=file.sha256, size=file.size, held=lease.held
        )
        stream.staged = staged
        _check_offset(session, staged.committed_size, offset)
        try:
            idle = lease.seconds * 2 / 3
            complete = await _write(staged, chunks, offset, file.size, held=lease.held, idle=idle)
            if complete:
                await _verify(staged, file)
        except RegistryError as exc:
            stream.keep = exc.reason not in _WRONG_BYTES  # a resume cannot mend those
            raise
        if not complete:
            return False
        if not await lease.confirm():
            raise lease_lost()
        await staged.commit()
        stream.published = True
        return True

    async def _end(self, stream: _Stream) -> int:
        """After a stream: stop writing (keeping what is durable, unless the lease is gone),
        then stop renewing and release. The committed size; -1 if the lease was lost."""
        lease, staged = stream.lease, stream.staged
        committed = stream.session.file.size if stream.published else -1
        try:
            if staged is not None and not stream.published:
                try:
                    committed = await self._stop(stream, staged)
                except BaseException:
                    await staged.abandon()  # whatever failed, the file is not left open
                    raise
        finally:
            await lease.stop_renewing()
            await lease.release()
        return committed

    async def _stop(self, stream: _Stream, staged: StagedBlob) -> int:
        """End a stream that did not publish: keep what is durable (or drop it, for bytes
        a resume cannot mend); -1, and nothing touched, if the lease is gone."""
        if not await stream.lease.confirm():
            await staged.abandon()
            return -1
        if not stream.keep:
            await staged.discard()
            return 0
        committed = await staged.close()
        async with self._store.transaction() as tx:
            await tx.set_upload_progress(
                version=stream.session.version,
                upload_id=stream.session.upload_id,
                committed_size=committed,
                complete=False,
                owner=stream.lease.owner,
            )
        return committed

    async def _add(
        self, stream: _Stream, actor: str, *, deduplicated: bool = False
    ) -> UploadStatus | None:
        """Link the blob as the version's file; None if it is gone (collected)."""
        session = stream.session
        file, key = session.file, session.version
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=key, shared=True)
            require_pending(version, "uploaded to")
            await tx.lock_blob(sha256=file.sha256)  # no collection until this commits
            if not await self._present(file):
                return None
            await tx.add_file(version=key, file=file)
            await tx.reserve_blob(model=key.model, sha256=file.sha256, size=file.size)
            await tx.set_upload_progress(
                version=key,
                upload_id=session.upload_id,
                committed_size=file.size,
                complete=True,
                owner=stream.lease.owner,
            )
            await tx.append_event(event=_file_event(key, file, actor))
        return UploadStatus(file, file.size, complete=True, deduplicated=deduplicated)


@dataclass(slots=True)
class _Stream:
    """One UploadFile call: its upload, its lease, and how far it got."""

    session: UploadSession
    lease: UploadLease
    staged: StagedBlob | None = None
    published: bool = False
    keep: bool = True  # False: the bytes were wrong, a resume cannot mend them


async def _write(
    staged: StagedBlob,
    chunks: AsyncIterator[Chunk],
    offset: int,
    size: int,
    *,
    held: Callable[[], bool],
    idle: float,
) -> bool:
    """Write the stream's data; True if the file is whole, False if the stream paused early.
    A stream that sends nothing for `idle` seconds is treated as cut: its client may be
    gone without the connection saying so, and it must not hold the upload."""
    position = offset
    stream = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await anext(stream, None)
        except TimeoutError:
            raise Unavailable(
                f"no data for {idle:.0f} s; the upload is paused, resume it",
                reason="UPLOAD_IDLE",
            ) from None
        if chunk is None:
            break
        if not held():
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
    as grpc does when a client goes away: a half-done clean-up would leave a file open or
    an upload claimed. The caller still sees its cancellation."""
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


async def _verify(staged: StagedBlob, file: VersionFile) -> None:
    actual = await staged.sha256()
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
    )
