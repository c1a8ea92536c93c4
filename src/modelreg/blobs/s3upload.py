"""One upload into the S3 blob store: a buffer cut into parts, hashed in a thread,
uploaded concurrently, checkpointed whenever the completed prefix grows.

The module docstring of blobs/s3.py tells the whole story; this is its moving part.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelreg.blobs.sha256 import Sha256
from modelreg.domain.errors import NotFound, Unavailable
from modelreg.domain.leases import lease_lost

if TYPE_CHECKING:
    from modelreg.blobs.s3 import S3BlobStore

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a paused multipart upload needs to go on: its id, its first parts, and the
    file's hash state at the end of them (None when libcrypto is not in use)."""

    sha256: str
    size: int
    part_size: int
    upload_id: str
    parts: tuple[tuple[int, str, str], ...]  # (number, ETag, ChecksumSHA256): 1..n in order
    hash_state: bytes | None

    @property
    def committed(self) -> int:
        return min(len(self.parts) * self.part_size, self.size)

    def matches(self, sha256: str, size: int) -> bool:
        """Whether this checkpoint is of that blob and size."""
        return (self.sha256, self.size) == (sha256, size)

    def to_json(self) -> bytes:
        state = None if self.hash_state is None else base64.b64encode(self.hash_state).decode()
        document = {
            "format": CHECKPOINT_FORMAT,
            "sha256": self.sha256,
            "size": self.size,
            "part_size": self.part_size,
            "upload_id": self.upload_id,
            "parts": [list(part) for part in self.parts],
            "hash_state": state,
        }
        return json.dumps(document).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint | None:
        """The checkpoint, or None for a document this version does not understand."""
        try:
            doc = json.loads(data)
            if doc.get("format") != CHECKPOINT_FORMAT:
                return None
            parts = tuple((int(n), str(etag), str(sum_)) for n, etag, sum_ in doc["parts"])
            state = doc["hash_state"]
            return cls(
                str(doc["sha256"]),
                int(doc["size"]),
                int(doc["part_size"]),
                str(doc["upload_id"]),
                parts,
                None if state is None else base64.b64decode(state),
            )
        except (ValueError, KeyError, TypeError):
            return None


