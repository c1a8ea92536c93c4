"""Watch: the change log as streams, one hub per process (docs/architecture.md, "The
change log").

The hub is one Follower of the log, woken by the process's listener: each wake-up is one
keyset read, whatever the number of streams, and every change read is handed to each
live stream whose filter matches. A stream keeps its own cursor and a bounded buffer
(counted in events). A stream whose buffer would overflow leaves the hub and reads the
table by keyset from its cursor until it reaches the hub's position, then rejoins: a slow
consumer costs database reads, never memory. Replay (a start below the hub's position)
is the same catch-up. Revisions are commit-ordered, so a cursor that moved past revision
r never misses a change below r; a stream drops whatever the hub hands it at or below its
cursor, so it never delivers one twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from modelreg.domain.changelog import Change, ChangeLog, Follower
from modelreg.domain.errors import InvalidArgument, OutOfRange, RegistryError, Unavailable
from modelreg.domain.events import Event, EventKind, passes_filter
from modelreg.domain.names import (
    AliasKey,
    ModelKey,
    parse_alias_name,
    parse_model_name,
    parse_namespace_name,
)

log = logging.getLogger(__name__)

MIN_BOOKMARK_SECONDS = 0.1
MAX_BOOKMARK_SECONDS = 60.0
DEFAULT_BOOKMARK_SECONDS = 5.0
MAX_FILTERS = 1000  # names per request, all lists together: a filter is a set, not a query

Wake = Callable[[int | None], None]
Subscribe = Callable[[Wake], Callable[[], None]]


class KeptLog(ChangeLog, Protocol):
    """The change log, and how far back it is kept."""

    async def oldest(self) -> int:
        """The lowest kept revision (0 for an empty log)."""
        ...


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which events a stream delivers: those whose subject is in any of the scopes (no
    scope: every subject) and, if `kinds` is not empty, of one of those kinds. Matching
    is on the typed subject, never on the spelling of its name."""

    namespaces: frozenset[str] = frozenset()
    models: frozenset[ModelKey] = frozenset()
    aliases: frozenset[AliasKey] = frozenset()
    kinds: frozenset[EventKind] = frozenset()
    # Whether the stream's principal may read an event, asked at delivery time, so a
    # grant or a revocation takes effect on open streams (None: authorization is off).
    visible: Callable[[Event], bool] | None = None

    def matches(self, event: Event) -> bool:
        """Whether `event` passes the filter (and its principal may read it)."""
        return passes_filter(
            event,
            namespaces=self.namespaces,
            models=self.models,
            aliases=self.aliases,
            kinds=self.kinds,
        ) and (self.visible is None or self.visible(event))

    def select(self, change: Change) -> tuple[Event, ...]:
        """The change's events that pass, in the order the transaction wrote them."""
        return tuple(event for event in change.events if self.matches(event))


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """A checked Watch request: the filter, where it starts, how often it bookmarks."""

    filter: WatchFilter
    after_revision: int | None  # None: begin now, or at the oldest kept change
    oldest: bool
    bookmark_seconds: float


def watch_spec(
    *,
    namespaces: Sequence[str] = (),
    models: Sequence[str] = (),
    aliases: Sequence[str] = (),
    kinds: Sequence[str] = (),
    after_revision: int | None = None,
    oldest: bool = False,
    bookmark_seconds: float | None = None,
) -> WatchSpec:
    """The spec of a Watch request; InvalidArgument naming every bad field."""
    violations: list[tuple[str, str]] = []
    if len(namespaces) + len(models) + len(aliases) + len(kinds) > MAX_FILTERS:
        violations.append(("", f"at most {MAX_FILTERS} names and kinds in all"))
    found = WatchFilter(
        frozenset(_parsed(namespaces, "namespaces", parse_namespace_name, violations)),
        frozenset(_parsed(models, "models", parse_model_name, violations)),
        frozenset(_parsed(aliases, "aliases", parse_alias_name, violations)),
        frozenset(_parsed(kinds, "kinds", _parse_kind, violations)),
    )
    if after_revision is not None and after_revision < 0:
        violations.append(("after_revision", "must not be negative"))
    seconds = DEFAULT_BOOKMARK_SECONDS if bookmark_seconds is None else bookmark_seconds
    if not MIN_BOOKMARK_SECONDS <= seconds <= MAX_BOOKMARK_SECONDS:
        violations.append(
            (
                "bookmark_interval",
                f"must be between {MIN_BOOKMARK_SECONDS:g} s and {MAX_BOOKMARK_SECONDS:g} s",
            )
        )
    if violations:
        raise InvalidArgument(violations[:10])
    return WatchSpec(found, after_revision, oldest, seconds)


