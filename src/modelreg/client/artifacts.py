"""Builders for the unary ArtifactService calls (manifests, finalize, dedup, upload status),
and the progress callback that `push` and `pull` report to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from modelreg.client.calls import ARTIFACTS, Call, reply_itself
from modelreg.client.errors import FailedPreconditionError
from modelreg.client.names import version_name
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res

MAX_DIGESTS = 10_000  # per FindMissingBlobs request

T = TypeVar("T")


class Transport(Protocol):
    """What `push` and `pull` need of an AsyncClient; failures raise RegistryError."""

    async def _run(self, call: Call[T]) -> T: ...

    async def _upload(
        self, requests: AsyncIterator[art.UploadFileRequest]
    ) -> art.UploadFileResponse: ...

    def _download(self, request: art.DownloadFileRequest) -> AsyncIterator[Received]: ...


@dataclass(frozen=True, slots=True)
class Received:
    """One message of a download: its data (a view, not a copy), and on the first message
    the version and file it names."""

    data: memoryview
    version: str = ""
    file: art.ManifestEntry | None = None


_DATA_TAG = b"\x1a"  # field 3 (data), wire type 2: a message carrying only data starts so


def parse_download(raw: bytes) -> Received:
    """A DownloadFileResponse off the wire. Every message after the first carries only
    `data`; its bytes are handed out as a view of the wire bytes instead of being copied
    into a protobuf message and out again (the copies cost as much CPU as the sha256)."""
    if raw[:1] == _DATA_TAG:
        length, start = _varint(raw, 1)
        if start + length == len(raw):
            return Received(memoryview(raw)[start:])
    message = art.DownloadFileResponse.FromString(raw)
    file = message.file if message.HasField("file") else None
    return Received(memoryview(message.data), message.version, file)


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    """The varint at `at` and the offset after it."""
    value = shift = 0
    while at < len(raw):
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7
    return -1, at  # truncated: never equals a length, so the message is parsed in full


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to push: its path inside the version, where it is on disk, size and sha256."""

    path: str
    source: str
    size: int
    sha256: str

    def entry(self) -> art.ManifestEntry:
        """Its manifest entry."""
        return art.ManifestEntry(path=self.path, size=self.size, sha256=self.sha256)


class Progress(Protocol):
    """Told how far a phase got: `phase` is "hash", "upload" or "download"; `done` and
    `total` count the bytes of that phase over all files. Exceptions it raises stop the
    transfer (a `pull` stopped so resumes from its `.part` files)."""

    def __call__(self, phase: str, done: int, total: int) -> None: ...


class Meter:
    """Counts the bytes of one phase and reports them to a `Progress`, if any."""

    def __init__(self, progress: Progress | None, phase: str, total: int) -> None:
        self._progress, self._phase, self.total, self.done = progress, phase, total, 0
        self.add(0)

    def add(self, count: int) -> None:
        """`count` more bytes are done."""
        self.done += count
        if self._progress is not None:
            self._progress(self._phase, self.done, self.total)


def wrong_state(
    name: str, state: res.ModelVersionState.ValueType, wanted: str, verb: str
) -> FailedPreconditionError:
    """What the server would answer, raised before any bytes move: `name` is in `state`,
    only `wanted` versions can be `verb`."""
    shown = res.ModelVersionState.Name(state).removeprefix("MODEL_VERSION_STATE_")
    return FailedPreconditionError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"{name} is {shown}; only {wanted} versions can be {verb}",
        reason=f"VERSION_NOT_{wanted}",
        metadata={"resource": name, "state": shown},
    )


def list_manifest(
    reference: str, *, timeout: float | None = None
) -> Call[art.ListManifestResponse]:
    """The files of a version (`ns/model@alias`, `ns/model:7`, `ns/model`), total size, digest."""
    request = art.ListManifestRequest(reference=reference)
    return Call("ListManifest", request, reply_itself, True, timeout, ARTIFACTS)


# Finalize and fail wait while an upload of the version is still streaming: a stream the
# client just cut takes the server a moment to wind down (a lease's length if it died).
_WAITS = ("UPLOAD_IN_PROGRESS",)


def finalize_version(
    version: str,
    files: Iterable[art.ManifestEntry],
    *,
    etag: str | None = None,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Turn a PENDING version READY once its uploaded files equal `files`; safe to retry."""
    request = art.FinalizeModelVersionRequest(
        name=version_name(version), files=list(files), etag=etag or ""
    )
    return Call(
        "FinalizeModelVersion", request, lambda r: r.version, True, timeout, ARTIFACTS, _WAITS
    )


def fail_version(
    version: str, *, etag: str | None = None, timeout: float | None = None
) -> Call[res.ModelVersion]:
    """Mark a PENDING version FAILED, abandoning its uploads; safe to retry."""
    request = art.FailModelVersionRequest(name=version_name(version), etag=etag or "")
    return Call("FailModelVersion", request, lambda r: r.version, True, timeout, ARTIFACTS, _WAITS)


def find_missing_blobs(digests: Sequence[str], *, timeout: float | None = None) -> Call[list[str]]:
    """The sha256 digests among `digests` (at most 10,000) whose bytes the registry lacks."""
    request = art.FindMissingBlobsRequest(sha256=list(digests))
    return Call(
        "FindMissingBlobs", request, lambda r: list(r.missing_sha256), True, timeout, ARTIFACTS
    )


def upload_status(
    version: str, upload_id: str, *, timeout: float | None = None
) -> Call[art.GetUploadStatusResponse]:
    """How many bytes of an upload are committed: the offset to resume from."""
    request = art.GetUploadStatusRequest(version=version_name(version), upload_id=upload_id)
    return Call("GetUploadStatus", request, reply_itself, True, timeout, ARTIFACTS)