class S3Upload:
    """The StagedBlob of the S3 store; `resume` continues a checkpointed upload."""

    def __init__(
        self,
        store: S3BlobStore,
        key: str,
        sha256: str,
        size: int,
        part_size: int,
        *,
        held: Callable[[], bool],
        resume: Checkpoint | None = None,
        hasher: Sha256 | None = None,
    ) -> None:
        self._store, self._key, self._sha256 = store, key, sha256
        self._object_key = store.object_key(sha256)
        self._size, self._part_size, self._held = size, part_size, held
        self._multipart = size > part_size
        self._hasher = hasher if hasher is not None else Sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upload_id = resume.upload_id if resume else None
        parts = resume.parts if resume else ()
        self._parts = {n: _part(n, etag, checksum) for n, etag, checksum in parts}
        self._next_part = len(parts) + 1
        # Hash state after each part not yet checkpointed: a checkpoint saves one of them.
        self._snapshots: dict[int, Sha256] = {len(parts): self._hasher.copy()}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(store.concurrency)
        self._committed = self._checkpointed = resume.committed if resume else 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._last_part: bytes | None = None
        self._fenced = False  # set by abandon: another stream owns the upload now

    @property
    def committed_size(self) -> int:
        return self._committed

    async def write(self, data: bytes) -> None:
        self._raise_failure()
        self._buffer.append(data)
        self._buffered += len(data)
        while self._multipart and self._buffered >= self._part_size:
            await self._send_part(self._take(self._part_size))

    async def sha256(self) -> str:
        tail = self._take(self._buffered)
        await asyncio.to_thread(self._hasher.update, tail)
        self._last_part = tail
        return self._hasher.hexdigest()

    async def commit(self) -> None:
        tail = self._last_part if self._last_part is not None else self._take(self._buffered)
        if not self._multipart:
            await self._store.put(self._sha256, tail)
            return
        if tail or not self._parts:
            await self._send_part(tail, hashed=True)
        await self._settle()
        self._raise_failure()  # the stream then pauses: the parts that landed are kept
        await self._complete()

    async def close(self) -> int:
        await self._settle()
        self._buffer, self._buffered, self._last_part = [], 0, None
        if _expired(self._failure) or self._committed == 0:
            await self.discard()  # nothing worth resuming, or the multipart upload is gone
            return 0
        self._request_checkpoint()
        await self._stop_checkpoints()
        self._store.keep_hasher(self._key, self._checkpointed, self._snapshot(self._checkpointed))
        return self._checkpointed

    async def abandon(self) -> None:
        self._fenced = True  # no checkpoint of ours may land over the new owner's
        if self._checkpointing is not None:
            self._checkpointing.cancel()
        await self._settle()  # parts in flight carry the same bytes the new owner sends
        await self._stop_checkpoints()
        self._buffer, self._buffered, self._last_part = [], 0, None

    async def discard(self) -> None:
        await self._settle()
        await self._stop_checkpoints()
        self._buffer, self._buffered = [], 0
        await self._store.abandon(self._key, self._sha256, self._upload_id)
        self._upload_id, self._parts, self._committed = None, {}, 0

    def _take(self, count: int) -> bytes:
        joined = b"".join(self._buffer)
        part, rest = joined[:count], joined[count:]
        self._buffer, self._buffered = ([rest] if rest else []), len(rest)
        return part

    async def _send_part(self, part: bytes, *, hashed: bool = False) -> None:
        checksum = await asyncio.to_thread(self._absorb, part, hashed)
        if self._upload_id is None:
            self._upload_id = await self._store.create_multipart(self._sha256)
        number, self._next_part = self._next_part, self._next_part + 1
        self._snapshots[number] = self._hasher.copy()
        await self._slots.acquire()
        if not self._held():  # checked after the wait for a slot, right before the send
            self._slots.release()
            raise lease_lost()
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
            etag = await self._store.upload_part(
                self._sha256, self._upload_id or "", number, part, checksum
            )
            self._parts[number] = _part(number, etag, checksum)
            self._committed = self._contiguous()
            if self._committed < self._size:
                self._request_checkpoint()
        except NotFound:  # the multipart upload was aborted (a lifecycle rule, another discard)
            self._failure = _upload_expired()
        except Unavailable as exc:
            self._failure = exc
        finally:
            self._slots.release()

    def _contiguous(self) -> int:
        count = 0
        while count + 1 in self._parts:
            count += 1
        return min(count * self._part_size, self._size)

    def _snapshot(self, offset: int) -> Sha256:
        return self._snapshots[offset // self._part_size]

    def _request_checkpoint(self) -> None:
        if self._fenced:
            return
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = asyncio.create_task(self._write_checkpoints())

    async def _write_checkpoints(self) -> None:
        """Record the completed prefix until it stops growing: one write at a time, so an
        older checkpoint never lands over a newer one."""
        while self._checkpointed < self._committed < self._size and self._upload_id:
            if self._fenced:
                return
            count = self._committed // self._part_size
            parts = tuple(
                (n, self._parts[n]["ETag"], self._parts[n]["ChecksumSHA256"])
                for n in range(1, count + 1)
            )
            state = self._snapshots[count].save()
            checkpoint = Checkpoint(
                self._sha256, self._size, self._part_size, self._upload_id, parts, state
            )
            try:
                await self._store.save_checkpoint(self._key, checkpoint)
            except Unavailable:
                return  # a resume starts from the last checkpoint that landed
            self._checkpointed = checkpoint.committed
            self._snapshots = {n: s for n, s in self._snapshots.items() if n >= count}

    async def _stop_checkpoints(self) -> None:
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
            self._checkpointing = None

    async def _settle(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _complete(self) -> None:
        await self._stop_checkpoints()  # none may land after the upload is completed
        if self._contiguous() != self._size:  # never publish a digest over missing parts
            raise Unavailable("parts of the upload are missing", reason="UPLOAD_INCOMPLETE")
        parts = [self._parts[n] for n in sorted(self._parts)]
        try:
            await self._store.complete_multipart(self._sha256, self._upload_id or "", parts)
        except NotFound:
            self._failure = _upload_expired()
            raise self._failure from None
        self._upload_id = None
        await self._store.forget_upload(self._key)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _upload_expired() -> Unavailable:
    return Unavailable(
        "the staged upload expired in the blob store; it starts again from 0",
        reason="UPLOAD_EXPIRED",
    )


def _expired(failure: BaseException | None) -> bool:
    return isinstance(failure, Unavailable) and failure.reason == "UPLOAD_EXPIRED"


def _part(number: int, etag: str, checksum: str) -> dict[str, Any]:
    return {"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum}
