"""Artifacts: resumable uploads of a version's files, finalize, manifests and downloads.

An upload streams one file of a PENDING version into a staged blob, hashed as it
arrives; only when size and sha256 match is the blob published (content-addressed,
so the same bytes are stored once) and the file added to the version. A cut stream
keeps what the blob store holds durably (`committed_size`) and resumes from there.
Finalize freezes the manifest and computes the version digest (DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

from modelreg.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    RegistryError,
    ResourceExhausted,
)
from modelreg.domain.names import Reference, VersionKey
from modelreg.domain.ports import (
    ArtifactStore,
    ArtifactTransaction,
    BlobStore,
    StagedBlob,
    UploadSession,
    VersionFile,
)
from modelreg.domain.rules import check_etag
from modelreg.domain.types import Event, ModelVersion, VersionState
from modelreg.domain.versions import record

FILE_ADDED = "version.file_added"
VERSION_FINALIZED = "version.finalized"
VERSION_FAILED = "version.failed"

MAX_PATH = 1024  # bytes of UTF-8
MAX_PATH_PART = 255
MAX_FILES = 10_000  # per version; keeps a manifest under the 4 MiB message limit
MAX_DIGESTS = 10_000  # per FindMissingBlobs
MAX_FILE_SIZE = 2**50  # 1 PiB: a sanity bound, not a quota
ORPHAN_GRACE_SECONDS = 24 * 3600.0
READABLE = (VersionState.READY, VersionState.ARCHIVED)

_WRONG_BYTES = ("SIZE_MISMATCH", "DIGEST_MISMATCH")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_path(path: str, field: str = "path") -> str:
    """A file path inside a version: relative, `/`-separated, no `.`/`..`/empty parts,
    no backslash or control character, at most 1024 bytes."""
    problem = _path_problem(path)
    if problem:
        raise InvalidArgument.field(field, problem)
    return path


def _path_problem(path: str) -> str:
    return next((what for bad, what in _PATH_RULES if bad(path)), "")


def _has_control(path: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)


_PATH_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda p: not p, "path is required"),
    (lambda p: len(p.encode()) > MAX_PATH, f"path must be at most {MAX_PATH} bytes"),
    (lambda p: p.startswith("/"), "path must be relative, not absolute"),
    (lambda p: "\\" in p, "path must use '/' separators, not backslashes"),
    (_has_control, "path must not contain NUL or other control characters"),
    (
        lambda p: any(part in ("", ".", "..") for part in p.split("/")),
        "path must not contain empty, '.' or '..' parts",
    ),
    (
        lambda p: any(len(part.encode()) > MAX_PATH_PART for part in p.split("/")),
        f"each part of a path must be at most {MAX_PATH_PART} bytes",
    ),
)


def check_sha256(value: str, field: str = "sha256") -> str:
    """A lowercase hex SHA-256."""
    if not _SHA256.fullmatch(value):
        raise InvalidArgument.field(field, "must be 64 lowercase hex digits")
    return value


def check_file(file: VersionFile, field: str) -> VersionFile:
    """A manifest entry with a valid path, size and sha256."""
    check_path(file.path, f"{field}.path")
    check_sha256(file.sha256, f"{field}.sha256")
    if not 0 <= file.size <= MAX_FILE_SIZE:
        raise InvalidArgument.field(f"{field}.size", f"must be between 0 and {MAX_FILE_SIZE}")
    return file


def manifest_digest(files: Iterable[VersionFile]) -> str:
    """`sha256:<hex>` over the manifest sorted by path (UTF-8 byte order), one line per file:
    `path TAB size TAB sha256 LF` (paths hold no control characters, so this is unambiguous)."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path.encode()):
        digest.update(f"{f.path}\t{f.size}\t{f.sha256}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def file_name(version: VersionKey, path: str) -> str:
    """Resource name of a version's file (DESIGN.md §2)."""
    return f"{version.name}/files/{path}"


def staging_key(version: VersionKey, upload_id: str) -> str:
    """Where the blob store stages an upload: client-chosen ids only clash within a version."""
    return hashlib.sha256(f"{version.name}\0{upload_id}".encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class UploadHeader:
    """The first message of an upload stream."""

    version: VersionKey
    file: VersionFile
    upload_id: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """How far an upload got; `file` is part of the version once `complete`."""

    file: VersionFile
    committed_size: int
    complete: bool
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class Manifest:
    """A version and its files."""

    version: ModelVersion
    files: list[VersionFile]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message of an upload stream after the header."""

    data: bytes
    finish: bool = False


def check_header(header: UploadHeader) -> UploadHeader:
    """Validate an upload header."""
    check_file(header.file, "header")
    if not _UPLOAD_ID.fullmatch(header.upload_id):
        raise InvalidArgument.field("header.upload_id", "must be 1-64 of [A-Za-z0-9_-]")
    if not 0 <= header.offset <= header.file.size:
        raise InvalidArgument.field("header.offset", "must be between 0 and the file's size")
    return header


class Artifacts:
    """The artifact aggregate: uploads, finalize, manifests, downloads, dedup, orphans."""

    def __init__(self, *, store: ArtifactStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs
        self._streaming: set[str] = set()  # staging keys with a live stream in this process

    async def upload(
        self, *, header: UploadHeader, chunks: AsyncIterator[Chunk], actor: str
    ) -> UploadStatus:
        """Receive one file (or the rest of it); commit it when size and sha256 match."""
        session = await self._begin(check_header(header))
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        if header.offset == 0 and await self._present(session.file):
            return await self._add(session, actor, deduplicated=True)
        key = staging_key(header.version, header.upload_id)
        if key in self._streaming:
            raise FailedPrecondition(
                f"upload {header.upload_id} is already streaming; wait for it or resume later",
                reason="UPLOAD_IN_PROGRESS",
                metadata={"upload_id": header.upload_id},
            )
        self._streaming.add(key)
        try:
            done = await self._stream(session, key, header.offset, chunks)
        finally:
            self._streaming.discard(key)
        if done is not None:
            return done
        return await self._add(session, actor)

    async def status(self, *, version: VersionKey, upload_id: str) -> UploadStatus:
        """How many bytes of an upload are committed (the offset to resume from)."""
        session = await self._store.get_upload(version=version, upload_id=upload_id)
        if session.complete:
            return UploadStatus(session.file, session.file.size, complete=True)
        staged = await self._blobs.staged_size(key=staging_key(version, upload_id))
        return UploadStatus(session.file, staged, complete=False)

    async def missing(self, *, digests: Sequence[str]) -> list[str]:
        """The digests whose bytes the blob store lacks, in the order given."""
        if len(digests) > MAX_DIGESTS:
            raise InvalidArgument.field("sha256", f"at most {MAX_DIGESTS} digests")
        for index, value in enumerate(digests):
            check_sha256(value, f"sha256[{index}]")
        known = await self._store.known_blobs(digests=sorted(set(digests)))
        present = await self._blobs.sizes(digests=sorted(known)) if known else {}
        return [d for d in digests if d not in present]

    async def finalize(
        self, *, key: VersionKey, files: Sequence[VersionFile], etag: str, actor: str
    ) -> ModelVersion:
        """Turn a PENDING version READY if its uploaded files are exactly `files`."""
        expected = _checked_manifest(files)
        digest = manifest_digest(expected)
        async with self._store.transaction() as tx:
            current = await tx.lock_version(key=key)
            check_etag(etag, current.revision, key.name)
            if current.state in READABLE and current.digest == digest:
                return current  # a retried finalize
            _require_pending(current, "finalized")
            _compare(key, expected, await tx.version_files(version=key))
            total = sum(f.size for f in expected)
            ready = dataclasses.replace(
                current, state=VersionState.READY, digest=digest, total_size=total
            )
            saved = await tx.save_version(version=ready)
            await record(tx, VERSION_FINALIZED, saved, actor, before=current, after=saved)
            dropped = await tx.drop_uploads(version=key)
        await self._discard(key, dropped)
        return saved

    async def fail(self, *, key: VersionKey, etag: str, actor: str) -> ModelVersion:
        """Mark a PENDING version FAILED; its staged uploads are dropped, its blobs left to GC."""
        async with self._store.transaction() as tx:
            current = await tx.lock_version(key=key)
            check_etag(etag, current.revision, key.name)
            if current.state == VersionState.FAILED:
                return current
            _require_pending(current, "marked FAILED")
            failed = dataclasses.replace(current, state=VersionState.FAILED)
            saved = await tx.save_version(version=failed)
            await record(tx, VERSION_FAILED, saved, actor, before=current, after=saved)
            dropped = await tx.drop_uploads(version=key)
        await self._discard(key, dropped)
        return saved

    async def manifest(self, *, ref: Reference) -> Manifest:
        """A version and its files (a PENDING version's files uploaded so far)."""
        version = await self._store.resolve(ref=ref)
        return Manifest(version, await self._store.list_files(version=version.key))

    async def download(
        self, *, ref: Reference, path: str, offset: int, limit: int
    ) -> tuple[ModelVersion, VersionFile, AsyncIterator[bytes]]:
        """The version, the file, and its bytes from `offset` (at most `limit`; 0 = to the end)."""
        check_path(path)
        if offset < 0 or limit < 0:
            raise InvalidArgument.field("offset" if offset < 0 else "limit", "must not be negative")
        version = await self._store.resolve(ref=ref)
        if version.state not in READABLE:
            raise FailedPrecondition(
                f"{version.key.name} is {version.state.name}; only READY files can be downloaded",
                reason="VERSION_NOT_READY",
                metadata={"resource": version.key.name, "state": version.state.name},
            )
        file = await self._store.get_file(version=version.key, path=path)
        if offset > file.size:
            raise InvalidArgument.field("offset", f"is past the end of the file ({file.size})")
        rest = file.size - offset
        length = rest if limit == 0 else min(limit, rest)
        return version, file, self._blobs.read(sha256=file.sha256, offset=offset, limit=length)

    async def collect_orphans(
        self, *, grace_seconds: float = ORPHAN_GRACE_SECONDS, limit: int = 1000
    ) -> list[str]:
        """Delete blobs no live version holds and nobody used for `grace_seconds`."""
        found = await self._store.orphaned_blobs(grace_seconds=grace_seconds, limit=limit)
        collected = []
        for sha256 in found:
            async with self._store.transaction() as tx:
                orphaned = await tx.forget_blob(sha256=sha256, grace_seconds=grace_seconds)
            if orphaned:
                await self._blobs.delete(sha256=sha256)
                collected.append(sha256)
        return collected

    async def _begin(self, header: UploadHeader) -> UploadSession:
        wanted = UploadSession(header.upload_id, header.version, header.file)
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=header.version, shared=True)
            _require_pending(version, "uploaded to")
            session = await tx.save_upload(session=wanted)
            if session.file != header.file:
                raise InvalidArgument.field(
                    "header.upload_id", "was used for another file; choose a new upload id"
                )
            if not session.complete:
                await _check_slot(tx, header)
                size, sha = header.file.size, header.file.sha256
                await tx.reserve_blob(model=header.version.model, sha256=sha, size=size)
        return session

    async def _present(self, file: VersionFile) -> bool:
        size = (await self._blobs.sizes(digests=[file.sha256])).get(file.sha256)
        if size is not None and size != file.size:
            raise InvalidArgument.field(
                "header.size", f"the blob with this sha256 has {size} bytes, not {file.size}"
            )
        return size is not None

    async def _stream(
        self, session: UploadSession, key: str, offset: int, chunks: AsyncIterator[Chunk]
    ) -> UploadStatus | None:
        """Stage the stream's bytes; None once published, else the status to resume from."""
        file = session.file
        staged = await self._blobs.open_upload(key=key, sha256=file.sha256, size=file.size)
        wrong_bytes = published = False
        try:
            _check_offset(session, staged.committed_size, offset)
            try:
                complete = await _receive(staged, chunks, offset, file.size)
                if complete:
                    await _verify(staged, file)
            except RegistryError as exc:
                wrong_bytes = exc.reason in _WRONG_BYTES  # a resume cannot mend those
                raise
            if complete:
                await staged.commit()
                published = True
                return None
        finally:
            if wrong_bytes:
                await staged.discard()
            elif not published:  # paused, or cut: keep what is durable
                committed = await self._pause(session, staged)
        return UploadStatus(file, committed, complete=False)

    async def _pause(self, session: UploadSession, staged: StagedBlob) -> int:
        committed = await staged.close()
        async with self._store.transaction() as tx:
            await tx.set_upload_progress(
                version=session.version,
                upload_id=session.upload_id,
                committed_size=committed,
                complete=False,
            )
        return committed

    async def _add(
        self, session: UploadSession, actor: str, *, deduplicated: bool = False
    ) -> UploadStatus:
        file, key = session.file, session.version
        async with self._store.transaction() as tx:
            version = await tx.lock_version(key=key, shared=True)
            _require_pending(version, "uploaded to")
            await tx.add_file(version=key, file=file)
            await tx.reserve_blob(model=key.model, sha256=file.sha256, size=file.size)
            await tx.set_upload_progress(
                version=key, upload_id=session.upload_id, committed_size=file.size, complete=True
            )
            await tx.append_event(event=_file_event(key, file, actor))
        return UploadStatus(file, file.size, complete=True, deduplicated=deduplicated)

    async def _discard(self, version: VersionKey, upload_ids: Iterable[str]) -> None:
        for upload_id in upload_ids:
            await self._blobs.discard_upload(key=staging_key(version, upload_id))


async def _receive(
    staged: StagedBlob, chunks: AsyncIterator[Chunk], offset: int, size: int
) -> bool:
    """Write the stream's data; True if the file is whole, False if the stream paused early."""
    position = offset
    async for chunk in chunks:
        position += len(chunk.data)
        if position > size:
            raise _size_mismatch(f"the stream sent more than the {size} bytes declared")
        if chunk.data:
            await staged.write(chunk.data)
        if chunk.finish and position < size:
            raise _size_mismatch(f"the stream finished at {position} of the {size} bytes declared")
        if chunk.finish:
            break
    return position == size


def _size_mismatch(text: str) -> InvalidArgument:
    return InvalidArgument([("header.size", text)], reason="SIZE_MISMATCH")


async def _verify(staged: StagedBlob, file: VersionFile) -> None:
    actual = await staged.sha256()
    if actual != file.sha256:
        raise InvalidArgument(
            [("header.sha256", f"the bytes received hash to {actual}, not {file.sha256}")],
            reason="DIGEST_MISMATCH",
        )


def _check_offset(session: UploadSession, committed: int, offset: int) -> None:
    if offset != committed:
        raise FailedPrecondition(
            f"upload {session.upload_id} has {committed} bytes committed; resume from there,"
            f" not from {offset}",
            reason="OFFSET_MISMATCH",
            metadata={"upload_id": session.upload_id, "committed_size": str(committed)},
        )


async def _check_slot(tx: ArtifactTransaction, header: UploadHeader) -> None:
    """The path must be free or hold the same bytes, and the version must have room."""
    existing = await tx.find_file(version=header.version, path=header.file.path)
    if existing is not None and existing != header.file:
        raise AlreadyExists(file_name(header.version, header.file.path))
    if existing is None and await tx.count_files(version=header.version) >= MAX_FILES:
        raise ResourceExhausted(
            f"{header.version.name} already has {MAX_FILES} files",
            reason="TOO_MANY_FILES",
            metadata={"resource": header.version.name},
        )


def _require_pending(version: ModelVersion, verb: str) -> None:
    if version.state != VersionState.PENDING:
        raise FailedPrecondition(
            f"{version.key.name} is {version.state.name}; only PENDING versions can be {verb}",
            reason="VERSION_NOT_PENDING",
            metadata={"resource": version.key.name, "state": version.state.name},
        )


def _checked_manifest(files: Sequence[VersionFile]) -> list[VersionFile]:
    if len(files) > MAX_FILES:
        raise InvalidArgument.field("files", f"at most {MAX_FILES} files")
    seen: set[str] = set()
    for index, file in enumerate(files):
        check_file(file, f"files[{index}]")
        if file.path in seen:
            raise InvalidArgument.field(f"files[{index}].path", f"{file.path!r} is listed twice")
        seen.add(file.path)
    return list(files)


def _compare(key: VersionKey, expected: list[VersionFile], uploaded: list[VersionFile]) -> None:
    """FAILED_PRECONDITION naming the first file missing, different or unexpected."""
    have = {f.path: f for f in uploaded}
    want = {f.path: f for f in expected}
    for path, file in sorted(want.items()):
        if path not in have:
            _refuse(key, path, "MISSING_FILE", f"{path!r} was never uploaded")
        if have[path] != file:
            _refuse(key, path, "FILE_MISMATCH", f"{path!r} was uploaded with other bytes")
    for path in sorted(have.keys() - want.keys()):
        _refuse(key, path, "UNEXPECTED_FILE", f"{path!r} was uploaded but is not in the manifest")


def _refuse(key: VersionKey, path: str, reason: str, what: str) -> None:
    raise FailedPrecondition(
        f"cannot finalize {key.name}: {what}",
        reason=reason,
        metadata={"resource": key.name, "path": path},
    )


def _file_event(key: VersionKey, file: VersionFile, actor: str) -> Event:
    return Event(
        FILE_ADDED,
        key.name,
        actor,
        key.model.namespace,
        model=key.model,
        after={"path": file.path, "size": file.size, "sha256": file.sha256},
    )
