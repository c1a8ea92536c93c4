"""In-memory fakes of our own ports, for unit tests of the domain's rules without
PostgreSQL, S3 or the wall clock."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from modelreg.domain.errors import AlreadyExists, NotFound, Unavailable
from modelreg.domain.events import Event
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.ports import Pieces
from modelreg.domain.types import (
    ModelVersion,
    Part,
    UploadProgress,
    UploadSession,
    VersionFile,
    VersionState,
)

# --- uploads: a clock the test moves (domain/leases.py, domain/uploads.py) -----------------


class FakeClock:
    """The Clock port, on a time that moves only when the test calls `advance`."""

    def __init__(self) -> None:
        self._now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._timeouts: list[tuple[float, asyncio.Timeout]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, woken))
        await woken

    @asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        async with asyncio.timeout(None) as block:
            entry = (self._now + seconds, block)
            self._timeouts.append(entry)
            try:
                yield
            finally:
                self._timeouts.remove(entry)

    async def advance(self, seconds: float) -> None:
        """Move time on, wake what was due, and let the woken tasks run."""
        self._now += seconds
        loop = asyncio.get_running_loop()
        for due, woken in [s for s in self._sleepers if s[0] <= self._now]:
            self._sleepers.remove((due, woken))
            if not woken.done():
                woken.set_result(None)
        for _, block in [t for t in self._timeouts if t[0] <= self._now]:
            block.reschedule(loop.time())  # expires now: TimeoutError out of its block
        for _ in range(20):  # enough hops for a woken task to reach its next wait
            await asyncio.sleep(0)


# --- uploads: the sessions, their lease and progress (store/uploads.py) ---------------------


@dataclass
class _Row:
    session: UploadSession
    token: int = 0
    until: float | None = None  # None: released (or never claimed)


@dataclass
class _Tables:
    versions: dict[VersionKey, VersionState] = field(default_factory=dict)
    uploads: dict[tuple[VersionKey, str], _Row] = field(default_factory=dict)
    files: dict[VersionKey, dict[str, VersionFile]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


class InMemoryUploadStore:
    """The upload parts of ArtifactStore (the uploads' transactions and reads) and the
    UploadLeases port, in memory with the same rules as store/uploads.py: a claim takes
    the next token once the lease is released or past `clock`'s time; progress is written
    only under the current token. Transactions run one at a time and roll back on error."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._tables = _Tables()
        self._one_at_a_time = asyncio.Lock()
        self.refused_progress = 0  # guarded writes that changed nothing

    def add_version(self, key: VersionKey) -> None:
        """A PENDING version to upload to."""
        self._tables.versions[key] = VersionState.PENDING

    def files(self, key: VersionKey) -> dict[str, VersionFile]:
        return dict(self._tables.files.get(key, {}))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        async with self._one_at_a_time:
            saved = copy.deepcopy(self._tables)
            try:
                yield _Transaction(self)
            except BaseException:
                self._tables = saved
                raise

    async def get_upload(self, *, version: VersionKey, upload_id: str) -> UploadSession:
        row = self._tables.uploads.get((version, upload_id))
        if row is None:
            raise NotFound(f"{version.name}/uploads/{upload_id}")
        return row.session

    async def claim(self, *, version: VersionKey, upload_id: str, seconds: float) -> int | None:
        async with self.transaction() as tx:
            return await tx.claim(version=version, upload_id=upload_id, seconds=seconds)

    async def renew(
        self, *, version: VersionKey, upload_id: str, token: int, seconds: float
    ) -> bool:
        async with self.transaction() as tx:
            return await tx.renew(
                version=version, upload_id=upload_id, token=token, seconds=seconds
            )

    async def release(self, *, version: VersionKey, upload_id: str, token: int) -> None:
        async with self.transaction() as tx:
            await tx.release(version=version, upload_id=upload_id, token=token)

    async def live(self, *, version: VersionKey) -> list[str]:
        async with self.transaction() as tx:
            return await tx.live(version=version)


class _Transaction:
    def __init__(self, store: InMemoryUploadStore) -> None:
        self._store = store

    @property
    def _t(self) -> _Tables:
        return self._store._tables

    def _row(self, version: VersionKey, upload_id: str) -> _Row | None:
        return self._t.uploads.get((version, upload_id))

    async def lock_version(self, *, key: VersionKey, shared: bool = False) -> ModelVersion:
        if key not in self._t.versions:
            raise NotFound(key.name)
        return ModelVersion(key, state=self._t.versions[key])

    async def save_upload(self, *, session: UploadSession) -> UploadSession:
        row = self._t.uploads.setdefault((session.version, session.upload_id), _Row(session))
        return row.session

    async def claim(self, *, version: VersionKey, upload_id: str, seconds: float) -> int | None:
        row, now = self._row(version, upload_id), self._store.clock.now()
        if row is None or row.session.complete or (row.until is not None and row.until >= now):
            return None
        row.token, row.until = row.token + 1, now + seconds
        return row.token

    async def renew(
        self, *, version: VersionKey, upload_id: str, token: int, seconds: float
    ) -> bool:
        row = self._row(version, upload_id)
        if row is None or row.token != token or row.until is None or row.session.complete:
            return False
        row.until = self._store.clock.now() + seconds
        return True

    async def release(self, *, version: VersionKey, upload_id: str, token: int) -> None:
        row = self._row(version, upload_id)
        if row is not None and row.token == token:
            row.until = None

    async def live(self, *, version: VersionKey) -> list[str]:
        now = self._store.clock.now()
        return sorted(
            upload_id
            for (key, upload_id), row in self._t.uploads.items()
            if key == version and row.until is not None and row.until > now
        )

    async def record_progress(
        self,
        *,
        version: VersionKey,
        upload_id: str,
        token: int,
        progress: UploadProgress,
        complete: bool = False,
    ) -> bool:
        row = self._row(version, upload_id)
        if row is None or row.token != token or row.session.complete:
            self._store.refused_progress += 1
            return False
        row.session = replace(row.session, progress=progress, complete=complete)
        return True

    async def drop_uploads(self, *, version: VersionKey) -> list[UploadSession]:
        dropped = [k for k in self._t.uploads if k[0] == version]
        return [self._t.uploads.pop(k).session for k in dropped]

    async def find_file(self, *, version: VersionKey, path: str) -> VersionFile | None:
        return self._t.files.get(version, {}).get(path)

    async def count_files(self, *, version: VersionKey) -> int:
        return len(self._t.files.get(version, {}))

    async def add_file(self, *, version: VersionKey, file: VersionFile) -> None:
        files = self._t.files.setdefault(version, {})
        if files.setdefault(file.path, file) != file:
            raise AlreadyExists(f"{version.name}/files/{file.path}")

    async def reserve_blob(self, *, model: ModelKey, sha256: str, size: int) -> None:
        return None  # blob records matter to collection, which these fakes do not run

    async def lock_blob(self, *, sha256: str) -> None:
        return None

    async def append_event(self, *, event: Event) -> None:
        self._t.events.append(event)


# --- uploads: blobs, staged the way S3 stages them (blobs/s3.py) ----------------------------


def checksum(data: bytes) -> str:
    """A part's checksum as S3 gives it: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class InMemoryBlobs:
    """The BlobStore port in memory, staged as on S3: every stream of an upload writes
    parts of `part_size` into one staging area shared by all of them (as a multipart
    upload is), and publishing assembles exactly the recorded parts, refusing
    (UPLOAD_EXPIRED) one whose bytes are not the recorded ones any more.

    `before_publish`, if set, runs right before a publish assembles the parts."""

    def __init__(self, part_size: int = 1024) -> None:
        self.part_size = part_size
        self.blobs: dict[str, bytes] = {}
        self.staged: dict[str, dict[int, bytes]] = {}
        self.before_publish: Callable[[], Awaitable[None]] | None = None

    async def sizes(self, *, digests: Sequence[str]) -> dict[str, int]:
        return {d: len(self.blobs[d]) for d in digests if d in self.blobs}

    async def open_upload(
        self,
        *,
        key: str,
        sha256: str,
        size: int,
        token: int,
        resume: UploadProgress,
        on_progress: Callable[[UploadProgress], None],
    ) -> StagedParts:
        parts = self.staged.setdefault(key, {})
        usable = resume.staging == key and all(
            checksum(parts.get(p.number, b"")) == p.checksum for p in resume.parts
        )
        return StagedParts(
            self, key, sha256, size, resume if usable else UploadProgress(), on_progress
        )

    async def discard_upload(self, *, key: str, sha256: str, staged: UploadProgress) -> None:
        self.staged.pop(key, None)

    async def read(self, *, sha256: str, offset: int, limit: int) -> AsyncIterator[Pieces]:
        if sha256 not in self.blobs:
            raise NotFound(f"blobs/sha256:{sha256}")
        yield (self.blobs[sha256][offset : offset + limit],)

    async def delete(self, *, sha256: str) -> None:
        self.blobs.pop(sha256, None)


class StagedParts:
    """One stream's StagedBlob of InMemoryBlobs."""

    def __init__(  # noqa: PLR0917
        self,
        blobs: InMemoryBlobs,
        key: str,
        sha256: str,
        size: int,
        resume: UploadProgress,
        on_progress: Callable[[UploadProgress], None],
    ) -> None:
        self._blobs, self._key, self._sha256, self._size = blobs, key, sha256, size
        self._on_progress = on_progress
        self._parts = list(resume.parts)
        shared = blobs.staged.setdefault(key, {})
        self._hasher = hashlib.sha256(b"".join(shared[p.number] for p in self._parts))
        self._buffer = b""

    @property
    def progress(self) -> UploadProgress:
        if not self._parts:
            return UploadProgress()
        return UploadProgress(sum(p.size for p in self._parts), self._key, parts=tuple(self._parts))

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self._blobs.part_size:
            part, self._buffer = (
                self._buffer[: self._blobs.part_size],
                self._buffer[self._blobs.part_size :],
            )
            self._send(part)
            if self.progress.committed_size < self._size:
                self._on_progress(self.progress)

    async def finish(self) -> tuple[str, UploadProgress]:
        if self._buffer or not self._parts:
            self._send(self._buffer)
            self._buffer = b""
        return self._hasher.hexdigest(), replace(self.progress, committed_size=self._size)

    async def publish(self, progress: UploadProgress) -> None:
        if self._blobs.before_publish is not None:
            await self._blobs.before_publish()
        shared = self._blobs.staged.get(progress.staging, {})
        held = [shared.get(p.number) for p in progress.parts]
        if any(
            d is None or checksum(d) != p.checksum
            for d, p in zip(held, progress.parts, strict=True)
        ):
            raise Unavailable("a recorded part is not held any more", reason="UPLOAD_EXPIRED")
        self._blobs.blobs[self._sha256] = b"".join(d for d in held if d is not None)

    async def pause(self) -> UploadProgress:
        self._buffer = b""
        return self.progress

    async def discard(self) -> None:
        self._blobs.staged.pop(self._key, None)
        self._parts = []

    def _send(self, part: bytes) -> None:
        self._hasher.update(part)
        number = len(self._parts) + 1
        self._blobs.staged.setdefault(self._key, {})[number] = part
        self._parts.append(
            Part(
                number,
                len(part),
                hashlib.md5(part, usedforsecurity=False).hexdigest(),
                checksum(part),
            )
        )


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of `size` bytes."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
