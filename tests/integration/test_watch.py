"""WatchService.Watch on a real server: whole transactions in commit order, filters,
start points, bookmarks, OUT_OF_RANGE, and the SDK's resuming iterator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration

from modelreg.app import RunningServer
from modelreg.client import AsyncClient, Client, InvalidArgumentError, OutOfRangeError
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc
from tests.helpers import make_model, make_version, reason_of, rich_status, violations_of

M = "namespaces/default/models/m"
WAIT = 30  # seconds: a message that takes this long is not coming (the test fails)


@pytest.fixture
def watch_stub(channel: grpc.aio.Channel) -> ws_grpc.WatchServiceAsyncStub:
    return ws_grpc.WatchServiceStub(channel)


class Reader:
    """A Watch call read in the background into a queue, so a test can wait for the next
    message (the opening bookmark tells that the stream is established)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: asyncio.Queue[ws.WatchResponse | BaseException] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.call:
                await self.messages.put(message)
        except grpc.aio.AioRpcError as exc:
            await self.messages.put(exc)

    async def next(self) -> ws.WatchResponse:
        async with asyncio.timeout(WAIT):
            item = await self.messages.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def next_change(self) -> ws.WatchResponse:
        while True:
            message = await self.next()
            if not message.bookmark:
                return message

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def open_watch(
    watch_stub: ws_grpc.WatchServiceAsyncStub,
) -> AsyncIterator[Any]:
    readers: list[Reader] = []

    async def open_(request: ws.WatchRequest) -> Reader:
        reader = Reader(watch_stub.Watch(request))
        readers.append(reader)
        return reader

    yield open_
    for reader in readers:
        await reader.close()


async def test_a_stream_opens_with_a_bookmark_then_delivers_whole_transactions(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any, db: asyncpg.Connection
) -> None:
    reader = await open_watch(ws.WatchRequest())
    opening = await reader.next()
    assert opening.bookmark
    assert not opening.events
    await make_model(stub)
    created = await reader.next_change()
    assert created.revision > opening.revision
    assert [(e.kind, e.resource) for e in created.events] == [("model.created", M)]
    event = created.events[0]
    assert event.after["key"] == M
    assert not event.HasField("before")
    assert event.time.seconds > 0
    await make_version(stub)
    version = await reader.next_change()
    stored = await db.fetch(
        "SELECT kind, resource FROM events WHERE revision = $1 ORDER BY event_id",
        version.revision,
    )
    assert [(e.kind, e.resource) for e in version.events] == [tuple(r) for r in stored]
    assert version.revision > created.revision


