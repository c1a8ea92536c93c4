"""`LiveCache`: references resolved from memory, kept current by the Watch stream (the
informer pattern of Kubernetes clients).

    async with client.live(references=["vision/resnet@production"]) as live:
        version = live.resolve("vision/resnet@production")   # a dict lookup, no network
        live.on_change(lambda ref, old, new: reload(new))

**Load, then follow, with no gap.** Start reads the log's head revision `h` (every change
at or below `h` has committed, and revisions are commit order), then loads every
reference with consistency STRONG — a read that starts after `h` is known reflects at
least everything up to `h` — and then watches after `h`. A change that commits between
reading `h` and the load has a revision above `h`, so the stream delivers it even when
the load already saw it: it is applied again (a re-resolve, harmless), never missed.

**Applying a change.** A change at revision `r` whose events touch a followed reference
(its alias moved or was deleted, `latest` may have moved, the version it names changed,
its model was deleted or restored) re-resolves those references, STRONG, and stores the
answers as of `r`. Changes are applied one at a time in revision order and each read
starts after the previous one ended, so what a reference shows never goes backwards;
every entry also records the revision it is current as of, and a change is applied to an
entry only if its revision is above the entry's (a replayed change after a reconnect
changes nothing).

**Cuts.** After any cut (server restart, network, RESOURCE_EXHAUSTED for a consumer
that fell behind) the stream is opened again after `revision`, with jittered backoff:
nothing is missed and nothing is applied twice. OUT_OF_RANGE (the log no longer holds
`revision`) reloads every reference as at start.

`revision` is the last revision applied (a change or a bookmark: every change up to it
is reflected). `lag` is the seconds since the cache last heard from a live stream that
it was current: the server sends a bookmark after `bookmark_interval` of quiet, so a
connected cache's lag stays below about that; a cut cache's lag grows until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc

from modelreg.client.errors import RegistryError, checked_locally, error_from_rpc, error_from_status
from modelreg.client.names import model_name
from modelreg.domain import names
from modelreg.v1 import admin_service_pb2 as adm
from modelreg.v1 import admin_service_pb2_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res
from modelreg.v1 import watch_service_pb2 as ws

if TYPE_CHECKING:
    from modelreg.client.aio import AsyncClient

log = logging.getLogger(__name__)
T = TypeVar("T")

OnChange = Callable[[str, "res.ModelVersion | None", "res.ModelVersion | None"], None]
BATCH = 1000  # references per BatchGetModelVersions
FIRST_BACKOFF = 0.05  # seconds before reconnecting after a cut; doubles, jittered
MAX_BACKOFF = 2.0
QUEUED = 10_000  # stream messages a cache holds while it applies earlier ones


class NotFollowedError(LookupError):
    """`resolve()` was asked for a reference this live cache does not follow."""


@dataclass(slots=True)
class _Entry:
    """One followed reference: its answer (a version or the error the registry gave) and
    the revision that answer is current as of."""

    reference: str  # canonical spelling
    version: res.ModelVersion | None
    error: RegistryError | None
    revision: int


class LiveCache:
    """References (or every alias and `latest` of some models) resolved in memory and kept
    current by following Watch. Open it with `async with`, or `start()` and `close()`."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        references: Iterable[str] = (),
        models: Iterable[str] = (),
        bookmark_interval: float = 1.0,
    ) -> None:
        self._client = client
        self._models = sorted({model_name(m) for m in models})
        self._canonical = {ref: _canonical(ref) for ref in references}
        if not self._canonical and not self._models:
            raise ValueError("give references=[...] or models=[...] to follow")
        followed = {names.parse_reference(c).model.name for c in self._canonical.values()}
        self._watched = sorted(followed | set(self._models))
        self._bookmark = bookmark_interval
        self._entries: dict[str, _Entry] = {}  # canonical -> entry
        self._lookup: dict[str, _Entry] = {}  # every spelling asked for, and canonical
        self._of_model: dict[str, dict[str, _Entry]] = {}  # `ns/model` -> its entries
        self._callbacks: list[OnChange] = []
        self._revision = 0
        self._heard = time.monotonic()
        self._applied = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0  # passes of the stream ended by an error (the iterator's own
        # reconnects after a cut are not counted: it resumes without missing anything)
        self.last_error: RegistryError | None = None  # why the last pass ended

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load every reference, then follow the log from the load's revision."""
        await self._load()
        self._task = asyncio.create_task(self._follow(), name="modelreg-live")

    async def close(self) -> None:
        """Stop following (resolve() keeps answering from what it last knew)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def resolve(self, reference: str) -> res.ModelVersion:
        """The version `reference` points to, from memory. NotFollowedError if this cache
        does not follow it; the registry's error (NotFoundError...) if it resolves to none."""
        entry = self._lookup.get(reference)
        if entry is None:
            entry = self._entry_for(reference)
        if entry.version is None:
            assert entry.error is not None
            raise entry.error
        return entry.version

    @property
    def references(self) -> list[str]:
        """The followed references, canonical (`ns/model@alias`, `ns/model:7`)."""
        return sorted(self._entries.copy())  # a copy: the follower may add one meanwhile

    @property
    def revision(self) -> int:
        """The last log revision applied: every change up to it is reflected."""
        return self._revision

    @property
    def lag(self) -> float:
        """Seconds since a live stream last told this cache it was current."""
        return time.monotonic() - self._heard

    def on_change(self, callback: OnChange) -> Callable[[], None]:
        """Call `callback(reference, old, new)` (canonical reference; None for no version)
        each time a followed reference's answer changes; returns a function that stops it.
        Callbacks run on the cache's event loop: keep them short."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    async def wait_for(self, revision: int) -> None:
        """Wait until every change up to `revision` is applied (e.g. a write's revision);
        bound it with `asyncio.timeout`."""
        async with self._applied:
            await self._applied.wait_for(lambda: self._revision >= revision)

    def _entry_for(self, reference: str) -> _Entry:
        try:
            canonical = _canonical(reference)
        except RegistryError:
            canonical = reference
        entry = self._entries.get(canonical)
        if entry is None:
            followed = self.references
            shown = ", ".join(followed[:5]) + (", ..." if len(followed) > 5 else "")
            raise NotFollowedError(
                f"{reference!r} is not followed by this live cache (it follows {shown});"
                " pass it in references=[...] or its model in models=[...]"
            )
        self._lookup[reference] = entry  # the next lookup of this spelling is one dict get
        return entry

    async def _load(self) -> None:
        """Read the head revision, then every reference as of at least that revision."""
        head = await self._head_revision()
        wanted = set(self._canonical.values()) | set(self._entries)  # a reload: all again
        for model in self._models:
            key = names.parse_reference(model).model
            wanted.add(f"{key.short}@{names.LATEST}")
            aliases = await self._client.list_aliases(model)
            wanted.update(f"{key.short}@{alias.name.rsplit('/', 1)[1]}" for alias in aliases)
        await self._refresh(sorted(wanted), head, notify=bool(self._entries))
        for given, canonical in self._canonical.items():
            self._lookup[given] = self._entries[canonical]
        self._revision = max(self._revision, head)
        self._heard = time.monotonic()

    async def _head_revision(self) -> int:
        stub = admin_service_pb2_grpc.AdminServiceStub(self._client._channel)
        try:
            reply = await stub.GetServerStats(
                adm.GetServerStatsRequest(),
                timeout=self._client._timeout,
                metadata=self._client._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        head: int = reply.head_revision
        return head

    async def _refresh(self, references: Sequence[str], revision: int, *, notify: bool) -> None:
        """Re-resolve `references` (STRONG) and store the answers as of `revision`."""
        for start in range(0, len(references), BATCH):
            chunk = references[start : start + BATCH]
            results = await self._client.batch_get(chunk, strong=True)
            for reference, result in zip(chunk, results, strict=True):
                self._store(reference, result, revision, notify=notify)

    def _store(
        self, reference: str, result: rs.BatchGetModelVersionsResult, revision: int, *, notify: bool
    ) -> None:
        version = result.version if result.HasField("version") else None
        error = None if version is not None else error_from_status(result.error)
        entry = self._entries.get(reference)
        if entry is None:
            entry = self._entries[reference] = _Entry(reference, version, error, revision)
            self._lookup[reference] = entry
            model = reference.partition("@")[0].partition(":")[0]
            self._of_model.setdefault(model, {})[reference] = entry
            old = None
        elif revision > entry.revision:
            old = entry.version
            entry.version, entry.error, entry.revision = version, error, revision
        else:
            return  # not newer than what the entry holds: never go backwards
        if notify and _differs(old, version):
            self._notify(reference, old, version)

    def _notify(
        self, reference: str, old: res.ModelVersion | None, new: res.ModelVersion | None
    ) -> None:
        for callback in list(self._callbacks):
            try:
                callback(reference, old, new)
            except Exception:  # the caller's code: one failing callback must not stop the cache
                log.exception("live cache: on_change callback failed for %s", reference)

    async def _follow(self) -> None:
        """Apply the stream until cancelled. The watch iterator resumes by itself after a
        cut; what it cannot cure, and a re-resolve that failed, end one pass: the next
        starts again after `revision` (a change not applied comes again), and
        OUT_OF_RANGE reloads everything."""
        backoff = FIRST_BACKOFF
        while True:
            try:
                await self._follow_once()
            except RegistryError as error:
                self.last_error = error
                if error.code is grpc.StatusCode.OUT_OF_RANGE:
                    log.warning("live cache: revision %d is not kept; reloading", self._revision)
                    await self._reload()
                    continue
                log.warning("live cache: %s; resuming after %d", error, self._revision)
            except Exception:  # a bug, or a callback's: a background task must not die silently
                log.exception("live cache: following failed; resuming after %d", self._revision)
            self.restarts += 1
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # spread the herd
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _follow_once(self) -> None:
        """One pass: a reader task queues what the stream delivers while the changes that
        arrived meanwhile are applied together, so a cache that fell behind re-resolves
        once for all of them instead of once each (the queue is bounded: a cache that
        cannot keep up stops reading, and the server cuts and later resumes it)."""
        stream = self._client.watch(
            models=self._watched,
            after_revision=self._revision,
            bookmarks=True,
            bookmark_interval=self._bookmark,
        )
        queue: asyncio.Queue[ws.WatchResponse | Exception] = asyncio.Queue(QUEUED)

        async def read() -> None:
            try:
                async for message in stream:
                    await queue.put(message)
            except Exception as error:  # handed to the applier, which raises it
                await queue.put(error)

        reader = asyncio.create_task(read(), name="modelreg-live-reader")
        try:
            while True:
                arrived = [await queue.get()]
                while not queue.empty():
                    arrived.append(queue.get_nowait())
                messages = [m for m in arrived if isinstance(m, ws.WatchResponse)]
                if messages:
                    await self._apply(messages)
                for failure in arrived:
                    if isinstance(failure, Exception):
                        raise failure
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await stream.aclose()  # end its call now, not when it is collected

    async def _reload(self) -> None:
        try:
            await self._load()
        except RegistryError as error:
            self.last_error = error
            await asyncio.sleep(MAX_BACKOFF)

    async def _apply(self, messages: Sequence[ws.WatchResponse]) -> None:
        """Apply consecutive messages: re-resolve once what any of them touched, as of the
        last one's revision (a read that starts after it arrived reflects all of them)."""
        fresh = [m for m in messages if m.revision > self._revision]
        if fresh:
            touched = self._touched(event for m in fresh for event in m.events)
            if touched:
                await self._refresh(touched, fresh[-1].revision, notify=True)
            async with self._applied:
                self._revision = fresh[-1].revision
                self._applied.notify_all()
        self._heard = time.monotonic()

    def _touched(self, events: Iterable[ws.ChangeEvent]) -> list[str]:
        """The references (followed, or new aliases of followed models) the events touch."""
        touched: set[str] = set()
        for event in events:
            parts = event.resource.split("/")  # namespaces/ns/models/m[/aliases|versions/x]
            if len(parts) < 4:
                continue  # a namespace: no reference resolves through it alone
            short = f"{parts[1]}/{parts[3]}"
            mine = self._of_model.get(short, {})
            if len(parts) == 4:
                touched.update(mine)  # the model was deleted or restored
            elif parts[4] == "aliases":
                alias = f"{short}@{parts[5]}"
                if alias in mine or "/".join(parts[:4]) in self._models:
                    touched.add(alias)  # a new alias of a followed model is followed too
            else:  # a version: its number, `latest` if it may have moved, what names it
                touched.update(ref for ref, e in mine.items() if _names(e, event.resource))
                touched.update({f"{short}:{parts[5]}"} & mine.keys())
                if event.latest_moved:
                    touched.update({f"{short}@{names.LATEST}"} & mine.keys())
        return sorted(touched)


def _names(entry: _Entry, version: str) -> bool:
    return entry.version is not None and entry.version.name == version


def _canonical(reference: str) -> str:
    with checked_locally():
        return names.parse_reference(reference).canonical


def _differs(old: res.ModelVersion | None, new: res.ModelVersion | None) -> bool:
    if old is None or new is None:
        return old is not new
    return (old.name, old.etag, old.state) != (new.name, new.etag, new.state)


class BlockingLiveCache:
    """`LiveCache` for blocking code: it follows on its own event loop in a daemon thread;
    `resolve()` is the same dict lookup, callable from any thread. Callbacks run on that
    thread. Open it with `with`, or `start()` and `close()`."""

    def __init__(self, connect: Callable[[], AsyncClient], **follow: Any) -> None:
        self._connect = connect
        self._follow = follow
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="modelreg-live", daemon=True
        )
        self._client: AsyncClient | None = None
        self._cache: LiveCache | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Load every reference and begin following (raises what loading raised)."""
        self._thread.start()
        try:
            self._call(self._open())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop following and end the thread."""
        if self._thread.is_alive():
            self._call(self._shut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def resolve(self, reference: str) -> res.ModelVersion:
        """See LiveCache.resolve."""
        return self._live.resolve(reference)

    @property
    def revision(self) -> int:
        """See LiveCache.revision."""
        return self._live.revision

    @property
    def lag(self) -> float:
        """See LiveCache.lag."""
        return self._live.lag

    @property
    def references(self) -> list[str]:
        """See LiveCache.references."""
        return self._live.references

    def on_change(self, callback: OnChange) -> Callable[[], None]:
        """See LiveCache.on_change; the callback runs on the cache's thread."""
        return self._live.on_change(callback)

    def wait_for(self, revision: int, timeout: float | None = None) -> None:
        """Block until every change up to `revision` is applied (TimeoutError after
        `timeout` seconds)."""
        self._call(asyncio.wait_for(self._live.wait_for(revision), timeout))

    @property
    def _live(self) -> LiveCache:
        if self._cache is None:
            raise RuntimeError("the live cache is not started")
        return self._cache

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _open(self) -> None:
        self._client = self._connect()
        cache = LiveCache(self._client, **self._follow)
        await cache.start()
        self._cache = cache

    async def _shut(self) -> None:
        if self._cache is not None:
            await self._cache.close()
        if self._client is not None:
            await self._client.close()
