"""The local side of `push` and `pull`: the files a path holds, streaming sha256, safe
destinations, `.part` files written and hashed off the event loop, and bounded fan-out.

Disk reads, writes and hashing run in worker threads in blocks of a few MiB (hashlib and
file I/O release the GIL), one block in flight per file, so memory stays flat whatever
the file size and the event loop keeps the gRPC streams fed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from modelreg.client.errors import DataLossError, InvalidArgumentError

BLOCK = 4 * 1024 * 1024  # bytes per disk read, write and hash hand-off


def local_files(root: Path) -> list[tuple[str, Path]]:
    """(path inside the version, file on disk): `root` itself if it is a file, else every
    regular file below it (symlinks to files followed, to directories not), by path."""
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise FileNotFoundError(f"no file or directory at {root}")
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            source = Path(folder, name)
            if source.is_file():
                found.append((source.relative_to(root).as_posix(), source))
    return sorted(found, key=lambda pair: pair[0].encode())


async def sha256_of(source: Path, on_block: Callable[[int], None]) -> tuple[int, str]:
    """Size and hex sha256 of a file, read a block at a time in a worker thread."""
    digest = hashlib.sha256()
    with await asyncio.to_thread(source.open, "rb", buffering=0) as file:

        def step() -> int:
            block = file.read(BLOCK)
            digest.update(block)
            return len(block)

        size = 0
        while count := await asyncio.to_thread(step):
            size += count
            on_block(count)
    return size, digest.hexdigest()


def safe_destination(dest: Path, path: str) -> Path:
    """Where the version's file `path` goes below `dest`; refuses paths that would escape it."""
    parts = path.split("/")
    unsafe = (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
    )
    target = dest.joinpath(*parts)
    root = os.path.realpath(dest)
    if unsafe or not os.path.realpath(target).startswith(root + os.sep):
        raise InvalidArgumentError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the manifest names a path that would escape {dest}: {path!r}",
            reason="UNSAFE_PATH",
            field_violations=[("files.path", "must stay inside the destination")],
        )
    return target


async def run_bounded(jobs: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run the jobs, at most `concurrency` at once; the first failure cancels the rest and
    is raised as itself (not wrapped in an ExceptionGroup)."""
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:  # workers share the iterator, so each job runs once
            await job()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, concurrency)):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise _first(failed) from None


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


class PartFile:
    """A download in progress at `<target>.part`: appended and hashed a batch at a time in a
    worker thread, one batch in flight; renamed onto `target` once whole and verified."""

    def __init__(self, target: Path, file: Any, offset: int, digest: Any) -> None:
        self.target, self._file, self.offset, self._digest = target, file, offset, digest
        self._batch: list[memoryview] = []
        self._batched = 0
        self._in_flight: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, target: Path, size: int) -> PartFile:
        """Resume `<target>.part` (its bytes re-hashed), or start it; one longer than the
        file is started again."""
        file, offset, digest = await asyncio.to_thread(_open_part, part_path(target), size)
        return cls(target, file, offset, digest)

    async def write(self, data: memoryview) -> None:
        """Append `data` (written once a batch is full, or on finish/close)."""
        self._batch.append(data)
        self._batched += len(data)
        self.offset += len(data)
        if self._batched >= BLOCK:
            await self._flush()

    async def finish(self, size: int, sha256: str) -> None:
        """Verify size and sha256, fsync, rename into place; DataLossError (and the `.part`
        removed) if the bytes are wrong."""
        await self._drain()
        actual = self._digest.hexdigest()
        if self.offset != size or actual != sha256:
            await asyncio.to_thread(self._remove)
            raise DataLossError(
                grpc.StatusCode.DATA_LOSS,
                f"{self.target}: received {self.offset} bytes hashing to {actual},"
                f" expected {size} bytes hashing to {sha256}",
                reason="DIGEST_MISMATCH",
            )
        await asyncio.to_thread(self._publish)

    async def close(self) -> None:
        """Write what was received and close, keeping the `.part` for a resume."""
        if not self._file.closed:
            await self._drain()
            await asyncio.to_thread(self._file.close)

    async def _flush(self) -> None:
        if self._in_flight is not None:
            await self._in_flight
        batch, self._batch, self._batched = self._batch, [], 0
        self._in_flight = asyncio.ensure_future(asyncio.to_thread(self._absorb, batch))

    async def _drain(self) -> None:
        await self._flush()
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    def _absorb(self, batch: list[memoryview]) -> None:
        for data in batch:
            self._digest.update(data)
            self._file.write(data)

    def _publish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(part_path(self.target), self.target)
        directory = os.open(self.target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _remove(self) -> None:
        self._file.close()
        part_path(self.target).unlink(missing_ok=True)


def part_path(target: Path) -> Path:
    """Where the download of `target` is staged."""
    return target.with_name(target.name + ".part")


def _open_part(part: Path, size: int) -> tuple[Any, int, Any]:
    part.parent.mkdir(parents=True, exist_ok=True)
    longer = part.exists() and part.stat().st_size > size
    file = part.open("wb" if longer else "ab")  # "ab" starts at the end of what is there
    digest = hashlib.sha256()
    with part.open("rb", buffering=0) as done:
        while block := done.read(BLOCK):
            digest.update(block)
    return file, file.tell(), digest