async def test_replay_from_a_revision_and_from_the_oldest(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    await make_version(stub)
    await stub.SetAlias(rs.SetAliasRequest(name=f"{M}/aliases/prod", version_number=1))
    revisions = [
        r["revision"]
        for r in await db.fetch("SELECT DISTINCT revision FROM events ORDER BY revision")
    ]
    oldest = await open_watch(ws.WatchRequest(start_at=ws.WATCH_START_OLDEST))
    assert (await oldest.next()).revision == revisions[0] - 1
    assert [(await oldest.next_change()).revision for _ in revisions] == revisions
    resumed = await open_watch(ws.WatchRequest(after_revision=revisions[0]))
    assert (await resumed.next()).revision == revisions[0]
    assert [(await resumed.next_change()).revision for _ in revisions[1:]] == revisions[1:]


async def test_out_of_range_names_the_oldest_kept_revision(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    await make_version(stub)
    oldest = await db.fetchval("SELECT min(revision) FROM events")
    assert oldest > 2  # earlier tests' rows were truncated: below it is no longer kept
    reader = await open_watch(ws.WatchRequest(after_revision=oldest - 2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.next()
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    status = rich_status(caught.value)
    assert reason_of(status) == "OUT_OF_RANGE"
    assert f"{oldest}" in (caught.value.details() or "")
    fine = await open_watch(ws.WatchRequest(after_revision=oldest - 1))
    assert (await fine.next_change()).revision == oldest


async def test_above_the_head_is_invalid_argument(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any
) -> None:
    await make_model(stub)
    reader = await open_watch(ws.WatchRequest(after_revision=2**62))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.next()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(rich_status(caught.value)) == ["after_revision"]


@pytest.mark.parametrize(
    ("request_message", "fields"),
    [
        (ws.WatchRequest(kinds=["alias.moved"]), ["kinds[0]"]),
        (ws.WatchRequest(namespaces=["default"]), ["namespaces[0]"]),
        (ws.WatchRequest(models=["namespaces/default"], aliases=[M]), ["models[0]", "aliases[0]"]),
        (ws.WatchRequest(after_revision=-1), ["after_revision"]),
        (ws.WatchRequest(bookmark_interval=Duration(nanos=1000)), ["bookmark_interval"]),
        (ws.WatchRequest(bookmark_interval=Duration(seconds=1, nanos=-1)), ["bookmark_interval"]),
        (ws.WatchRequest(start_at=7), ["start_at"]),  # type: ignore[arg-type]
    ],
)
async def test_bad_requests_name_their_fields(
    open_watch: Any, request_message: ws.WatchRequest, fields: list[str]
) -> None:
    reader = await open_watch(request_message)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await reader.next()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(rich_status(caught.value)) == fields


async def test_an_idle_stream_gets_bookmarks_that_carry_the_position(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any
) -> None:
    interval = Duration(nanos=100_000_000)
    elsewhere = ws.WatchRequest(namespaces=["namespaces/other"], bookmark_interval=interval)
    reader = await open_watch(elsewhere)
    opening = await reader.next()
    model = await make_model(stub)  # not in the filter: nothing is sent for it...
    assert model.name == M
    while True:  # ...but the position moves past it, and a bookmark says so
        message = await reader.next()
        assert message.bookmark
        assert not message.events
        if message.revision > opening.revision:
            break


async def test_the_sdk_iterator_follows_and_resumes(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, target: str, server: RunningServer
) -> None:
    async with AsyncClient(target) as client:
        seen: list[ws.WatchResponse] = []
        stream = client.watch(models=["default/m"], bookmarks=True)
        opening = await anext(stream)  # the opening bookmark: the stream is established
        assert opening.bookmark
        await make_model(stub)
        await make_version(stub)
        seen.append(await anext(stream))
        seen.append(await anext(stream))
        assert [m.events[0].kind for m in seen] == ["model.created", "version.created"]
        await stream.aclose()
        with pytest.raises(InvalidArgumentError):
            await anext(client.watch(kinds=["nope"]))
        with pytest.raises(OutOfRangeError) as caught:
            await anext(client.watch(after_revision=0))
        assert int(caught.value.metadata["oldest_revision"]) == seen[0].revision


FILTERS = {
    "a namespace, not its prefix twin": ws.WatchRequest(namespaces=["namespaces/team"]),
    "a model, not its prefix twin": ws.WatchRequest(models=["namespaces/team/models/m1"]),
    "an alias": ws.WatchRequest(aliases=["namespaces/team/models/m1/aliases/prod"]),
    "kinds": ws.WatchRequest(kinds=["alias.set", "version.created"]),
    "a model and kinds": ws.WatchRequest(
        models=["namespaces/team/models/m1"], kinds=["alias.set", "model.updated"]
    ),
    "a union of scopes": ws.WatchRequest(
        namespaces=["namespaces/team2"], aliases=["namespaces/team/models/m10/aliases/prod"]
    ),
    "everything": ws.WatchRequest(),
}


async def _workload(stub: rs_grpc.RegistryServiceAsyncStub) -> None:
    """Every kind of subject in two namespaces whose names share a prefix, and models
    whose names do."""
    for ns in ("team", "team2"):
        await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id=ns))
        for model in ("m1", "m10"):
            await make_model(stub, model, ns)
            await make_version(stub, model, ns)
            await make_version(stub, model, ns)
            alias = f"namespaces/{ns}/models/{model}/aliases/prod"
            await stub.SetAlias(rs.SetAliasRequest(name=alias, version_number=1))
            await stub.SetAlias(rs.SetAliasRequest(name=alias, version_number=2))
            await stub.UpdateModel(
                rs.UpdateModelRequest(
                    model=pb.Model(name=f"namespaces/{ns}/models/{model}", description="d"),
                    update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                )
            )
            await stub.DeleteAlias(rs.DeleteAliasRequest(name=alias))


def _expected(rows: list[asyncpg.Record], request: ws.WatchRequest) -> list[Any]:
    """What a filter must deliver, worked out from the stored rows' names (a different
    route from the server's, which matches typed subjects)."""

    def matches(kind: str, resource: str) -> bool:
        parts = resource.split("/")
        namespace, model = "/".join(parts[:2]), "/".join(parts[:4])
        scoped = (
            namespace in request.namespaces
            or (len(parts) >= 4 and model in request.models)
            or (kind.startswith("alias.") and resource in request.aliases)
        )
        unscoped = not (request.namespaces or request.models or request.aliases)
        return (unscoped or scoped) and (not request.kinds or kind in request.kinds)

    by_revision: dict[int, list[tuple[str, str]]] = {}
    for row in rows:
        if matches(row["kind"], row["resource"]):
            by_revision.setdefault(row["revision"], []).append((row["kind"], row["resource"]))
    return sorted(by_revision.items())


async def test_each_filter_delivers_exactly_its_events(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, open_watch: Any, db: asyncpg.Connection
) -> None:
    interval = Duration(nanos=100_000_000)
    readers, starts = {}, {}
    for name, request in FILTERS.items():
        request.bookmark_interval.CopyFrom(interval)
        readers[name] = await open_watch(request)
        starts[name] = (await readers[name].next()).revision  # open: it starts here
    await _workload(stub)
    head = await db.fetchval("SELECT max(revision) FROM events")
    for name, reader in readers.items():
        rows = await db.fetch(
            "SELECT revision, kind, resource FROM events WHERE revision > $1"
            " ORDER BY revision, event_id",
            starts[name],
        )
        got = []
        while (message := await reader.next()).revision < head or not message.bookmark:
            if message.events:
                got.append((message.revision, [(e.kind, e.resource) for e in message.events]))
        assert got == _expected(rows, FILTERS[name]), name
        assert got, name


async def _cli_watch(target: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelreg",
        "watch",
        *args,
        "--target",
        target,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(WAIT):
        return (await proc.stdout.readline()).decode()


async def _interrupted(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(WAIT):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_the_cli_prints_events_as_they_come_and_ctrl_c_exits_0(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, target: str, db: asyncpg.Connection
) -> None:
    await make_model(stub)
    await make_version(stub)
    first = await db.fetchval("SELECT min(revision) FROM events")  # the model's creation
    oldest = await _cli_watch(target, "default/m", "--kind", "alias.set", "--from-oldest")
    as_json = await _cli_watch(target, "--json", "--from-revision", str(first))
    alias = f"{M}/aliases/prod"
    await stub.SetAlias(rs.SetAliasRequest(name=alias, version_number=1))
    revision = await db.fetchval("SELECT max(revision) FROM events")
    assert (await _line(oldest)).split() == [
        str(revision),
        "alias.set",
        alias,
        "->",
        "version",
        "1",
    ]
    status, err = await _interrupted(oldest)
    assert (status, err) == (0, "")
    rows = await db.fetch(
        "SELECT revision, kind FROM events WHERE revision > $1 ORDER BY revision, event_id",
        first,
    )
    printed = [json.loads(await _line(as_json)) for _ in range(len(rows))]
    assert [(int(p["revision"]), p["events"][0]["kind"]) for p in printed] == [
        tuple(r) for r in rows
    ]
    status, err = await _interrupted(as_json)
    assert (status, err) == (0, "")


async def test_the_blocking_client_watches_too(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, target: str
) -> None:
    await make_model(stub)

    def first_change() -> ws.WatchResponse:
        with Client(target) as client:
            for change in client.watch(models=["default/m"], from_oldest=True):
                return change
        raise AssertionError("the watch ended")

    change = await asyncio.to_thread(first_change)  # this loop serves the registry meanwhile
    assert [(e.kind, e.resource) for e in change.events] == [("model.created", M)]
