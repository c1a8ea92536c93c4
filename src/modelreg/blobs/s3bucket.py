"""The S3 requests the blob store makes (blobs/s3.py, blobs/s3upload.py), on one bucket
and prefix, with botocore's errors translated into the domain's."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modelreg.domain.errors import NotFound, Unavailable
from modelreg.domain.types import Part

_ABSENT = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")
_GONE = ("NoSuchUpload", "InvalidPart", "InvalidPartOrder")  # at completion


class S3Bucket:
    """Blobs as objects `<prefix>sha256/ab/cdef…`; `client` is an aioboto3 S3 client."""

    def __init__(self, client: Any, *, bucket: str, prefix: str = "") -> None:
        self._client = client
        self.name = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def object_key(self, sha256: str) -> str:
        """The key of the blob `sha256`."""
        return f"{self._prefix}sha256/{sha256[:2]}/{sha256[2:]}"

    async def size(self, sha256: str) -> int | None:
        """The blob's size; None if absent."""
        try:
            with translated(sha256):
                reply = await self._client.head_object(
                    Bucket=self.name, Key=self.object_key(sha256)
                )
        except NotFound:
            return None
        return int(reply["ContentLength"])

    async def get(self, sha256: str, offset: int, limit: int) -> Any:
        """The body of `limit` bytes of the blob from `offset`."""
        with translated(sha256):
            reply = await self._client.get_object(
                Bucket=self.name,
                Key=self.object_key(sha256),
                Range=f"bytes={offset}-{offset + limit - 1}",
            )
        return reply["Body"]

    async def delete(self, sha256: str) -> None:
        with translated():
            await self._client.delete_object(Bucket=self.name, Key=self.object_key(sha256))

    async def put(self, sha256: str, data: bytes) -> None:
        """Store a blob of at most one part with one request."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        with translated():
            await self._client.put_object(
                Bucket=self.name, Key=self.object_key(sha256), Body=data, ChecksumSHA256=checksum
            )

    async def create_multipart(self, sha256: str) -> str:
        """Start a multipart upload to the blob's key, with SHA-256 part checksums; its id."""
        with translated():
            reply = await self._client.create_multipart_upload(
                Bucket=self.name, Key=self.object_key(sha256), ChecksumAlgorithm="SHA256"
            )
        return str(reply["UploadId"])

    async def upload_part(
        self, sha256: str, upload_id: str, number: int, data: bytes, checksum: str
    ) -> str:
        """Send one part (S3 checks its checksum); its ETag. NotFound if the multipart
        upload no longer exists."""
        with translated(sha256):
            reply = await self._client.upload_part(
                Bucket=self.name,
                Key=self.object_key(sha256),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
        return str(reply["ETag"])

    async def complete_multipart(self, sha256: str, upload_id: str, parts: Sequence[Part]) -> None:
        """Publish the blob from exactly `parts`: S3 refuses (NotFound) a part whose
        ETag or ChecksumSHA256 is not the one it holds under that number, and a multipart
        upload that no longer exists."""
        listed = [
            {"PartNumber": p.number, "ETag": p.etag, "ChecksumSHA256": p.checksum} for p in parts
        ]
        with translated(sha256, gone=_GONE):
            await self._client.complete_multipart_upload(
                Bucket=self.name,
                Key=self.object_key(sha256),
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

    async def abort_multipart(self, sha256: str, upload_id: str) -> None:
        """Abort a multipart upload (one already gone is fine)."""
        with contextlib.suppress(NotFound), translated():
            await self._client.abort_multipart_upload(
                Bucket=self.name, Key=self.object_key(sha256), UploadId=upload_id
            )


@contextmanager
def translated(sha256: str = "", gone: Sequence[str] = _ABSENT) -> Iterator[None]:
    """botocore errors -> NotFound (absent object, or the codes in `gone`) or Unavailable."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in gone or code in _ABSENT:
            raise NotFound(f"blobs/sha256:{sha256}", reason="BLOB_MISSING") from exc
        raise Unavailable(
            f"the S3 blob store refused the request ({code}); retry later",
            reason="BLOB_STORE_UNAVAILABLE",
        ) from exc
    except (BotoCoreError, OSError) as exc:
        raise Unavailable(
            "the S3 blob store cannot be reached; retry later", reason="BLOB_STORE_UNAVAILABLE"
        ) from exc
