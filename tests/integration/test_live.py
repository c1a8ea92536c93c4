"""The SDK's live cache against the real server: load then follow with no gap, change
callbacks, models mode, errors, never backwards under a fast-moving alias followed from
several processes, and resuming after the stream is cut."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from modelreg.client import AsyncClient, Client, NotFollowedError, NotFoundError, OutOfRangeError
from modelreg.client.live import LiveCache
from modelreg.v1 import resources_pb2 as res
from modelreg.v1 import watch_service_pb2 as ws
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
WAIT = 30  # seconds: a change that takes this long is not coming (the test fails)
MOVES = 300  # the benchmark (benchmarks/live.py) moves 1,000 times with 100 followers


@pytest.fixture
async def client(target: str, clean: None) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as sdk:
        yield sdk


async def new_model(client: AsyncClient, versions: int) -> str:
    model = f"default/live{uuid.uuid4().hex[:8]}"
    await client.create_model(model)
    for _ in range(versions):
        await client.create_version(model, ready=True)
    return model


class Changes:
    """on_change calls, as a queue a test can wait on."""

    def __init__(self, live: LiveCache) -> None:
        self.queue: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()
        live.on_change(self)

    def __call__(
        self, ref: str, old: res.ModelVersion | None, new: res.ModelVersion | None
    ) -> None:
        self.queue.put_nowait((ref, old.number if old else 0, new.number if new else 0))

    async def next(self) -> tuple[str, int, int]:
        async with asyncio.timeout(WAIT):
            return await self.queue.get()


async def until(live: LiveCache, reference: str, number: int) -> None:
    """Wait (event-driven, on the cache's own callbacks) until `reference` shows `number`."""
    reached = asyncio.Event()

    def check(*_: Any) -> None:
        if live.resolve(reference).number == number:
            reached.set()

    stop = live.on_change(check)
    try:
        check()
        async with asyncio.timeout(WAIT):
            await reached.wait()
    finally:
        stop()


async def test_resolve_from_memory_follow_moves_and_call_back(client: AsyncClient) -> None:
    model = await new_model(client, versions=3)
    await client.set_alias(model, "prod", 1)
    ref = f"{model}@prod"
    async with client.live(references=[ref, f"{model}:2", model]) as live:
        changes = Changes(live)
        assert live.resolve(ref).number == 1
        assert live.resolve(f"{model}:2").number == 2
        assert live.resolve(model).number == 3  # latest
        assert live.resolve(f"{model}@latest").number == 3  # another spelling, one entry
        await client.set_alias(model, "prod", 2)
        assert await changes.next() == (f"{model}@prod", 1, 2)
        assert live.resolve(ref).number == 2
        await client.create_version(model, ready=True)
        assert await changes.next() == (f"{model}@latest", 3, 4)
        await client.delete_alias(model, "prod")
        assert await changes.next() == (f"{model}@prod", 2, 0)
        with pytest.raises(NotFoundError):
            live.resolve(ref)
        with pytest.raises(NotFollowedError, match="is not followed"):
            live.resolve(f"{model}@canary")
        assert live.revision > 0
        assert live.lag < WAIT


async def test_models_mode_follows_every_alias_and_latest_new_aliases_included(
    client: AsyncClient,
) -> None:
    model = await new_model(client, versions=2)
    await client.set_alias(model, "prod", 1)
    async with client.live(models=[model]) as live:
        changes = Changes(live)
        assert sorted(live.references) == [f"{model}@latest", f"{model}@prod"]
        await client.set_alias(model, "canary", 2)
        assert await changes.next() == (f"{model}@canary", 0, 2)
        assert live.resolve(f"{model}@canary").number == 2


class RacingClient:
    """The live cache's client, moving the alias at the worst moments of start(): after the
    head revision was read and before the load's read, and after the load and before the
    watch opened. Everything else is the real client."""

    def __init__(self, real: AsyncClient, move: Any) -> None:
        self._real, self._move = real, move

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def batch_get(self, refs: list[str], **kwargs: Any) -> Any:
        await self._move()  # committed after the head was read
        return await self._real.batch_get(refs, **kwargs)

    def watch(self, **kwargs: Any) -> AsyncGenerator[ws.WatchResponse, None]:
        async def moved_then_watched() -> AsyncGenerator[ws.WatchResponse, None]:
            await self._move()  # committed after the load, before the stream opens
            async for message in self._real.watch(**kwargs):
                yield message

        return moved_then_watched()


async def test_no_gap_between_load_and_follow(client: AsyncClient) -> None:
    model = await new_model(client, versions=4)
    await client.set_alias(model, "prod", 1)
    numbers = iter([2, 3, 4])
    moved: list[int] = []

    async def move() -> None:
        number = next(numbers, None)
        if number is not None and len(moved) < 2:
            await client.set_alias(model, "prod", number)
            moved.append(number)

    live = LiveCache(RacingClient(client, move), references=[f"{model}@prod"])  # type: ignore[arg-type]
    async with live:
        await until(live, f"{model}@prod", 3)
    assert moved == [2, 3]


async def test_a_fast_moving_alias_followed_from_several_processes_never_goes_back(
    client: AsyncClient, target: str
) -> None:
    model = await new_model(client, versions=MOVES)
    ref = f"{model}@prod"
    await client.set_alias(model, "prod", 1)
    followers = [await start_follower(target, ref, MOVES, caches=2) for _ in range(3)]
    backwards, shown = 0, {}
    async with AsyncExitStack() as stack:
        lives = []
        for index in range(2):
            own = await stack.enter_async_context(AsyncClient(target))
            live = await stack.enter_async_context(own.live(references=[ref]))
            shown[index] = live.resolve(ref).number

            def on_change(r: str, old: Any, new: Any, index: int = index) -> None:
                nonlocal backwards
                backwards += new.number < shown[index]
                shown[index] = new.number

            live.on_change(on_change)
            lives.append(live)
        for number in range(2, MOVES + 1):
            await client.set_alias(model, "prod", number)
        results = [await finish_follower(proc) for proc in followers]
        for live in lives:
            await until(live, ref, MOVES)
    assert backwards == 0
    assert [r["violations"] for r in results] == [0, 0, 0]
    assert all(c[1] == MOVES for r in results for c in r["changes"][-1:])


async def start_follower(target: str, ref: str, final: int, caches: int) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.live_follower",
        target,
        ref,
        str(final),
        str(caches),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        assert (await proc.stdout.readline()).strip() == b"ready"
    return proc


async def finish_follower(proc: Any) -> dict[str, Any]:
    async with asyncio.timeout(WAIT * 2):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class CuttableProxy:
    """A loopback TCP proxy to the server that the test can cut: `cut()` closes every
    connection and refuses new ones until `mend()`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._open = asyncio.Event()
        self._open.set()
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.cuts = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open.is_set():
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        self._pipes |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()
            self._pipes.discard(sink)

    def cut(self) -> None:
        self._open.clear()
        self.cuts += 1
        for pipe in list(self._pipes):
            pipe.transport.abort()

    def mend(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self.cut()
        self._server.close()
        await self._server.wait_closed()


async def test_a_cut_stream_resumes_without_missing_the_last_move(
    client: AsyncClient, server: Any
) -> None:
    model = await new_model(client, versions=3)
    ref = f"{model}@prod"
    await client.set_alias(model, "prod", 1)
    proxy = CuttableProxy(server.port)
    await proxy.start()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{proxy.port}", retries=0) as through_proxy,
            through_proxy.live(references=[ref]) as live,
        ):
            await client.set_alias(model, "prod", 2)
            await until(live, ref, 2)
            proxy.cut()  # every connection closed, new ones refused
            await client.set_alias(model, "prod", 3)  # the last move, made while cut off
            assert live.resolve(ref).number == 2  # it cannot have heard of it
            proxy.mend()
            await until(live, ref, 3)
    finally:
        await proxy.close()


async def test_a_cache_resumed_past_what_the_log_keeps_reloads(
    client: AsyncClient, server: Any, db: Any
) -> None:
    model = await new_model(client, versions=3)
    ref = f"{model}@prod"
    await client.set_alias(model, "prod", 1)
    proxy = CuttableProxy(server.port)
    await proxy.start()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{proxy.port}", retries=0) as through_proxy,
            through_proxy.live(references=[ref]) as live,
        ):
            proxy.cut()
            await client.set_alias(model, "prod", 2)
            await client.set_alias(model, "prod", 3)
            # the log forgets everything up to the last move: resuming after the cache's
            # revision would miss a change, so the server answers OUT_OF_RANGE
            # (behind the append-only triggers, as a compaction by the owner would be)
            await db.execute("SET session_replication_role = replica")
            await db.execute(
                "DELETE FROM events WHERE revision < (SELECT max(revision) FROM events)"
            )
            await db.execute("RESET session_replication_role")
            assert live.resolve(ref).number == 1
            proxy.mend()
            await until(live, ref, 3)
            assert isinstance(live.last_error, OutOfRangeError)
    finally:
        await proxy.close()


async def test_the_blocking_client_has_a_live_cache_too(target: str, clean: None) -> None:
    await asyncio.to_thread(_blocking_follow, target)  # in a thread: this loop serves


def _blocking_follow(target: str) -> None:
    with Client(target) as blocking:
        model = f"default/live{uuid.uuid4().hex[:8]}"
        blocking.create_model(model)
        for _ in range(2):
            blocking.create_version(model, ready=True)
        blocking.set_alias(model, "prod", 1)
        with blocking.live(references=[f"{model}@prod"]) as live:
            moved = threading.Event()
            live.on_change(lambda ref, old, new: moved.set())  # on the cache's thread
            assert live.resolve(f"{model}@prod").number == 1
            blocking.set_alias(model, "prod", 2)
            assert moved.wait(WAIT)
            assert live.resolve(f"{model}@prod").number == 2
            live.wait_for(live.revision, timeout=WAIT)  # reached already: returns at once
