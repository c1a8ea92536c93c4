"""S3BlobStore: blobs as objects `<prefix>sha256/ab/cdef…` in a bucket, via aioboto3.

A file up to one part is sent with one PutObject at commit. A larger one is a
multipart upload straight to its final key (invisible until completed): parts of
at least 8 MiB, each with its SHA-256 checksum, at most `concurrency` in flight.
A wrong digest or a failed part aborts the multipart upload. A cut stream keeps
the completed parts; the tail not yet in a part is dropped, and the paused state
(upload id, parts, hash state) lives in this process, so a resume must reach the
same process (otherwise it starts again from 0; a bucket lifecycle rule that
aborts incomplete multipart uploads cleans such leftovers).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelreg.domain.errors import NotFound, Unavailable

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
MAX_PARTS = 10_000  # S3's limit
CONCURRENCY = 4  # parts in flight per upload: memory is about (CONCURRENCY + 1) parts
CHUNK_SIZE = 256 * 1024
_ABSENT = ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    """The BlobStore port on an S3 bucket; `client` is an aioboto3 S3 client, already open."""

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        prefix: str = "",
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._part_size = part_size
        self._concurrency = concurrency
        self._chunk_size = chunk_size
        self._paused: dict[str, S3Upload] = {}

    def object_key(self, sha256: str) -> str:
        """The key of the blob `sha256`."""
        return f"{self._prefix}sha256/{sha256[:2]}/{sha256[2:]}"

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        slots = asyncio.Semaphore(16)

        async def head(digest: str) -> tuple[str, int | None]:
            async with slots:
                return digest, await self._size(digest)

        found = await asyncio.gather(*(head(d) for d in digests))
        return {digest: size for digest, size in found if size is not None}

    async def _size(self, sha256: str) -> int | None:
        try:
            with _translated(sha256):
                reply = await self._client.head_object(
                    Bucket=self._bucket, Key=self.object_key(sha256)
                )
        except NotFound:
            return None
        return int(reply["ContentLength"])

    async def open_upload(self, *, key: str, sha256: str, size: int) -> S3Upload:
        paused = self._paused.pop(key, None)
        if paused is not None and paused.matches(sha256, size):
            return paused
        if paused is not None:
            await paused.discard()
        return S3Upload(self, key, sha256, size, self._part_size_for(size))

    def _part_size_for(self, size: int) -> int:
        needed = -(-size // MAX_PARTS)
        return max(self._part_size, -(-needed // MiB) * MiB)

    async def staged_size(self, *, key: str) -> int:
        paused = self._paused.get(key)
        return 0 if paused is None else paused.committed_size

    async def discard_upload(self, *, key: str) -> None:
        paused = self._paused.pop(key, None)
        if paused is not None:
            await paused.discard()

    async def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[bytes]:
        if limit == 0:
            return
        with _translated(sha256):
            reply = await self._client.get_object(
                Bucket=self._bucket,
                Key=self.object_key(sha256),
                Range=f"bytes={offset}-{offset + limit - 1}",
            )
        body = reply["Body"]
        try:
            while chunk := await _read_full(body, self._chunk_size):
                yield chunk
        finally:
            body.close()  # a download cut early must not leave the connection half-read

    async def delete(self, *, sha256: str) -> None:
        with _translated():
            await self._client.delete_object(Bucket=self._bucket, Key=self.object_key(sha256))

    def pause(self, key: str, upload: S3Upload) -> None:
        """Keep a paused upload for a resume in this process (S3Upload calls this)."""
        self._paused[key] = upload

    @property
    def client(self) -> Any:
        return self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def concurrency(self) -> int:
        return self._concurrency


class S3Upload:
    """One staged upload: a buffer cut into parts, hashed in a thread, uploaded concurrently."""

    def __init__(
        self, store: S3BlobStore, key: str, sha256: str, size: int, part_size: int
    ) -> None:
        self._store, self._key, self._sha256 = store, key, sha256
        self._object_key = store.object_key(sha256)
        self._size, self._part_size = size, part_size
        self._multipart = size > part_size
        self._hasher = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}  # number -> ETag, ChecksumSHA256
        self._next_part = 1
        # Hash state after each part, so a pause can rewind it to the committed offset.
        self._snapshots: dict[int, tuple[Any, int]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(store.concurrency)
        self._committed = 0
        self._hashed = 0
        self._failure: BaseException | None = None
        self._last_part: bytes | None = None

    def matches(self, sha256: str, size: int) -> bool:
        """Whether this paused upload is for that blob and size."""
        return (self._sha256, self._size) == (sha256, size)

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
        self._hashed += len(tail)
        self._last_part = tail
        return self._hasher.hexdigest()

    async def commit(self) -> None:
        tail = self._last_part if self._last_part is not None else self._take(self._buffered)
        if not self._multipart:
            await self._put(tail)
            return
        try:
            if tail or not self._parts:
                await self._send_part(tail, hashed=True)
            await self._settle()
            self._raise_failure()
            await self._complete()
        except Unavailable:
            await self.discard()
            raise

    async def close(self) -> int:
        await self._settle()
        self._buffer, self._buffered, self._last_part = [], 0, None
        if self._failure is not None:
            await self.discard()
            return 0
        # The hash state must stand exactly at the committed offset: re-hash is impossible
        # (S3 cannot read back parts), so a resume continues from the snapshot.
        self._hasher, self._hashed = self._snapshot_at(self._committed)
        self._store.pause(self._key, self)
        return self._committed

    async def discard(self) -> None:
        await self._settle()
        self._buffer, self._buffered = [], 0
        if self._upload_id is not None:
            with _translated():
                await self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._object_key, UploadId=self._upload_id
                )
        self._upload_id, self._parts, self._committed = None, {}, 0
        self._next_part, self._snapshots = 1, {}
        self._hasher, self._hashed = hashlib.sha256(), 0

    def _take(self, count: int) -> bytes:
        joined = b"".join(self._buffer)
        part, rest = joined[:count], joined[count:]
        self._buffer, self._buffered = ([rest] if rest else []), len(rest)
        return part

    async def _send_part(self, part: bytes, *, hashed: bool = False) -> None:
        checksum = await asyncio.to_thread(self._absorb, part, hashed)
        if self._upload_id is None:
            with _translated():
                reply = await self._store.client.create_multipart_upload(
                    Bucket=self._store.bucket, Key=self._object_key, ChecksumAlgorithm="SHA256"
                )
            self._upload_id = reply["UploadId"]
        number, self._next_part = self._next_part, self._next_part + 1
        self._snapshots[number] = (self._hasher.copy(), self._hashed)
        await self._slots.acquire()
        task = asyncio.create_task(self._upload_part(number, part, checksum))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _absorb(self, part: bytes, hashed: bool) -> str:
        """Hash the part into the file's digest (unless done) and return its own checksum."""
        if not hashed:
            self._hasher.update(part)
            self._hashed += len(part)
        return base64.b64encode(hashlib.sha256(part).digest()).decode()

    async def _upload_part(self, number: int, part: bytes, checksum: str) -> None:
        try:
            with _translated():
                reply = await self._store.client.upload_part(
                    Bucket=self._store.bucket,
                    Key=self._object_key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=part,
                    ChecksumSHA256=checksum,
                )
            self._parts[number] = {
                "PartNumber": number,
                "ETag": reply["ETag"],
                "ChecksumSHA256": checksum,
            }
            self._committed = self._contiguous()
        except Unavailable as exc:
            self._failure = exc
        finally:
            self._slots.release()

    def _contiguous(self) -> int:
        count = 0
        while count + 1 in self._parts:
            count += 1
        return min(count * self._part_size, self._size)

    def _snapshot_at(self, offset: int) -> tuple[Any, int]:
        if offset == 0:
            return hashlib.sha256(), 0
        number = -(-offset // self._part_size)
        hasher, hashed = self._snapshots[number]
        # Parts past the committed ones (none once every part has settled) are sent again.
        self._parts = {n: p for n, p in self._parts.items() if n <= number}
        self._snapshots = {number: (hasher, hashed)}
        self._next_part = number + 1
        return hasher.copy(), hashed

    async def _settle(self) -> None:
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _complete(self) -> None:
        parts = [self._parts[n] for n in sorted(self._parts)]
        with _translated():
            await self._store.client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        self._upload_id = None

    async def _put(self, data: bytes) -> None:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        with _translated():
            await self._store.client.put_object(
                Bucket=self._store.bucket,
                Key=self._object_key,
                Body=data,
                ChecksumSHA256=checksum,
            )

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


async def _read_full(body: Any, size: int) -> bytes:
    """The next `size` bytes of a response body (fewer only at its end). aiohttp hands
    out whatever the socket delivered, often a few KiB; gathering whole chunks keeps
    download messages at the size they are tuned for."""
    pieces: list[bytes] = []
    wanted = size
    with _translated():
        while wanted and (piece := await body.read(wanted)):
            pieces.append(piece)
            wanted -= len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


@contextmanager
def _translated(sha256: str = "") -> Iterator[None]:
    """botocore errors -> NotFound (absent object) or Unavailable."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _ABSENT:
            raise NotFound(f"blobs/sha256:{sha256}", reason="BLOB_MISSING") from exc
        raise Unavailable(
            f"the S3 blob store refused the request ({code}); retry later",
            reason="BLOB_STORE_UNAVAILABLE",
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise Unavailable(
            "the S3 blob store cannot be reached; retry later", reason="BLOB_STORE_UNAVAILABLE"
        ) from exc