T = TypeVar("T")


def _parsed(
    values: Sequence[str],
    field: str,
    parse: Callable[[str, str], T],
    violations: list[tuple[str, str]],
) -> list[T]:
    parsed = []
    for index, value in enumerate(values):
        try:
            parsed.append(parse(value, f"{field}[{index}]"))
        except InvalidArgument as exc:
            violations += exc.violations
    return parsed


def _parse_kind(value: str, field: str) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:
        shown = value if len(value) <= 64 else value[:61] + "..."
        known = ", ".join(kind.value for kind in EventKind)
        what = f"unknown event kind {shown!r}; one of {known}"
        raise InvalidArgument.field(field, what) from None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a stream hands on: one transaction's matching events at its revision, or a
    bookmark (no events): every matching change up to `revision` was delivered."""

    revision: int
    events: tuple[Event, ...] = ()
    time: datetime | None = None

    @property
    def bookmark(self) -> bool:
        return not self.events


class ChangeHub:
    """The process's one reader of the change log for Watch streams (started on the first
    stream). `buffer_events` bounds each live stream's buffer; `page_events` is the size
    of a catch-up read."""

    def __init__(
        self,
        *,
        log: KeptLog,
        subscribe: Subscribe,
        buffer_events: int,
        page_events: int = 500,
        counters: Counter[str] | None = None,
        observe: Callable[[Change], None] | None = None,
    ) -> None:
        self._log = log
        # Sees every change before any stream decides on it: the grant cache applies its
        # access events here, so no event is decided on grants older than itself.
        self.observe = observe
        self._subscribe = subscribe
        self.buffer_events = buffer_events
        self.page_events = page_events
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.position = -1  # every change up to here was handed to the live streams
        self._live: set[WatchStream] = set()
        self._follower: Follower | None = None
        self._started: asyncio.Task[None] | None = None
        self._run: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False

    @property
    def streams(self) -> int:
        """Watch streams open in this process."""
        return len(self._live)

    @property
    def revision(self) -> int:
        """The last revision the hub has handed its streams (0 before it follows)."""
        return max(self._follower.revision, 0) if self._follower is not None else 0

    @property
    def running(self) -> bool:
        """Whether the hub follows the log (it starts with the first stream)."""
        return self._run is not None and not self._run.done()

    async def open(self, spec: WatchSpec) -> WatchStream:
        """A stream for `spec`, positioned at its start (OUT_OF_RANGE below the oldest kept
        revision, INVALID_ARGUMENT above the head)."""
        if self._closed:
            raise Unavailable("the server is shutting down; watch through another one")
        await self._start()
        cursor = self.position
        if spec.after_revision is not None or spec.oldest:
            cursor = await self._start_point(spec)
        stream = WatchStream(self, spec, cursor)
        if cursor >= self.position:
            self._join(stream)
        return stream

    async def _start_point(self, spec: WatchSpec) -> int:
        oldest = await self._log.oldest()
        floor = max(oldest - 1, 0)  # resuming after `floor` misses nothing kept
        if spec.after_revision is None:
            return floor
        if spec.after_revision < floor:
            raise OutOfRange(
                f"revision {spec.after_revision} is older than the change log keeps;"
                f" the oldest kept revision is {oldest}: resume after {floor} at the lowest",
                metadata={"oldest_revision": str(oldest)},
            )
        head = max(await self._log.head(), self.position)
        if spec.after_revision > head:
            raise InvalidArgument.field(
                "after_revision",
                f"revision {spec.after_revision} is above the head of the change log ({head})",
            )
        return spec.after_revision

    async def _start(self) -> None:
        """Start following on the first stream; again after a failed start or run."""
        started = self._started
        # A start under way is awaited by every stream that arrives meanwhile.
        ended = started is not None and started.done()
        if started is None or (ended and (started.exception() is not None or not self.running)):
            self._started = started = asyncio.create_task(self._begin(), name="watch-hub-start")
        await asyncio.shield(started)

    async def _begin(self) -> None:
        follower = Follower(log=self._log, apply=self._publish, name="watch hub")
        self._follower = follower
        if self._unsubscribe is None:  # wake-ups first: nothing commits unseen after the head
            self._unsubscribe = self._subscribe(self._wake)
        await follower.start()
        self.position = max(self.position, follower.revision)
        self._run = asyncio.create_task(self._follow(follower), name="watch-hub")

    def _wake(self, revision: int | None) -> None:
        if self._follower is not None:
            self._follower.wake(revision)

    async def _follow(self, follower: Follower) -> None:
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: end the live streams (their clients resume elsewhere)
            log.exception("the Watch hub stopped; open streams are cut")
            for stream in tuple(self._live):
                stream.fail(Unavailable("the server's change log reader stopped; resume"))
            self._live.clear()

    async def close(self) -> None:
        """Stop following (shutdown); open streams end with UNAVAILABLE."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in (self._started, self._run):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for stream in tuple(self._live):
            stream.fail(Unavailable("the server is shutting down; resume elsewhere"))
        self._live.clear()

    async def _publish(self, changes: Sequence[Change]) -> None:
        # No await in here: a stream that checks the position and joins sees either all
        # of a change's hand-outs or none.
        for change in changes:
            if self.observe is not None:
                self.observe(change)
            for stream in tuple(self._live):
                stream.offer(change)
            self.position = change.revision

    def _join(self, stream: WatchStream) -> None:
        self._live.add(stream)

    def _leave(self, stream: WatchStream) -> None:
        self._live.discard(stream)

    def count(self, name: str) -> None:
        self.counters[name] += 1


