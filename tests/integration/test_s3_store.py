"""S3BlobStore against the S3 endpoint over HTTP, with faults injected between the store
and its client: a part that fails keeps the parts before it for a resume, and a
multipart upload aborted behind the store's back starts the upload again from 0."""

from __future__ import annotations

import hashlib
import random
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from modelreg.blobs.s3 import S3BlobStore
from modelreg.domain.errors import Unavailable

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


async def finish(upload: Any, data: bytes, offset: int = 0) -> None:
    await send(upload, data, offset)
    await upload.sha256()
    await upload.commit()


async def read_all(store: S3BlobStore, sha256: str, size: int) -> bytes:
    pieces = [bytes(p) async for chunk in store.read(sha256=sha256, offset=0, limit=size)
              for p in chunk]  # fmt: skip
    return b"".join(pieces)


async def send(upload: Any, data: bytes, offset: int = 0) -> None:
    for start in range(offset, len(data), 256 * 1024):
        await upload.write(data[start : start + 256 * 1024])


@pytest.fixture
def data() -> bytes:
    return random.Random(21).randbytes(4 * PART + 12345)


async def test_a_failed_part_keeps_the_parts_before_it(
    s3_client: Any, s3_bucket: str, data: bytes
) -> None:
    sha256, key = hashlib.sha256(data).hexdigest(), uuid.uuid4().hex
    flaky = S3BlobStore(FailingParts(s3_client, {3}), bucket=s3_bucket, prefix="t")
    upload = await flaky.open_upload(key=key, sha256=sha256, size=len(data), held=lambda: True)

    with pytest.raises(Unavailable):
        await finish(upload, data)
    committed = await upload.close()

    assert committed == 2 * PART  # parts 1 and 2; part 3 failed, 4 is sent again
    store = S3BlobStore(s3_client, bucket=s3_bucket, prefix="t")  # another process
    assert await store.staged_size(key=key) == 2 * PART
    resumed = await store.open_upload(key=key, sha256=sha256, size=len(data), held=lambda: True)
    await finish(resumed, data, committed)
    assert (await store.sizes(digests=[sha256])) == {sha256: len(data)}
    assert await read_all(store, sha256, len(data)) == data


async def test_an_upload_aborted_behind_the_stores_back_starts_again(
    s3_client: Any, s3_bucket: str, data: bytes
) -> None:
    sha256, key = hashlib.sha256(data).hexdigest(), uuid.uuid4().hex
    client = FailingParts(s3_client, set())
    store = S3BlobStore(client, bucket=s3_bucket, prefix="u")
    upload = await store.open_upload(key=key, sha256=sha256, size=len(data), held=lambda: True)
    await send(upload, data[: 2 * PART + 5])
    assert await upload.close() == 2 * PART
    listed = await s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix="u/")
    for pending in listed.get("Uploads", []):  # a lifecycle rule, say
        await s3_client.abort_multipart_upload(
            Bucket=s3_bucket, Key=pending["Key"], UploadId=pending["UploadId"]
        )
        client.aborted.add(pending["UploadId"])

    resumed = await store.open_upload(key=key, sha256=sha256, size=len(data), held=lambda: True)
    with pytest.raises(Unavailable) as failed:
        await finish(resumed, data, 2 * PART)
    assert failed.value.reason == "UPLOAD_EXPIRED"

    assert await resumed.close() == 0
    assert await store.staged_size(key=key) == 0
