"""FilesystemBlobStore: blobs as files `sha256/ab/cdef…` under a root directory.

Each stream stages its bytes in a file of its own, `uploads/<key>.<lease token>`, and
offers its progress (bytes written up to the last 64-byte block, with the SHA-256 state
there) for the stream to record in the database. A resume copies the recorded prefix
of the recorded file into its own new file, re-hashing it against the recorded state
(a file that changed, or lost its tail in a crash, is not used: the upload starts
again). Publishing is an fsync and a rename of the stream's own file, after its
stream recorded it whole, so a blob file either is whole or does not exist, and a stale
stream can only ever write its own file. Writes and hashing run in worker threads
(OpenSSL and file writes release the GIL), and the thread absorbing one batch overlaps
the event loop receiving the next.

A download maps the blob 8 MiB at a time and hands out views of the mapping, which the
servicer copies once, straight into the message: measured at 1.0-1.1 s of server CPU
per GiB, as cheap as a raw gRPC stream of bytes already in memory, against 1.6-2.1 s
for reads into buffers in a worker thread (one more copy, and thread hand-offs). The
kernel is asked to read the next window while this one is sent (POSIX_FADV_WILLNEED),
so a page fault on the event loop is rare unless the disk is slower than the network;
mapping a window, not the file, keeps the pages a download has mapped (and its RSS) at
8 MiB whatever the file's size. Blobs are immutable and replaced only by rename, so a
mapping never sees a file shrink under it; one deleted while mapped stays readable
until the download ends. A media error under a mapping is a SIGBUS that ends the
worker, though: `mapped_reads=False` (MODELREG_BLOB_READ=pread) reads each window with pread
in a worker thread instead, for filesystems where that is a risk (NFS, failing disks).
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from modelreg.blobs.sha256 import BLOCK, Sha256
from modelreg.domain.errors import NotFound, ResourceExhausted, Unavailable
from modelreg.domain.ports import Pieces
from modelreg.domain.types import UploadProgress

CHUNK_SIZE = 256 * 1024  # download message size (DESIGN.md §9: 256 KiB is the sweet spot)
BATCH_SIZE = 4 * 1024 * 1024  # bytes gathered before one thread call writes and hashes them
WINDOW = 8 * 1024 * 1024  # bytes of a blob a download maps at a time, and reads ahead


class FilesystemBlobStore:
    """The BlobStore port on a local directory (the server's home by default)."""

    def __init__(
        self, root: Path, *, chunk_size: int = CHUNK_SIZE, mapped_reads: bool = True
    ) -> None:
        self._root = root
        self._chunk_size = chunk_size
        self._mmap = mapped_reads  # False: downloads read windows with pread in a worker thread
        for folder in ("sha256", "uploads"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def disk(self) -> tuple[int, int]:
        """(free, total) bytes of the file system the blobs are on."""
        usage = shutil.disk_usage(self._root)
        return usage.free, usage.total

    def blob_path(self, sha256: str) -> Path:
        """Where the blob `sha256` lives."""
        return self._root / "sha256" / sha256[:2] / sha256[2:]

    def staged_path(self, key: str, token: int) -> Path:
        """Where the stream holding lease `token` stages the upload `key`."""
        return self._root / "uploads" / f"{key}.{token}"

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        return await asyncio.to_thread(self._sizes, digests)

    def _sizes(self, digests: Sequence[str]) -> dict[str, int]:
        found = {}
        with _translated():
            for digest in digests:
                try:
                    found[digest] = self.blob_path(digest).stat().st_size
                except FileNotFoundError:
                    continue
        return found

    async def open_upload(
        self,
        *,
        key: str,
        sha256: str,
        size: int,
        token: int,
        resume: UploadProgress,
        on_progress: Callable[[UploadProgress], None],
    ) -> FileUpload:
        path = self.staged_path(key, token)
        file, hasher, progress = await asyncio.to_thread(_start, path, resume)
        return FileUpload(file, hasher, progress, self.blob_path(sha256), size, on_progress)

    async def discard_upload(self, *, key: str, sha256: str, staged: UploadProgress) -> None:
        with _translated():
            await asyncio.to_thread(_unlink_all, self._root / "uploads", key)

    async def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
        if limit == 0:
            return
        try:
            fd = await asyncio.to_thread(os.open, self.blob_path(sha256), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"blobs/sha256:{sha256}", reason="BLOB_MISSING") from None
        try:
            with _translated():
                if os.fstat(fd).st_size < offset + limit:
                    raise Unavailable("a blob is shorter than its record", reason="BLOB_TRUNCATED")
            window = self._chunk_size * max(1, WINDOW // self._chunk_size)
            end = offset + limit
            _read_ahead(fd, offset, min(window, limit))
            for start in range(offset, end, window):
                length = min(window, end - start)
                _read_ahead(fd, start + length, min(window, end - start - length))
                if self._mmap:
                    view = _mapped(fd, start, length)
                else:
                    view = memoryview(await asyncio.to_thread(_pread_window, fd, start, length))
                for at in range(0, length, self._chunk_size):
                    yield (view[at : at + self._chunk_size],)
        finally:
            os.close(fd)  # the mappings outlive it; each goes when its last view does

    async def delete(self, *, sha256: str) -> None:
        with _translated():
            await asyncio.to_thread(self.blob_path(sha256).unlink, missing_ok=True)


class FileUpload:
    """One stream's staging file: batches are written and hashed in a thread, one batch
    in flight; the hash state at the last 64-byte boundary written is the durable
    progress (the few bytes after it are sent again on a resume)."""

    def __init__(  # noqa: PLR0917
        self,
        file: BinaryIO,
        hasher: Sha256,
        progress: UploadProgress,
        final: Path,
        size: int,
        on_progress: Callable[[UploadProgress], None],
    ) -> None:
        self._file, self._path, self._final, self._size = file, Path(file.name), final, size
        self._hasher, self._on_progress = hasher, on_progress
        self._progress = progress
        self._hashed = progress.committed_size
        self._batch: list[bytes] = []
        self._batched = 0
        self._in_flight: asyncio.Future[None] | None = None

    @property
    def progress(self) -> UploadProgress:
        return self._progress

    async def write(self, data: bytes) -> None:
        self._batch.append(data)
        self._batched += len(data)
        if self._batched >= BATCH_SIZE:
            await self._send_batch()

    async def finish(self) -> tuple[str, UploadProgress]:
        await self._drain()
        with _translated():
            await asyncio.to_thread(_sync_and_close, self._file)
        return self._hasher.hexdigest(), UploadProgress(self._size, self._path.name)

    async def publish(self, progress: UploadProgress) -> None:
        try:
            with _translated():
                staged = self._path.with_name(progress.staging)
                await asyncio.to_thread(_publish, staged, self._final)
        except FileNotFoundError:  # dropped (FailModelVersion) while this stream stalled
            raise Unavailable(
                "the staged upload is gone; it starts again from 0", reason="UPLOAD_EXPIRED"
            ) from None

    async def pause(self) -> UploadProgress:
        try:
            await self._drain()
        finally:  # even if cancelled: the thread closes the file however the await ends
            with _translated():
                await asyncio.to_thread(_sync_and_close, self._file)
        return self._progress

    async def discard(self) -> None:
        if self._in_flight is not None:
            await asyncio.gather(self._in_flight, return_exceptions=True)
        self._file.close()
        with _translated():
            await asyncio.to_thread(self._path.unlink, missing_ok=True)

    async def _send_batch(self) -> None:
        if self._in_flight is not None:
            # Shielded: a cancelled caller must not cancel the batch's future, or the
            # close that follows could not wait for the thread still writing it.
            await asyncio.shield(self._in_flight)
        if not self._batch:
            return
        batch, self._batch, self._batched = self._batch, [], 0
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._absorb, batch))
        self._in_flight.add_done_callback(self._landed)

    async def _drain(self) -> None:
        await self._send_batch()
        if self._in_flight is not None:
            await asyncio.shield(self._in_flight)
            self._in_flight = None

    def _landed(self, batch: asyncio.Future[None]) -> None:
        if not batch.cancelled() and batch.exception() is None:
            self._on_progress(self._progress)

    def _absorb(self, batch: list[bytes]) -> None:
        """Write and hash a batch (in a worker thread); the progress moves to the last
        block boundary in it, with the hash state there."""
        with _translated():
            for data in batch:
                self._file.write(data)
            self._file.flush()
        end = self._hashed + sum(len(d) for d in batch)
        boundary = end - end % BLOCK
        for data in batch:
            start = self._hashed
            head = boundary - start
            if 0 < head < len(data):  # the boundary falls inside: hash up to it, mark it
                self._hasher.update(data[:head])
                self._mark(boundary)
                self._hasher.update(data[head:])
            else:
                self._hasher.update(data)
                if head == len(data) and head:
                    self._mark(boundary)
            self._hashed += len(data)

    def _mark(self, committed: int) -> None:
        self._progress = UploadProgress(committed, self._path.name, self._hasher.save())


def _start(path: Path, resume: UploadProgress) -> tuple[BinaryIO, Sha256, UploadProgress]:
    """Create this stream's staging file, with the recorded prefix copied into it if the
    file that holds it still does (re-hashed, checked against the recorded hash state);
    else empty. Its hasher, and where it starts."""
    with _translated():
        file = path.open("wb")
        if resume.committed_size and resume.staging:
            source = path.with_name(Path(resume.staging).name)
            hasher = _copy_prefix(source, file, resume)
            if hasher is not None:
                source.unlink(missing_ok=True)  # its stream is done with it, or refused
                state = hasher.save()
                return file, hasher, UploadProgress(resume.committed_size, path.name, state)
            file.seek(0)
            file.truncate()
    return file, Sha256(), UploadProgress()


def _copy_prefix(source: Path, into: BinaryIO, resume: UploadProgress) -> Sha256 | None:
    """Copy the first `committed_size` bytes of `source`, hashing them; None if there are
    fewer, or they do not hash to the recorded state."""
    hasher, left = Sha256(), resume.committed_size
    try:
        with source.open("rb") as staged:
            while left and (block := staged.read(min(BATCH_SIZE, left))):
                hasher.update(block)
                into.write(block)
                left -= len(block)
    except FileNotFoundError:
        return None
    into.flush()
    if left or (resume.hash_state is not None and hasher.save() != resume.hash_state):
        return None
    return hasher


def _unlink_all(folder: Path, key: str) -> None:
    for staged in folder.glob(f"{key}.*"):
        staged.unlink(missing_ok=True)


def _publish(staged: Path, final: Path) -> None:
    """Rename the synced staging file into place and fsync the directory."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _sync_and_close(file: BinaryIO) -> None:
    if file.closed:
        return
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _mapped(fd: int, start: int, length: int) -> memoryview:
    """A view of [start, start + length) of the file, through a mapping of just that
    window (mappings start on a page boundary)."""
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    with _translated():
        window = mmap.mmap(fd, length + start - aligned, access=mmap.ACCESS_READ, offset=aligned)
    return memoryview(window)[start - aligned :]


def _pread_window(fd: int, start: int, length: int) -> bytes:
    """[start, start + length) of the file, read (an I/O error is an exception here, not
    the SIGBUS a mapping would raise)."""
    with _translated():
        data = os.pread(fd, length, start)
    if len(data) < length:
        raise Unavailable("a blob is shorter than its record", reason="BLOB_TRUNCATED")
    return data


def _read_ahead(fd: int, start: int, length: int) -> None:
    """Have the kernel start reading [start, start + length) from disk, without waiting."""
    if length > 0:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)


@contextmanager
def _translated() -> Iterator[None]:
    """OSError -> ResourceExhausted (disk full) or Unavailable."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ResourceExhausted("the blob store is full", reason="BLOB_STORE_FULL") from exc
        raise Unavailable(
            "the blob store cannot be written or read; retry later",
            reason="BLOB_STORE_UNAVAILABLE",
        ) from exc