class WatchStream:
    """One Watch stream: iterate it for its deliveries, the first a bookmark at its start."""

    def __init__(self, hub: ChangeHub, spec: WatchSpec, cursor: int) -> None:
        self._hub = hub
        self._filter = spec.filter
        self._bookmark = spec.bookmark_seconds
        self.cursor = cursor  # every change up to here is delivered or in the buffer
        self._buffer: deque[Delivery] = deque()
        self._buffered = 0  # events in the buffer
        self._ready = asyncio.Event()
        self._failed: RegistryError | None = None
        self._sent = time.monotonic()

    @property
    def live(self) -> bool:
        """Whether the hub hands this stream its changes (else it reads the table)."""
        return self in self._hub._live

    def offer(self, change: Change) -> None:
        """A change the hub read (called by the hub, never blocks)."""
        if change.revision <= self.cursor:
            return
        events = self._filter.select(change)
        if events:
            if self._buffer and self._buffered + len(events) > self._hub.buffer_events:
                self._hub._leave(self)  # full: read the rest from the table, from the cursor
                self._hub.count("watch.overflows")
                self._ready.set()
                return
            self._buffer.append(Delivery(change.revision, events, change.time))
            self._buffered += len(events)
            self._ready.set()
        self.cursor = change.revision

    def fail(self, error: RegistryError) -> None:
        """End the stream with `error` once its buffer is delivered."""
        self._failed = error
        self._ready.set()

    def close(self) -> None:
        """Stop receiving changes (the consumer went away)."""
        self._hub._leave(self)

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        yield self._mark(Delivery(self.cursor))
        try:
            while True:
                if self._buffer:
                    delivery = self._buffer.popleft()
                    self._buffered -= len(delivery.events)
                    yield self._mark(delivery)
                elif self._failed is not None:
                    raise self._failed
                elif not self.live:
                    async for delivery in self._catch_up():
                        yield self._mark(delivery)
                elif await self._quiet():
                    yield self._mark(Delivery(self.cursor))
        finally:
            self.close()

    def _mark(self, delivery: Delivery) -> Delivery:
        self._sent = time.monotonic()
        return delivery

    async def _quiet(self) -> bool:
        """Wait for a change; True if the bookmark interval passed without one."""
        self._ready.clear()
        left = self._sent + self._bookmark - time.monotonic()
        try:
            async with asyncio.timeout(max(left, 0)):
                await self._ready.wait()
        except TimeoutError:
            return True
        return False

    async def _catch_up(self) -> AsyncIterator[Delivery]:
        """Read the table by keyset from the cursor until the hub's position, then join
        the hub (nothing between: the check and the join run without an await)."""
        hub = self._hub
        hub.count("watch.catch_ups")
        while True:
            before = hub.position
            page = await hub._log.changes_after(revision=self.cursor, limit=hub.page_events)
            for change in page:
                if hub.observe is not None:
                    hub.observe(change)
                events = self._filter.select(change)
                self.cursor = change.revision
                if events:
                    yield Delivery(change.revision, events, change.time)
                elif time.monotonic() - self._sent >= self._bookmark:
                    yield Delivery(self.cursor)
            if not page and self.cursor < before:
                # The hub handed out up to `before` before this read began, so the read
                # would have seen what is left of it: nothing is (the rows were deleted).
                self.cursor = before
            if self._failed is not None:
                return
            if not hub.running:
                raise Unavailable("the server's change log reader stopped; resume")
            if self.cursor >= hub.position:
                hub._join(self)
                return
            # else the hub moved while this page was read: read on
