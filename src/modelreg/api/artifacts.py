"""ArtifactService: parse the request, call the artifact aggregate, convert the answer.

The conversions of this service's messages are the pure functions at the bottom
(they live here rather than in convert.py because only this service uses them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api import convert, wire
from modelreg.api.identity import actor_of
from modelreg.api.services import add_service
from modelreg.domain.artifacts import Artifacts, Manifest
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument, RegistryError
from modelreg.domain.names import check_upload_id, parse_reference, parse_version_name
from modelreg.domain.types import VersionFile
from modelreg.domain.uploads import Chunk, UploadHeader, Uploads, UploadStatus
from modelreg.v1 import artifact_service_pb2 as pb

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


SERVICE = pb.DESCRIPTOR.services_by_name["ArtifactService"]


def add_artifact_service(
    servicer: ArtifactServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every ArtifactService RPC; DownloadFile streams bytes it framed itself."""
    add_service(server, servicer, SERVICE, pb, consistency=consistency, encoded={"DownloadFile"})


class ArtifactServicer:
    """The ArtifactService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, artifacts: Artifacts, uploads: Uploads) -> None:
        self._a = artifacts
        self._uploads = uploads

    async def UploadFile(
        self, request_iterator: AsyncIterator[pb.UploadFileRequest], context: Context
    ) -> pb.UploadFileResponse:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests, None)
            if first is None or not first.HasField("header"):
                raise InvalidArgument.field(
                    "header", "the first message of an upload must carry it"
                )
            status = await self._uploads.upload(
                header=header_from_proto(first.header),
                chunks=chunks_of(first, requests),
                actor=actor_of(context),
            )
        except RegistryError:
            await drain(requests)
            raise
        return upload_status_to_proto(status)

    async def GetUploadStatus(
        self, request: pb.GetUploadStatusRequest, context: Context
    ) -> pb.GetUploadStatusResponse:
        status = await self._uploads.status(
            version=parse_version_name(request.version, "version"),
            upload_id=check_upload_id(request.upload_id),
        )
        return pb.GetUploadStatusResponse(
            file=file_to_proto(status.file),
            committed_size=status.committed_size,
            complete=status.complete,
        )

    async def FindMissingBlobs(
        self, request: pb.FindMissingBlobsRequest, context: Context
    ) -> pb.FindMissingBlobsResponse:
        missing = await self._a.missing(digests=list(request.sha256))
        return pb.FindMissingBlobsResponse(missing_sha256=missing)

    async def FinalizeModelVersion(
        self, request: pb.FinalizeModelVersionRequest, context: Context
    ) -> pb.FinalizeModelVersionResponse:
        version = await self._a.finalize(
            key=parse_version_name(request.name),
            files=[file_from_proto(f) for f in request.files],
            etag=request.etag,
            actor=actor_of(context),
        )
        return pb.FinalizeModelVersionResponse(version=convert.version_to_proto(version))

    async def FailModelVersion(
        self, request: pb.FailModelVersionRequest, context: Context
    ) -> pb.FailModelVersionResponse:
        version = await self._a.fail(
            key=parse_version_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return pb.FailModelVersionResponse(version=convert.version_to_proto(version))

    async def DownloadFile(
        self, request: pb.DownloadFileRequest, context: Context
    ) -> AsyncIterator[bytes]:
        version, file, chunks = await self._a.download(
            ref=parse_reference(request.reference),
            path=request.path,
            offset=request.offset,
            limit=request.limit,
        )
        # Framed by hand (see add_artifact_service): the bytes are copied once, from the
        # blob store's pieces into the message, and no DownloadFileResponse is built per chunk.
        head = pb.DownloadFileResponse(version=version.key.name, file=file_to_proto(file))
        first = head.SerializeToString()
        async for pieces in chunks:
            yield wire.framed(pb.DownloadFileResponse.DATA_FIELD_NUMBER, pieces, first)
            first = b""  # only the first message names the version and file
        if first:  # no bytes to send (an empty file, or offset at the end): still name them
            yield first

    async def ListManifest(
        self, request: pb.ListManifestRequest, context: Context
    ) -> pb.ListManifestResponse:
        manifest = await self._a.manifest(ref=parse_reference(request.reference))
        return manifest_to_proto(manifest)


DRAIN_BYTES = 8 * 1024 * 1024
DRAIN_SECONDS = 2.0


async def drain(requests: AsyncIterator[pb.UploadFileRequest]) -> None:
    """Read (a bounded amount of) what the client is still sending before refusing an
    upload. A grpc.aio client whose write fails because the call already ended reports
    INTERNAL instead of our status (grpc/grpc#36066); once it has half-closed, it sees ours."""
    received = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for message in requests:
                received += len(message.data)
                if received > DRAIN_BYTES:
                    return
    except (TimeoutError, grpc.aio.AioRpcError, RegistryError):  # a late bad message too
        return


async def chunks_of(
    first: pb.UploadFileRequest, rest: AsyncIterator[pb.UploadFileRequest]
) -> AsyncIterator[Chunk]:
    """The data of an upload stream, its first message's included."""
    yield Chunk(first.data, first.finish_write)
    async for message in rest:
        if message.HasField("header"):
            raise InvalidArgument.field("header", "only the first message may carry a header")
        yield Chunk(message.data, message.finish_write)


def header_from_proto(msg: pb.UploadHeader) -> UploadHeader:
    return UploadHeader(
        version=parse_version_name(msg.version, "header.version"),
        file=VersionFile(msg.path, msg.size, msg.sha256),
        upload_id=msg.upload_id,
        offset=msg.offset,
    )


def file_to_proto(file: VersionFile) -> pb.ManifestEntry:
    return pb.ManifestEntry(path=file.path, size=file.size, sha256=file.sha256)


def file_from_proto(msg: pb.ManifestEntry) -> VersionFile:
    return VersionFile(msg.path, msg.size, msg.sha256)


def upload_status_to_proto(status: UploadStatus) -> pb.UploadFileResponse:
    return pb.UploadFileResponse(
        file=file_to_proto(status.file) if status.complete else None,
        committed_size=status.committed_size,
        complete=status.complete,
        deduplicated=status.deduplicated,
    )


def manifest_to_proto(manifest: Manifest) -> pb.ListManifestResponse:
    version = manifest.version
    return pb.ListManifestResponse(
        version=version.key.name,
        state=version.state.value,  # type: ignore[arg-type]
        files=[file_to_proto(f) for f in manifest.files],
        total_size=manifest.total_size,
        digest=version.digest,
    )
