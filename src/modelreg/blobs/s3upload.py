"""One stream's upload into the S3 blob store: a buffer cut into parts, hashed in a
thread, uploaded concurrently; each growth of the completed prefix is offered to the
stream to record, and the upload completes with the parts the stream recorded.

The module docstring of blobs/s3.py tells the whole story; this is its moving part.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable

from modelreg.blobs.s3bucket import S3Bucket
from modelreg.blobs.sha256 import Sha256
from modelreg.domain.errors import NotFound, Unavailable
from modelreg.domain.types import Part, UploadProgress


class S3Upload:
    """The StagedBlob of the S3 store; continues the multipart upload `resume` names."""

    def __init__(
        self,
        bucket: S3Bucket,
        sha256: str,
        size: int,
        part_size: int,
        *,
        concurrency: int,
        on_progress: Callable[[UploadProgress], None],
        resume: UploadProgress,
        hasher: Sha256,
    ) -> None:
        self._bucket, self._sha256, self._size, self._part_size = bucket, sha256, size, part_size
        self._multipart = size > part_size
        self._on_progress = on_progress
        self._hasher = hasher
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._tail: bytes | None = None  # a single-part file's bytes, once finished
        self._upload_id = resume.staging or None
        self._parts = {p.number: p for p in resume.parts}
        self._next_part = len(resume.parts) + 1
        # Hash state after each count of parts a record may still need.
        self._snapshots: dict[int, Sha256] = {len(resume.parts): hasher.copy()}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._failure: Unavailable | None = None

    @property
    def progress(self) -> UploadProgress:
        count = self._contiguous()
        if not count:
            return UploadProgress(staging=self._upload_id or "")
        state = self._snapshots[count].save()
        if state is None:  # no libcrypto: a resume elsewhere starts this upload over
            return UploadProgress(staging=self._upload_id or "")
        parts = tuple(self._parts[n] for n in range(1, count + 1))
        committed = min(count * self._part_size, self._size)
        return UploadProgress(committed, self._upload_id or "", state, parts)

    async def write(self, data: bytes) -> None:
        self._raise_failure()
        self._buffer.append(data)
        self._buffered += len(data)
        while self._multipart and self._buffered >= self._part_size:
            await self._send_part(self._take(self._part_size))

    async def finish(self) -> tuple[str, UploadProgress]:
        tail = self._take(self._buffered)
        await asyncio.to_thread(self._hasher.update, tail)
        digest = self._hasher.hexdigest()
        if not self._multipart:
            self._tail = tail
            return digest, UploadProgress(self._size)
        if tail or not self._parts:
            await self._send_part(tail, hashed=True)
        await self._settle()
        self._raise_failure()  # the stream then pauses: the parts that landed are kept
        count = self._contiguous()
        if count != len(self._parts) or count * self._part_size < self._size:
            raise Unavailable("parts of the upload are missing", reason="UPLOAD_INCOMPLETE")
        parts = tuple(self._parts[n] for n in range(1, count + 1))
        return digest, UploadProgress(self._size, self._upload_id or "", parts=parts)

    async def publish(self, progress: UploadProgress) -> None:
        if not self._multipart:
            assert self._tail is not None, "publish before finish"
            await self._bucket.put(self._sha256, self._tail)
            return
        try:
            await self._bucket.complete_multipart(self._sha256, progress.staging, progress.parts)
        except NotFound:
            raise _upload_expired() from None

    async def pause(self) -> UploadProgress:
        await self._settle()
        self._buffer, self._buffered, self._tail = [], 0, None
        return self.progress

    async def discard(self) -> None:
        await self._settle()
        self._buffer, self._buffered = [], 0
        if self._upload_id is not None:
            await self._bucket.abort_multipart(self._sha256, self._upload_id)
        self._upload_id, self._parts = None, {}

    def _take(self, count: int) -> bytes:
        joined = b"".join(self._buffer)
        part, rest = joined[:count], joined[count:]
        self._buffer, self._buffered = ([rest] if rest else []), len(rest)
        return part

    async def _send_part(self, part: bytes, *, hashed: bool = False) -> None:
        checksum = await asyncio.to_thread(self._absorb, part, hashed)
        if self._upload_id is None:
            self._upload_id = await self._bucket.create_multipart(self._sha256)
        number, self._next_part = self._next_part, self._next_part + 1
        self._snapshots[number] = self._hasher.copy()
        await self._slots.acquire()
        task = asyncio.create_task(self._upload_part(number, part, checksum))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _absorb(self, part: bytes, hashed: bool) -> str:
        """Hash the part into the file's digest (unless done) and return its own checksum."""
        if not hashed:
            self._hasher.update(part)
        return base64.b64encode(hashlib.sha256(part).digest()).decode()

    async def _upload_part(self, number: int, part: bytes, checksum: str) -> None:
        try:
            etag = await self._bucket.upload_part(
                self._sha256, self._upload_id or "", number, part, checksum
            )
        except NotFound:  # the multipart upload was aborted (a lifecycle rule, a discard)
            self._failure = _upload_expired()
        except Unavailable as exc:
            self._failure = exc
        else:
            before = self._contiguous()
            self._parts[number] = Part(number, len(part), etag, checksum)
            count = self._contiguous()
            if count > before:
                self._snapshots = {n: s for n, s in self._snapshots.items() if n >= count}
                if count * self._part_size < self._size:  # the whole file: finish records it
                    self._on_progress(self.progress)
        finally:
            self._slots.release()

    def _contiguous(self) -> int:
        count = 0
        while count + 1 in self._parts:
            count += 1
        return count

    async def _settle(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _upload_expired() -> Unavailable:
    return Unavailable(
        "the staged upload no longer holds the bytes recorded for it; it starts again from 0",
        reason="UPLOAD_EXPIRED",
    )
