"""Artifacts: a version's files once uploaded (domain/uploads.py): finalize, fail,
manifests, downloads, deduplication and the collection of orphaned blobs.

Finalize freezes the manifest and computes the version digest (DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

from modelreg.domain.errors import FailedPrecondition, InvalidArgument
from modelreg.domain.events import EventKind
from modelreg.domain.names import Reference, VersionKey
from modelreg.domain.ports import ArtifactStore, ArtifactTransaction, BlobStore, Pieces
from modelreg.domain.rules import check_etag
from modelreg.domain.types import ModelVersion, UploadSession, VersionFile, VersionState
from modelreg.domain.versions import record

MAX_PATH = 1024  # bytes of UTF-8
MAX_PATH_PART = 255
MAX_FILES = 10_000  # per version; keeps a manifest under the 4 MiB message limit
MAX_DIGESTS = 10_000  # per FindMissingBlobs
MAX_FILE_SIZE = 2**50  # 1 PiB: a sanity bound, not a quota
ORPHAN_GRACE_SECONDS = 24 * 3600.0
READABLE = (VersionState.READY, VersionState.ARCHIVED)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_path(path: str, field: str = "path") -> str:
    """A file path inside a version that every platform can write: relative,
    `/`-separated, no `.`/`..`/empty parts, no backslash, no control or invisible format
    character, no Windows drive or device name, at most 1024 bytes."""
    problem = _path_problem(path, _PATH_RULES)
    if problem:
        raise InvalidArgument.field(field, problem)
    return path


def check_stored_path(path: str, field: str = "path") -> str:
    """A path to look a file up by: required and bounded, and otherwise any path, so files
    stored before a rule was added stay readable (a path no file has is NOT_FOUND)."""
    problem = _path_problem(path, _PATH_RULES[:_LOOKUP_RULES])
    if problem:
        raise InvalidArgument.field(field, problem)
    return path


def _path_problem(path: str, rules: tuple[tuple[Callable[[str], bool], str], ...]) -> str:
    return next((what for bad, what in rules if bad(path)), "")


def _has_control(path: str) -> bool:
    if path.isascii():
        return any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
    return any(unicodedata.category(c) in _CONTROL for c in path)


def _has_format(path: str) -> bool:
    return not path.isascii() and any(unicodedata.category(c) in _FORMAT for c in path)


def _is_device(part: str) -> bool:
    # Windows reads `nul.txt` and `NUL .tar.gz` as the device too: the name before the
    # first dot, trailing spaces dropped, any case.
    return part.split(".", 1)[0].rstrip(" ").upper() in _DEVICES


_CONTROL = ("Cc", "Zl", "Zp")  # C0, DEL, C1; U+2028/U+2029 break lines like LF
_FORMAT = ("Cf",)  # zero-width and bidirectional controls (U+200B-F, U+202A-E, U+2066-9)
_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [
        f"{kind}{n}"
        for kind in ("COM", "LPT")
        for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]
    ]
)
_DRIVE = re.compile(r"[A-Za-z]:")

_LOOKUP_RULES = 2  # the first rules below are the ones a lookup needs
_PATH_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda p: not p, "path is required"),
    (lambda p: len(p.encode()) > MAX_PATH, f"path must be at most {MAX_PATH} bytes"),
    (lambda p: p.startswith("/"), "path must be relative, not absolute"),
    (lambda p: "\\" in p, "path must use '/' separators, not backslashes"),
    (_has_control, "path must not contain NUL or other control characters"),
    (
        _has_format,
        "path must not contain invisible format characters such as bidirectional"
        " overrides (U+202E) or zero-width spaces (Unicode category Cf)",
    ),
    (
        lambda p: _DRIVE.match(p) is not None,
        "path must not start with a Windows drive (like 'C:'); make it relative",
    ),
    (
        lambda p: any(part in ("", ".", "..") for part in p.split("/")),
        "path must not contain empty, '.' or '..' parts",
    ),
    (
        lambda p: any(_is_device(part) for part in p.split("/")),
        "path must not use a name Windows reserves for devices (CON, PRN, AUX, NUL,"
        " COM1-9, LPT1-9), with or without an extension",
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
class Manifest:
    """A version and its files."""

    version: ModelVersion
    files: list[VersionFile]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


class Artifacts:
    """The artifact aggregate: finalize, fail, manifests, downloads, dedup, orphans."""

    def __init__(self, *, store: ArtifactStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs

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
            require_pending(current, "finalized")
            await _refuse_live_uploads(tx, key, "finalized")
            _compare(key, expected, await tx.version_files(version=key))
            total = sum(f.size for f in expected)
            ready = dataclasses.replace(
                current, state=VersionState.READY, digest=digest, total_size=total
            )
            saved = await tx.save_version(version=ready)
            await record(tx, EventKind.VERSION_FINALIZED, saved, actor, before=current, after=saved)
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
            require_pending(current, "marked FAILED")
            await _refuse_live_uploads(tx, key, "marked FAILED")
            failed = dataclasses.replace(current, state=VersionState.FAILED)
            saved = await tx.save_version(version=failed)
            await record(tx, EventKind.VERSION_FAILED, saved, actor, before=current, after=saved)
            dropped = await tx.drop_uploads(version=key)
        await self._discard(key, dropped)
        return saved

    async def manifest(self, *, ref: Reference) -> Manifest:
        """A version and its files (a PENDING version's files uploaded so far)."""
        version = await self._store.resolve(ref=ref)
        return Manifest(version, await self._store.list_files(version=version.key))

    async def download(
        self, *, ref: Reference, path: str, offset: int, limit: int
    ) -> tuple[ModelVersion, VersionFile, AsyncIterator[Pieces]]:
        """The version, the file, and its bytes from `offset` (at most `limit`; 0 = to the end)."""
        check_stored_path(path)
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
        """Delete blobs no live version holds and nobody used for `grace_seconds`.

        Each blob goes under an exclusive lock on its digest, held until its bytes are
        deleted; an upload linking that digest takes the lock shared and checks the
        bytes are there under it, so it either sees them gone or keeps them alive."""
        found = await self._store.orphaned_blobs(grace_seconds=grace_seconds, limit=limit)
        collected = []
        for sha256 in found:
            async with self._store.transaction() as tx:
                if await tx.forget_blob(sha256=sha256, grace_seconds=grace_seconds):
                    await self._blobs.delete(sha256=sha256)
                    collected.append(sha256)
        return collected

    async def _discard(self, version: VersionKey, uploads: Iterable[UploadSession]) -> None:
        for upload in uploads:
            key, sha256 = staging_key(version, upload.upload_id), upload.file.sha256
            await self._blobs.discard_upload(key=key, sha256=sha256, staged=upload.progress)


def require_pending(version: ModelVersion, verb: str) -> None:
    """FAILED_PRECONDITION unless the version is PENDING; `verb` says what was refused."""
    if version.state != VersionState.PENDING:
        raise FailedPrecondition(
            f"{version.key.name} is {version.state.name}; only PENDING versions can be {verb}",
            reason="VERSION_NOT_PENDING",
            metadata={"resource": version.key.name, "state": version.state.name},
        )


async def _refuse_live_uploads(tx: ArtifactTransaction, key: VersionKey, verb: str) -> None:
    """One stream at a time, finalize included: a running stream would be refused at its
    next write once its upload is dropped, but its answer would be a puzzle."""
    live = await tx.live(version=key)
    if live:
        raise FailedPrecondition(
            f"{key.name} cannot be {verb} while upload {live[0]} is streaming; let it end"
            " (a stream whose server died is released within MODELREG_UPLOAD_LEASE_SECONDS)",
            reason="UPLOAD_IN_PROGRESS",
            metadata={"resource": key.name, "upload_id": live[0]},
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
