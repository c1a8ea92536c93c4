"""A Watch client that falls behind or stops reading never grows the server's memory: its
stream's buffer (MODELREG_WATCH_BUFFER_EVENTS, small here) overflows into catch-up reads
of the table, and a client that reads nothing for MODELREG_WATCH_STALL_SECONDS is cut
with RESOURCE_EXHAUSTED naming the last revision written; resuming after it loses
nothing. (The memory this bounds is measured in benchmarks/watch.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey
from modelreg.store.postgres import PostgresStore, create_pool
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc
from tests.helpers import authed_channel, rich_status

Call = grpc.aio.UnaryStreamCall[ws.WatchRequest, ws.WatchResponse]
# what read() returns once a stream has ended; grpc-stubs 1.53 declares no grpc.aio.EOF
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]
MODEL = ModelKey("default", "flow")
TRANSACTIONS = 300
EVENTS_EACH = 10  # 3,000 events of ~300 bytes: far past a 64 KiB window and the buffer
BUFFER_EVENTS = 50
# A window that does not grow (no BDP probing), so a client that stops reading holds the
# server's writes after ~100 KiB rather than after several MiB.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]


@pytest.fixture
async def writer(clean: None, database_url: str) -> AsyncIterator[Callable[[], asyncio.Task[int]]]:
    """Starts the writer: TRANSACTIONS transactions of EVENTS_EACH events each, through
    the store (so each ends with its stamp); the task returns the last revision."""
    pool = await create_pool(database_url, max_size=2)
    store = PostgresStore(pool)

    async def write() -> int:
        for t in range(TRANSACTIONS):
            async with store.transaction() as tx:
                for n in range(EVENTS_EACH):
                    after = {"t": t, "n": n, "pad": "x" * 200}
                    subject = AliasKey(MODEL, f"a{n}")
                    event = Event(
                        EventKind.ALIAS_SET, subject, "flow", after=after, latest_moved=False
                    )
                    await tx.append_event(event=event)
        head: int = await pool.fetchval("SELECT max(revision) FROM events")
        return head

    tasks: list[asyncio.Task[int]] = []

    def start() -> asyncio.Task[int]:
        tasks.append(asyncio.create_task(write()))
        return tasks[-1]

    yield start
    await asyncio.gather(*tasks, return_exceptions=True)
    await pool.close()


async def _server(
    database_url: str, home: Path, stall: float, stack: AsyncExitStack
) -> RunningServer:
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        home=home,
        grace_seconds=1,
        watch_buffer_events=BUFFER_EVENTS,
        watch_stall_seconds=stall,
    )
    return await start_server(settings, stack)


async def _counted(server: RunningServer, name: str) -> None:
    """Wait until the server counted `name` (polls an in-process counter; the interval
    orders nothing)."""
    for _ in range(3000):
        if server.services.stats[name]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server never counted {name}")


def _watch(channel: grpc.aio.Channel, request: ws.WatchRequest) -> Call:
    return ws_grpc.WatchServiceStub(channel).Watch(request)


async def _next(call: Call) -> ws.WatchResponse | None:
    """The next message; None once the stream ended."""
    message = await call.read()
    if message is EOF:
        return None
    assert isinstance(message, ws.WatchResponse)
    return message


async def _read_all(call: Call, until: int) -> list[ws.WatchResponse]:
    """Messages with events until one at revision `until`."""
    got = []
    async with asyncio.timeout(60):
        while True:
            message = await _next(call)
            assert message is not None, "the stream ended"
            if message.events:
                got.append(message)
            if message.revision >= until:
                return got


async def _committed(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch(
        "SELECT DISTINCT revision FROM events WHERE resource LIKE $1 ORDER BY revision",
        f"{MODEL.name}/%",
    )
    return [row["revision"] for row in rows]


def _check(messages: list[ws.WatchResponse], committed: list[int]) -> None:
    revisions = [m.revision for m in messages]
    assert revisions == sorted(set(revisions)), "duplicated or out of order"
    assert revisions == committed, "a gap"
    assert all(len(m.events) == EVENTS_EACH for m in messages), "a transaction split"


async def test_a_client_that_falls_behind_is_fed_from_the_table_then_rejoins(
    writer: Callable[[], asyncio.Task[int]],
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        server = await _server(database_url, tmp_path, stall=60, stack=stack)
        channel = await stack.enter_async_context(
            authed_channel(f"127.0.0.1:{server.port}", options=SMALL_WINDOW)
        )
        call = _watch(channel, ws.WatchRequest(models=[MODEL.name]))
        assert (
            await _next(call) or ws.WatchResponse()
        ).bookmark  # established, live: now stop reading
        head = await writer()  # the whole writer runs while the client reads nothing
        await _counted(server, "watch.overflows")  # its buffer filled...
        messages = await _read_all(call, head)  # ...and it reads on, from the table
        assert server.services.stats["watch.catch_ups"] >= 1
        _check(messages, await _committed(db))
        rejoined = writer()  # live again: what commits now comes from the hub
        later = await _read_all(call, await rejoined)
        _check(messages + later, await _committed(db))
        call.cancel()


async def test_a_client_that_stops_reading_is_cut_naming_its_last_revision(
    writer: Callable[[], asyncio.Task[int]],
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        # A short bound, waited out below by the counter of stalled streams.
        server = await _server(database_url, tmp_path, stall=0.5, stack=stack)
        channel = await stack.enter_async_context(
            authed_channel(f"127.0.0.1:{server.port}", options=SMALL_WINDOW)
        )
        call = _watch(channel, ws.WatchRequest(models=[MODEL.name]))
        assert (await _next(call) or ws.WatchResponse()).bookmark
        head = await writer()
        await _counted(server, "watch.stalled")
        received: list[ws.WatchResponse] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _read_into(call, received)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        last = int(_error_info(caught.value).metadata["last_revision"])
        revisions = [m.revision for m in received]
        assert revisions == sorted(set(revisions))
        # Every message up to `last` arrived; the one being written at the cut may have too.
        assert last in revisions[-2:], (last, revisions[-3:])
        resumed = _watch(channel, ws.WatchRequest(models=[MODEL.name], after_revision=last))
        rest = await _read_all(resumed, head)
        kept = [m for m in received if m.events and m.revision <= last]
        _check(kept + rest, await _committed(db))
        resumed.cancel()


async def _read_into(call: Call, received: list[ws.WatchResponse]) -> None:
    """Read until the stream ends (it must end in an error: raise it)."""
    async with asyncio.timeout(60):
        while (message := await _next(call)) is not None:
            received.append(message)
    raise AssertionError("the stream ended without an error")


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    for detail in rich_status(error).details:
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo")
