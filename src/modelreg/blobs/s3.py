"""S3BlobStore: blobs as objects `<prefix>sha256/ab/cdef…` in a bucket, via aioboto3.

A file up to one part is sent with one PutObject when it is published. A larger one is a
multipart upload straight to its final key (invisible until completed): parts of at
least 8 MiB, each with its SHA-256 checksum, at most `concurrency` in flight
(blobs/s3upload.py). A wrong digest or an upload that cannot go on aborts it.

What a cut stream keeps is what the database recorded as it went: the multipart upload
id, the completed parts (number, size, ETag, checksum) and the file's hash state at
their end (blobs/sha256.py), so any server process resumes from it; parts finished
after the last record are sent again. The upload is completed with exactly the recorded
parts: S3 checks each ETag and checksum against the part it holds, so a part that a
stale stream sent again with other bytes is refused, never published. A bucket lifecycle
rule that aborts incomplete multipart uploads after some days cleans up those never
resumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from modelreg.blobs.s3bucket import S3Bucket, translated
from modelreg.blobs.s3upload import S3Upload
from modelreg.blobs.sha256 import Sha256
from modelreg.domain.ports import Pieces
from modelreg.domain.types import UploadProgress

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
MAX_PARTS = 10_000  # S3's limit
CONCURRENCY = 4  # parts in flight per upload: memory is about (CONCURRENCY + 3) parts
CHUNK_SIZE = 256 * 1024


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
        self._bucket = S3Bucket(client, bucket=bucket, prefix=prefix)
        self._part_size = part_size
        self._concurrency = concurrency
        self._chunk_size = chunk_size

    def object_key(self, sha256: str) -> str:
        """The key of the blob `sha256`."""
        return self._bucket.object_key(sha256)

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        slots = asyncio.Semaphore(16)

        async def head(digest: str) -> tuple[str, int | None]:
            async with slots:
                return digest, await self._bucket.size(digest)

        found = await asyncio.gather(*(head(d) for d in digests))
        return {digest: size for digest, size in found if size is not None}

    async def open_upload(
        self,
        *,
        key: str,
        sha256: str,
        size: int,
        token: int,
        resume: UploadProgress,
        on_progress: Callable[[UploadProgress], None],
    ) -> S3Upload:
        hasher = Sha256.restore(resume.hash_state) if resume.hash_state else None
        if hasher is None or not resume.parts:  # nothing to go on: from 0, in the same upload
            resume = UploadProgress(staging=resume.staging)
            hasher = Sha256()
        part_size = resume.parts[0].size if resume.parts else self._part_size_for(size)
        return S3Upload(
            self._bucket,
            sha256,
            size,
            part_size,
            concurrency=self._concurrency,
            on_progress=on_progress,
            resume=resume,
            hasher=hasher,
        )

    def _part_size_for(self, size: int) -> int:
        needed = -(-size // MAX_PARTS)
        return max(self._part_size, -(-needed // MiB) * MiB)

    async def discard_upload(self, *, key: str, sha256: str, staged: UploadProgress) -> None:
        if staged.staging:
            await self._bucket.abort_multipart(sha256, staged.staging)

    async def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
        if limit == 0:
            return
        body = await self._bucket.get(sha256, offset, limit)
        try:
            while pieces := await _read_pieces(body, self._chunk_size):
                yield pieces
        finally:
            body.close()  # a download cut early must not leave the connection half-read

    async def delete(self, *, sha256: str) -> None:
        await self._bucket.delete(sha256)


async def _read_pieces(body: Any, size: int) -> list[bytes]:
    """The next `size` bytes of a response body (fewer only at its end), as aiohttp hands
    them out (often a few KiB at a time): gathered into one message, joined only there."""
    pieces: list[bytes] = []
    wanted = size
    with translated():
        while wanted and (piece := await body.read(wanted)):
            pieces.append(piece)
            wanted -= len(piece)
    return pieces
