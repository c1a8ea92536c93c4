"""S3BlobStore: blobs as objects `<prefix>sha256/ab/cdef…` in a bucket, via aioboto3.

A file up to one part is sent with one PutObject at commit. A larger one is a
multipart upload straight to its final key (invisible until completed): parts of
at least 8 MiB, each with its SHA-256 checksum, at most `concurrency` in flight.
A wrong digest or a failed part aborts the multipart upload.

A cut stream keeps the completed parts; the tail not yet in a part is dropped.
Whenever the completed prefix grows, a checkpoint `<prefix>uploads/<key>.json`
records the multipart upload id, the parts, and the file's hash state at that
offset (blobs/sha256.py), so any server process (another worker, another replica, a
restarted one) resumes from it. Parts finished after the last checkpoint are sent
again. A bucket lifecycle rule that aborts incomplete multipart uploads after some
days cleans up uploads that were never resumed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelreg.blobs.s3upload import Checkpoint, S3Upload
from modelreg.blobs.sha256 import Sha256
from modelreg.domain.errors import NotFound, Unavailable
from modelreg.domain.ports import Pieces

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
MAX_PARTS = 10_000  # S3's limit
CONCURRENCY = 4  # parts in flight per upload: memory is about (CONCURRENCY + 3) parts
CHUNK_SIZE = 256 * 1024
KEPT_HASHERS = 256  # hashlib states of paused uploads kept (only without libcrypto)
_ABSENT = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


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
        # Hash states of uploads this process paused, by (key, committed size): used only
        # when a checkpoint cannot carry one (the hashlib fallback of blobs/sha256.py).
        self._hashers: dict[tuple[str, int], Sha256] = {}

    def object_key(self, sha256: str) -> str:
        """The key of the blob `sha256`."""
        return f"{self._prefix}sha256/{sha256[:2]}/{sha256[2:]}"

    def checkpoint_key(self, key: str) -> str:
        """The key of the checkpoint of the upload `key`."""
        return f"{self._prefix}uploads/{key}.json"

    @property
    def concurrency(self) -> int:
        return self._concurrency

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

    async def open_upload(
        self, *, key: str, sha256: str, size: int, held: Callable[[], bool]
    ) -> S3Upload:
        checkpoint = await self._checkpoint(key)
        if checkpoint is not None:
            hasher = self._hasher_for(key, checkpoint)
            if hasher is not None and checkpoint.matches(sha256, size):
                return S3Upload(
                    self,
                    key,
                    sha256,
                    size,
                    checkpoint.part_size,
                    held=held,
                    resume=checkpoint,
                    hasher=hasher,
                )
            await self.abandon(key, checkpoint.sha256, checkpoint.upload_id)
        return S3Upload(self, key, sha256, size, self._part_size_for(size), held=held)

    def _part_size_for(self, size: int) -> int:
        needed = -(-size // MAX_PARTS)
        return max(self._part_size, -(-needed // MiB) * MiB)

    def _hasher_for(self, key: str, checkpoint: Checkpoint) -> Sha256 | None:
        if checkpoint.hash_state is not None:
            return Sha256.restore(checkpoint.hash_state)
        kept = self._hashers.get((key, checkpoint.committed))
        return None if kept is None else kept.copy()

    async def staged_size(self, *, key: str) -> int:
        checkpoint = await self._checkpoint(key)
        if checkpoint is None or self._hasher_for(key, checkpoint) is None:
            return 0
        return checkpoint.committed

    async def discard_upload(self, *, key: str) -> None:
        checkpoint = await self._checkpoint(key)
        if checkpoint is None:
            await self.forget_upload(key)
        else:
            await self.abandon(key, checkpoint.sha256, checkpoint.upload_id)

    async def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
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
            while pieces := await _read_pieces(body, self._chunk_size):
                yield pieces
        finally:
            body.close()  # a download cut early must not leave the connection half-read

    async def delete(self, *, sha256: str) -> None:
        with _translated():
            await self._client.delete_object(Bucket=self._bucket, Key=self.object_key(sha256))

    # --- what S3Upload asks of the bucket ------------------------------------------------

    async def put(self, sha256: str, data: bytes) -> None:
        """Store a blob of at most one part with one request."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        with _translated():
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self.object_key(sha256),
                Body=data,
                ChecksumSHA256=checksum,
            )

    async def create_multipart(self, sha256: str) -> str:
        """Start a multipart upload to the blob's key; its id."""
        with _translated():
            reply = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self.object_key(sha256), ChecksumAlgorithm="SHA256"
            )
        return str(reply["UploadId"])

    async def upload_part(
        self, sha256: str, upload_id: str, number: int, data: bytes, checksum: str
    ) -> str:
        """Send one part; its ETag. NotFound if the multipart upload no longer exists."""
        with _translated(sha256):
            reply = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self.object_key(sha256),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
        return str(reply["ETag"])

    async def complete_multipart(
        self, sha256: str, upload_id: str, parts: list[dict[str, Any]]
    ) -> None:
        """Publish the blob from its parts."""
        with _translated():
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self.object_key(sha256),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )

    async def save_checkpoint(self, key: str, checkpoint: Checkpoint) -> None:
        """Record how far the upload `key` got."""
        with _translated():
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self.checkpoint_key(key),
                Body=checkpoint.to_json(),
                ContentType="application/json",
            )

    def keep_hasher(self, key: str, committed: int, hasher: Sha256) -> None:
        """Keep a paused upload's hash state in this process, for when its checkpoint
        cannot carry it."""
        if hasher.save() is None:
            self._hashers[(key, committed)] = hasher.copy()
            while len(self._hashers) > KEPT_HASHERS:  # the oldest go first
                del self._hashers[next(iter(self._hashers))]

    async def abandon(self, key: str, sha256: str, upload_id: str | None) -> None:
        """Abort the multipart upload (if any) and forget the upload `key`."""
        if upload_id is not None:
            with contextlib.suppress(NotFound), _translated():
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self.object_key(sha256), UploadId=upload_id
                )
        await self.forget_upload(key)

    async def forget_upload(self, key: str) -> None:
        """Drop the checkpoint and any kept hash state of the upload `key`."""
        self._hashers = {k: h for k, h in self._hashers.items() if k[0] != key}
        with _translated():
            await self._client.delete_object(Bucket=self._bucket, Key=self.checkpoint_key(key))

    async def _checkpoint(self, key: str) -> Checkpoint | None:
        try:
            with _translated():
                reply = await self._client.get_object(
                    Bucket=self._bucket, Key=self.checkpoint_key(key)
                )
                async with reply["Body"] as body:
                    data = await body.read()
        except NotFound:
            return None
        return Checkpoint.from_json(data)


async def _read_pieces(body: Any, size: int) -> list[bytes]:
    """The next `size` bytes of a response body (fewer only at its end), as aiohttp hands
    them out (often a few KiB at a time): gathered into one message, joined only there."""
    pieces: list[bytes] = []
    wanted = size
    with _translated():
        while wanted and (piece := await body.read(wanted)):
            pieces.append(piece)
            wanted -= len(piece)
    return pieces


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
