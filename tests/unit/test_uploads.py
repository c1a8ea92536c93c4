"""The upload and lease rules against in-memory fakes of our ports and clocks the test
moves: a lease runs out only on the database's clock, a stream renews it on its own,
another stream takes an expired one over from the recorded progress, a stale stream is
refused by the guarded update, and publishing uses only the recorded parts."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelreg.domain.errors import FailedPrecondition, Unavailable
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.types import VersionFile
from modelreg.domain.uploads import Chunk, UploadHeader, Uploads, UploadStatus
from tests.unit.fakes import FakeClock, InMemoryBlobs, InMemoryUploadStore, chunks_of

LEASE = 30.0
PART = 1024
VERSION = VersionKey(ModelKey("default", "m"), 1)
DATA = random.Random(3).randbytes(5 * PART + 17)
FILE = VersionFile("w.bin", len(DATA), hashlib.sha256(DATA).hexdigest())


class World:
    """The database (its clock moves the leases) and the blob store, shared by streams
    that each run on a clock of their own (their process's)."""

    def __init__(self) -> None:
        self.db_clock = FakeClock()
        self.store = InMemoryUploadStore(self.db_clock)
        self.store.add_version(VERSION)
        self.blobs = InMemoryBlobs(part_size=PART)

    def uploads(self, clock: FakeClock) -> Uploads:
        store: Any = self.store  # the upload half of ArtifactStore is all Uploads uses
        return Uploads(
            store=store, leases=store, blobs=self.blobs, lease_seconds=LEASE, clock=clock
        )

    async def status(self) -> UploadStatus:
        return await self.uploads(FakeClock()).status(version=VERSION, upload_id="u")


class Sender:
    """A client's stream: sends `data[offset:stop]`, then waits for `go_on` before the
    rest (`rest`: other bytes to send instead, as a confused or stale client might)."""

    def __init__(self, offset: int = 0, stop: int | None = None, rest: bytes | None = None):
        self.offset, self.stop, self.rest = offset, stop, rest
        self.held, self.go_on, self.done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def chunks(self) -> AsyncIterator[Chunk]:
        stop = len(DATA) if self.stop is None else self.stop
        for piece in chunks_of(DATA[self.offset : stop], 300):
            yield Chunk(piece)
        if stop < len(DATA):
            self.held.set()
            await self.go_on.wait()
            rest = DATA[stop:] if self.rest is None else self.rest
            for piece in chunks_of(rest, 300):
                yield Chunk(piece)
        self.done.set()


def stream(uploads: Uploads, sender: Sender) -> asyncio.Task[UploadStatus]:
    header = UploadHeader(VERSION, FILE, "u", offset=sender.offset)
    return asyncio.create_task(uploads.upload(header=header, chunks=sender.chunks(), actor="t"))


async def test_a_whole_upload_is_published_and_linked() -> None:
    world = World()
    status = await stream(world.uploads(FakeClock()), Sender())
    assert status.complete
    assert world.blobs.blobs[FILE.sha256] == DATA
    assert world.store.files(VERSION) == {"w.bin": FILE}
    assert (await world.status()).complete


async def test_a_live_lease_refuses_a_second_stream_until_it_runs_out() -> None:
    world = World()
    first = Sender(stop=2 * PART)
    running = stream(world.uploads(FakeClock()), first)  # a clock that never moves: stalled
    await first.held.wait()

    with pytest.raises(FailedPrecondition) as refused:
        await stream(world.uploads(FakeClock()), Sender(offset=2 * PART))
    assert refused.value.reason == "UPLOAD_IN_PROGRESS"

    await world.db_clock.advance(LEASE + 1)  # the database's clock: the lease ran out
    taken_over = await stream(world.uploads(FakeClock()), Sender(offset=2 * PART))
    assert taken_over.complete
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_stream_that_keeps_renewing_keeps_its_upload() -> None:
    world = World()
    clock = FakeClock()
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def trickle() -> AsyncIterator[Chunk]:
        while (piece := await pieces.get()) is not None:
            yield Chunk(piece)

    header = UploadHeader(VERSION, FILE, "u")
    running = asyncio.create_task(
        world.uploads(clock).upload(header=header, chunks=trickle(), actor="t")
    )
    parts = list(chunks_of(DATA, PART))
    for piece in parts[:-1]:  # a piece every third of a lease: five thirds in all
        await pieces.put(piece)
        await clock.advance(LEASE / 3)
        await world.db_clock.advance(LEASE / 3)

    with pytest.raises(FailedPrecondition) as refused:
        await stream(world.uploads(FakeClock()), Sender(offset=4 * PART))
    assert refused.value.reason == "UPLOAD_IN_PROGRESS"
    await pieces.put(parts[-1])
    await pieces.put(None)
    assert (await running).complete


async def test_a_takeover_resumes_from_the_recorded_progress() -> None:
    world = World()
    first = Sender(stop=2 * PART + 100)  # two parts recorded, 100 bytes only in hand
    running = stream(world.uploads(FakeClock()), first)
    await first.held.wait()
    assert (await world.status()).committed_size == 2 * PART

    await world.db_clock.advance(LEASE + 1)
    taken_over = await stream(world.uploads(FakeClock()), Sender(offset=2 * PART))

    assert taken_over.complete
    assert world.blobs.blobs[FILE.sha256] == DATA
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


@pytest.mark.parametrize("woken", ["while the takeover streams", "after it finished"])
async def test_a_stale_stream_is_refused_by_the_guarded_update_and_lands_nothing(
    woken: str,
) -> None:
    world = World()
    stale = Sender(stop=2 * PART)  # the right bytes: only the database can tell it is stale
    running = stream(world.uploads(FakeClock()), stale)
    await stale.held.wait()
    await world.db_clock.advance(LEASE + 1)
    other = Sender(offset=2 * PART, stop=3 * PART)
    taking_over = stream(world.uploads(FakeClock()), other)
    await other.held.wait()
    if woken == "after it finished":
        other.go_on.set()
        assert (await taking_over).complete
    refused_before = world.store.refused_progress

    stale.go_on.set()  # it wakes up and goes on as if it still had the upload
    with pytest.raises(Unavailable) as lost:
        await running
    other.go_on.set()

    assert lost.value.reason == "UPLOAD_LEASE_LOST"
    assert world.store.refused_progress > refused_before  # the database said no
    assert (await taking_over).complete
    assert world.blobs.blobs[FILE.sha256] == DATA
    assert world.store.files(VERSION) == {"w.bin": FILE}


async def test_publishing_refuses_a_part_a_stale_stream_replaced() -> None:
    world = World()
    stale = Sender(stop=2 * PART, rest=bytes(PART))  # part 3, with other bytes
    running = stream(world.uploads(FakeClock()), stale)
    await stale.held.wait()
    await world.db_clock.advance(LEASE + 1)

    async def stale_part_lands_first() -> None:
        world.blobs.before_publish = None
        stale.go_on.set()
        await stale.done.wait()

    world.blobs.before_publish = stale_part_lands_first
    with pytest.raises(Unavailable) as expired:
        await stream(world.uploads(FakeClock()), Sender(offset=2 * PART))
    with pytest.raises(Unavailable) as lost:
        await running

    assert expired.value.reason == "UPLOAD_EXPIRED"  # the recorded part 3 is not held
    assert lost.value.reason == "UPLOAD_LEASE_LOST"
    assert FILE.sha256 not in world.blobs.blobs
    assert (await world.status()).committed_size == 0  # it starts again, from 0
    assert (await stream(world.uploads(FakeClock()), Sender())).complete
    assert world.blobs.blobs[FILE.sha256] == DATA


async def test_a_silent_stream_is_paused_after_a_lease_of_nothing() -> None:
    world = World()
    clock = FakeClock()
    silent = Sender(stop=2 * PART)
    running = stream(world.uploads(clock), silent)
    await silent.held.wait()

    await clock.advance(LEASE)

    with pytest.raises(Unavailable) as idle:
        await running
    assert idle.value.reason == "UPLOAD_IDLE"
    assert (await world.status()).committed_size == 2 * PART
    assert (await stream(world.uploads(FakeClock()), Sender(offset=2 * PART))).complete
