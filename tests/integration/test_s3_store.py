"""S3BlobStore against the S3 endpoint over HTTP, with faults injected between the store
and its client: a part that fails keeps the parts before it for a resume, and a
multipart upload aborted behind the store's back starts the upload again from 0."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from modelreg.blobs.s3 import S3BlobStore
from modelreg.blobs.s3upload import S3Upload
from modelreg.domain.errors import Unavailable
from modelreg.domain.types import UploadProgress

MiB = 1024 * 1024
PART = 8 * MiB


class FailingParts:
    """The aioboto3 client, except that upload_part fails for the part numbers listed
    (once each), as a 503 that outlasted botocore's own retries would, and answers
    NoSuchUpload, as S3 does, for a multipart upload that was aborted (moto answers
    500 there)."""

    def __init__(self, client: Any, failing: set[int]) -> None:
        self._client, self._failing = client, failing
        self.aborted: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def upload_part(self, **request: Any) -> Any:
        if request["UploadId"] in self.aborted:
            error = {"Code": "NoSuchUpload", "Message": "The specified upload does not exist"}
            raise ClientError({"Error": error}, "UploadPart")
        if request["PartNumber"] in self._failing:
            self._failing.discard(request["PartNumber"])
            raise OSError("connection reset by peer")  # what botocore lets through
        return await self._client.upload_part(**request)


async def finish(upload: S3Upload, data: bytes, offset: int = 0) -> UploadProgress:
    """Send the rest of the file, land it, and publish it (recorded as it is)."""
    await send(upload, data, offset)
    digest, whole = await upload.finish()
    assert digest == hashlib.sha256(data).hexdigest()
    await upload.publish(whole)
    return whole


async def read_all(store: S3BlobStore, sha256: str, size: int) -> bytes:
    pieces = [bytes(p) async for chunk in store.read(sha256=sha256, offset=0, limit=size)
              for p in chunk]  # fmt: skip
    return b"".join(pieces)


async def send(upload: S3Upload, data: bytes, offset: int = 0) -> None:
    for start in range(offset, len(data), 256 * 1024):
        await upload.write(data[start : start + 256 * 1024])


async def opened(
    store: S3BlobStore,
    data: bytes,
    resume: UploadProgress | None = None,
    on_progress: Callable[[UploadProgress], None] = lambda progress: None,
) -> S3Upload:
    """A staged upload of `data` continuing from `resume` (what a database recorded)."""
    return await store.open_upload(
        key=uuid.uuid4().hex,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        token=1,
        resume=resume or UploadProgress(),
        on_progress=on_progress,
    )


@pytest.fixture
def data() -> bytes:
    return random.Random(21).randbytes(4 * PART + 12345)


async def test_a_failed_part_keeps_the_parts_before_it(
    s3_client: Any, s3_bucket: str, data: bytes
) -> None:
    sha256 = hashlib.sha256(data).hexdigest()
    flaky = S3BlobStore(FailingParts(s3_client, {3}), bucket=s3_bucket, prefix="t")
    upload = await opened(flaky, data)

    with pytest.raises(Unavailable):
        await finish(upload, data)
    paused = await upload.pause()

    assert paused.committed_size == 2 * PART  # parts 1 and 2; part 3 failed, 4 is sent again
    assert [p.number for p in paused.parts] == [1, 2]
    store = S3BlobStore(s3_client, bucket=s3_bucket, prefix="t")  # another process
    resumed = await opened(store, data, paused)
    assert resumed.progress == paused
    await finish(resumed, data, paused.committed_size)
    assert (await store.sizes(digests=[sha256])) == {sha256: len(data)}
    assert await read_all(store, sha256, len(data)) == data


async def test_an_upload_aborted_behind_the_stores_back_starts_again(
    s3_client: Any, s3_bucket: str, data: bytes
) -> None:
    client = FailingParts(s3_client, set())
    store = S3BlobStore(client, bucket=s3_bucket, prefix="u")
    upload = await opened(store, data)
    await send(upload, data[: 2 * PART + 5])
    paused = await upload.pause()
    assert paused.committed_size == 2 * PART
    listed = await s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix="u/")
    for pending in listed.get("Uploads", []):  # a lifecycle rule, say
        await s3_client.abort_multipart_upload(
            Bucket=s3_bucket, Key=pending["Key"], UploadId=pending["UploadId"]
        )
        client.aborted.add(pending["UploadId"])

    resumed = await opened(store, data, paused)
    with pytest.raises(Unavailable) as failed:
        await finish(resumed, data, 2 * PART)
    assert failed.value.reason == "UPLOAD_EXPIRED"

    await resumed.discard()  # what the stream does for UPLOAD_EXPIRED, once it recorded 0
    again = await opened(store, data, UploadProgress())
    assert again.progress.committed_size == 0
    await finish(again, data)
    assert await read_all(store, hashlib.sha256(data).hexdigest(), len(data)) == data


async def test_completion_refuses_a_part_a_stale_stream_sent_again(
    s3_client: Any, s3_bucket: str, data: bytes
) -> None:
    """A stream records parts 1-2 and stalls; another resumes from the record and lands
    the rest; then the stale one sends part 3 again, with other bytes. The completion
    lists the recorded parts, whose ETag and checksum no longer match part 3: refused,
    and nothing is published."""
    sha256 = hashlib.sha256(data).hexdigest()
    store = S3BlobStore(s3_client, bucket=s3_bucket, prefix="v")
    offered: list[UploadProgress] = []
    two_parts = asyncio.Event()

    def record(progress: UploadProgress) -> None:
        offered.append(progress)
        if progress.committed_size == 2 * PART:
            two_parts.set()

    stale = await opened(store, data, on_progress=record)
    await send(stale, data[: 2 * PART])
    await two_parts.wait()
    recorded = offered[-1]
    taking_over = await opened(store, data, recorded)
    await send(taking_over, data, recorded.committed_size)
    digest, whole = await taking_over.finish()
    assert digest == sha256

    other = random.Random(22).randbytes(PART)
    await stale.write(other)  # its part 3: other bytes under the same number
    await stale.pause()

    with pytest.raises(Unavailable) as refused:
        await taking_over.publish(whole)
    assert refused.value.reason == "UPLOAD_EXPIRED"
    assert await store.sizes(digests=[sha256]) == {}
