"""Delivering webhooks: every subscription follows the change log from its own durable
cursor, held by one server process at a time (docs/architecture.md, "Webhooks").

One message per matching event, in commit order (and within a transaction in the order
it wrote them). The cursor moves past a revision only once each of its matching events
got a 2xx, so delivery is at least once: after a crash, a lost lease or a rewind the
events after the cursor are sent again, with the same `webhook-id`. Ordering is strict
per subscription: an event that keeps failing is retried (capped exponential backoff
with jitter, or longer when the receiver's `Retry-After` asks) and blocks the events
after it until it succeeds or the subscription is deleted.

The lease is in the database: a claim is a guarded UPDATE (free or run out by the
database's clock), and every write of the holder (renew, record, advance, dequeue) is
conditioned on its fencing token, so a holder that lost the lease stops at its next
write. It renews right before each send, so every send happens inside a lease
(MODELREG_WEBHOOKS_TIMEOUT_SECONDS <= MODELREG_WEBHOOKS_LEASE_SECONDS / 2).

A rewind (RedeliverWebhook from a revision) moves the cursor back and counts itself in
`rewinds`; it leaves the lease where it is, so no second process can start while the
holder's request is in flight. The holder's advance is conditioned on the count it
knows, and each renew reports the count: a holder that sees a new one drops what it was
sending and goes on from the rewound cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from modelreg.domain.changelog import Change, ChangeLog
from modelreg.domain.errors import Aborted, Unavailable
from modelreg.domain.events import Event
from modelreg.domain.ports import Clock
from modelreg.domain.webhooks import Webhook, message_id

# Whether a subscription's creator may read an event, asked as each event is delivered
# (so a grant or a revocation applies from the next event on); None: authorization off.
Visible = Callable[[Webhook, Event], bool]
# Sees each change before its events are decided (the grant cache applies its access
# events: no event is decided on grants older than itself).
Observe = Callable[[Change], None]

log = logging.getLogger(__name__)

RETRY_AFTER_LIMIT = 3600.0  # seconds: the longest Retry-After honoured as it is
RETRY_SECONDS = 1.0  # after the database could not be reached
PRUNE_EVERY = 100  # attempts recorded between two prunes of the delivery log, at most


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """How delivery paces itself (config.py: MODELREG_WEBHOOKS_*)."""

    lease_seconds: float = 30.0
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    batch: int = 100  # events read from the change log at a time
    log_keep: int = 1000  # attempts kept in the delivery log per subscription


@dataclass(frozen=True, slots=True)
class Message:
    """One event as sent: its `webhook-id` and the JSON body that is signed."""

    message_id: str
    kind: str
    body: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver answered: an HTTP status (0 when none came) and why not."""

    status: int
    error: str = ""
    retry_after: str | None = None  # the header as sent

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed subscription: what to deliver, with what secret, under which token."""

    webhook: Webhook
    secret: bytes = field(repr=False)  # never in a log line or a traceback's repr
    token: int
    owner: str
    rewinds: int = 0  # how many rewinds the cursor had had when it was claimed


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt, as the delivery log records it."""

    revision: int
    event_index: int
    message_id: str
    kind: str
    attempt: int
    answer: Answer
    latency_seconds: float
    next_attempt_seconds: float | None  # None: it succeeded


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A queued request to send one event again."""

    redelivery_id: int
    revision: int
    event_index: int


class DeliveryStore(Protocol):
    """Leases, cursors, the redelivery queue and the delivery log, for the holder.

    Every method taking a `lease` returns False (changes nothing) once the lease is no
    longer this holder's: claimed by another process, rewound, or the subscription deleted.
    """

    async def claimable(self) -> list[str]:
        """Active subscriptions that nobody holds, or whose lease has run out."""
        ...

    async def claim(self, *, webhook_id: str, owner: str, seconds: float) -> Lease | None:
        """Take the lease if it is free or run out (None if someone else holds it);
        Undeliverable, the lease given back, if its secret or filter does not read."""
        ...

    async def renew(self, *, lease: Lease, seconds: float) -> int | None:
        """Extend the lease to `seconds` from now; the subscription's rewind count (None:
        the lease is lost)."""
        ...

    async def cursor(self, *, lease: Lease) -> tuple[int, int] | None:
        """The cursor and the rewind count (None: the lease is lost)."""
        ...

    async def record(self, *, lease: Lease, attempt: Attempt, seconds: float) -> bool:
        """Log an attempt and extend the lease."""
        ...

    async def advance(self, *, lease: Lease, revision: int, rewinds: int) -> bool:
        """Move the cursor to `revision` (every matching event up to it was delivered) if
        it has not been rewound since the count `rewinds`; False if it has, or the lease
        is lost."""
        ...

    async def queued(self, *, lease: Lease, limit: int) -> list[Redelivery]:
        """Redeliveries asked for, oldest first."""
        ...

    async def dequeue(self, *, lease: Lease, redelivery_id: int) -> bool:
        """Drop a redelivery that was sent."""
        ...

    async def release(self, *, lease: Lease) -> None:
        """Give the lease up (at shutdown), so another process claims it at once."""
        ...

    async def prune(self, *, lease: Lease, keep: int) -> None:
        """Delete all but the newest `keep` attempts of the subscription."""
        ...

    async def last_attempt(self, *, lease: Lease, message_id: str) -> int:
        """The highest attempt number logged for a message (0: none)."""
        ...

    async def event_time(self, *, revision: int) -> datetime:
        """When the transaction of `revision` wrote its events."""
        ...


class WebhookSender(Protocol):
    """Signs and POSTs one message."""

    async def send(self, *, url: str, message: Message, secret: bytes) -> Answer:
        """POST `message` to `url`, signed with `secret`. A receiver's failure (refused,
        reset, timed out) is an Answer with status 0 and the error, never an exception."""
        ...


def message_of(webhook_id: str, revision: int, index: int, event: Event, time: datetime) -> Message:
    """The Standard Webhooks payload of one event: `type`, `timestamp` (when the event
    was written) and `data` (revision, resource, actor, before, after, latest_moved)."""
    payload = {
        "type": str(event.kind),
        "timestamp": time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "revision": revision,
            "resource": event.resource,
            "actor": event.actor,
            "before": event.before,
            "after": event.after,
            "latest_moved": event.latest_moved,
        },
    }
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return Message(message_id(webhook_id, revision, index), str(event.kind), body)


def backoff_seconds(attempt: int, *, first: float, cap: float, jitter: float) -> float:
    """The wait after failed attempt number `attempt` (1 is the first): `first` doubled
    per attempt up to `cap`, with equal jitter — between half and all of that, `jitter`
    (in [0, 1)) saying where — so receivers that fail together are not hit together."""
    base = min(cap, first * 2.0 ** min(attempt - 1, 64))
    return base / 2 + base / 2 * jitter


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """The seconds a `Retry-After` header asks for: delay-seconds or an HTTP-date
    (RFC 9110 §10.2.3), at most RETRY_AFTER_LIMIT (a longer ask, however many digits it
    has, is the limit). None when absent or unreadable; a date in the past is 0."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0")
        if len(digits) > len(str(int(RETRY_AFTER_LIMIT))):  # no int() of a huge string
            return RETRY_AFTER_LIMIT
        return min(float(int(digits or "0")), RETRY_AFTER_LIMIT)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # an HTTP-date is GMT; "-0000" parses naive
    return min(max(0.0, (when - now).total_seconds()), RETRY_AFTER_LIMIT)


def retry_delay(
    attempt: int, *, retry_after: float | None, settings: DeliverySettings, jitter: float
) -> float:
    """How long to wait before the next attempt: the backoff, or longer if the receiver's
    Retry-After asks (honoured up to RETRY_AFTER_LIMIT)."""
    backoff = backoff_seconds(
        attempt,
        first=settings.first_backoff_seconds,
        cap=settings.max_backoff_seconds,
        jitter=jitter,
    )
    if retry_after is None:
        return backoff
    return max(backoff, min(retry_after, RETRY_AFTER_LIMIT))


class Undeliverable(Exception):
    """This process cannot deliver a subscription now: its secret does not open with the
    deployment's key, its stored filter or a change after its cursor does not read with
    this release. The dispatcher leaves it (released) for `max_backoff_seconds`, so a
    process that can (a newer release) takes it, then tries again."""


class _Lost(Exception):
    """The lease is no longer ours: stop delivering this subscription."""


class _Rewound(Exception):
    """The cursor was moved back: go on from there."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SubscriptionDelivery:
    """Delivers one claimed subscription until its lease is lost or it is cancelled."""

    def __init__(
        self,
        *,
        lease: Lease,
        store: DeliveryStore,
        log: ChangeLog,
        sender: WebhookSender,
        clock: Clock,
        settings: DeliverySettings,
        wall: Callable[[], datetime] = _utcnow,
        jitter: Callable[[], float] = random.random,
        visible: Visible | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._lease, self._store, self._log, self._sender = lease, store, log, sender
        self._visible, self._observe = visible, observe
        self._clock, self._settings, self._wall, self._jitter = clock, settings, wall, jitter
        self._woken = asyncio.Event()
        self._resumed = True  # the first message after a claim may have earlier attempts
        self.cursor = lease.webhook.delivered_revision
        self._rewinds = lease.rewinds
        self._failures = 0  # unexpected failures since the last progress
        self._unpruned = 0  # attempts recorded since the log was last pruned
        self.undeliverable: str | None = None  # why it stopped, if it could not go on

    def wake(self) -> None:
        """A revision committed: look for new events."""
        self._woken.set()

    async def run(self) -> None:
        """Deliver until the lease is lost; give it up when cancelled."""
        name = self._lease.webhook.webhook_id
        pause = 0.0
        try:
            while True:
                try:
                    if pause:
                        wait, pause = pause, 0.0
                        await self._wait(wait)  # holding the lease: nobody re-claims it
                    await self._follow()
                except _Rewound:
                    await self._reread()
                except (Unavailable, Aborted) as exc:  # Aborted: a conflict, retry soon
                    log.warning("webhook %s: the database cannot be reached (%s)", name, exc)
                    self._resumed = True  # the attempt count goes on from the log
                    await self._clock.sleep(RETRY_SECONDS)  # then try again
                except (_Lost, Undeliverable):
                    raise
                except Exception:  # a bug, or data this release cannot handle
                    self._failures += 1
                    self._resumed = True
                    pause = self._backoff(self._failures)
                    log.exception(
                        "webhook %s: delivery failed unexpectedly (%d in a row); trying again"
                        " in %.1f s",
                        name,
                        self._failures,
                        pause,
                    )
        except _Lost:
            log.info("webhook %s: no longer delivered by this process (lease lost)", name)
        except Undeliverable as exc:
            self.undeliverable = str(exc)
            log.error("webhook %s: this process cannot deliver it: %s", name, exc)
        finally:
            await asyncio.shield(self._release())

    async def _release(self) -> None:
        with contextlib.suppress(Unavailable):  # then the lease runs out by itself
            await self._store.release(lease=self._lease)

    async def _reread(self) -> None:
        found = await self._store.cursor(lease=self._lease)
        if found is None:
            raise _Lost
        self.cursor, self._rewinds = found
        self._resumed = True
        log.info("webhook %s: rewound to revision %d", self._lease.webhook.webhook_id, self.cursor)

    async def _follow(self) -> None:
        while True:
            await self._redeliver_queued()
            changes = await self._log.changes_after(
                revision=self.cursor, limit=self._settings.batch
            )
            if not changes:
                await self._idle()
                continue
            for change in changes:
                if change.undecodable:  # never skipped: the cursor stays below it
                    raise Undeliverable(
                        f"revision {change.revision} has {change.undecodable} event(s) this"
                        " release cannot read (written by a newer one?); leaving it to a"
                        " process that can"
                    )
                if await self._deliver_change(change):
                    await self._advance(change.revision)
            if self.cursor < changes[-1].revision:  # the batch's tail matched nothing
                await self._advance(changes[-1].revision)
            await self._prune()

    async def _redeliver_queued(self) -> None:
        for queued in await self._store.queued(lease=self._lease, limit=self._settings.batch):
            found = await self._log.changes_after(revision=queued.revision - 1, limit=1)
            if found and found[0].revision == queued.revision:
                await self._deliver_change(found[0], only=queued.event_index)
            await self._held(
                self._store.dequeue(lease=self._lease, redelivery_id=queued.redelivery_id)
            )

    async def _deliver_change(self, change: Change, only: int | None = None) -> bool:
        """Send the change's matching events (or only the one at index `only`); whether
        there were any."""
        webhook = self._lease.webhook
        time: datetime | None = None
        if self._observe is not None:
            self._observe(change)
        for index, event in change.indexed():
            if (only is not None and index != only) or not webhook.filter.matches(event):
                continue
            if self._visible is not None and not self._visible(webhook, event):
                continue  # its creator may not read it (now): skipped, as if filtered out
            if time is None:
                time = await self._store.event_time(revision=change.revision)
            message = message_of(webhook.webhook_id, change.revision, index, event, time)
            await self._deliver(message, change.revision, index)
        return time is not None

    async def _deliver(self, message: Message, revision: int, index: int) -> None:
        attempt = 1
        if self._resumed:
            attempt += await self._store.last_attempt(
                lease=self._lease, message_id=message.message_id
            )
            self._resumed = False
        seconds = self._settings.lease_seconds
        while True:
            await self._renew()
            started = self._clock.now()
            answer = await self._send(message)
            latency = self._clock.now() - started
            delay = None if answer.succeeded else self._delay(attempt, answer)
            record = Attempt(
                revision, index, message.message_id, message.kind, attempt, answer, latency, delay
            )
            await self._held(self._store.record(lease=self._lease, attempt=record, seconds=seconds))
            await self._prune_often()
            if delay is None:
                return
            await self._wait(delay)
            attempt += 1

    async def _prune_often(self) -> None:
        """Prune every PRUNE_EVERY attempts too, so the log stays bounded (at most
        log_keep + PRUNE_EVERY rows) while one event blocks the batch for days."""
        self._unpruned += 1
        if self._unpruned >= PRUNE_EVERY:
            await self._prune()

    async def _prune(self) -> None:
        await self._store.prune(lease=self._lease, keep=self._settings.log_keep)
        self._unpruned = 0

    async def _send(self, message: Message) -> Answer:
        """The receiver's answer; a sender that raises (it must not) is a failed attempt,
        recorded with the error like any other."""
        webhook = self._lease.webhook
        try:
            return await self._sender.send(
                url=webhook.url, message=message, secret=self._lease.secret
            )
        except Exception as exc:
            log.exception("webhook %s: the sender failed unexpectedly", webhook.webhook_id)
            return Answer(0, error=f"unexpected {type(exc).__name__}: {exc}")

    def _backoff(self, failures: int) -> float:
        return backoff_seconds(
            failures,
            first=self._settings.first_backoff_seconds,
            cap=self._settings.max_backoff_seconds,
            jitter=self._jitter(),
        )

    def _delay(self, attempt: int, answer: Answer) -> float:
        retry_after = parse_retry_after(answer.retry_after, now=self._wall())
        return retry_delay(
            attempt, retry_after=retry_after, settings=self._settings, jitter=self._jitter()
        )

    async def _wait(self, seconds: float) -> None:
        """Sleep before a retry, renewing the lease meanwhile (it must outlive the wait)."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, self._settings.lease_seconds / 3)
            await self._clock.sleep(step)
            remaining -= step
            await self._renew()

    async def _idle(self) -> None:
        """Wait for a wake-up (or a third of the lease), then renew."""
        try:
            async with self._clock.timeout(self._settings.lease_seconds / 3):
                await self._woken.wait()
        except TimeoutError:
            pass
        self._woken.clear()
        await self._renew()

    async def _renew(self) -> None:
        """Extend the lease; raise _Lost without it, _Rewound if the cursor moved back."""
        rewinds = await self._store.renew(lease=self._lease, seconds=self._settings.lease_seconds)
        if rewinds is None:
            raise _Lost
        if rewinds != self._rewinds:
            raise _Rewound

    async def _advance(self, revision: int) -> None:
        moved = await self._store.advance(
            lease=self._lease, revision=revision, rewinds=self._rewinds
        )
        if not moved:
            await self._renew()  # tells a rewind from a lost lease
            raise _Lost  # neither: the row changed under us; let the next claim sort it out
        self.cursor = revision
        self._failures = 0

    @staticmethod
    async def _held(write: Awaitable[bool]) -> None:
        if not await write:
            raise _Lost


class WebhookDispatcher:
    """This process's share of delivery: claims every subscription nobody holds (or whose
    holder's lease ran out), runs a SubscriptionDelivery for each, and wakes them when
    a revision commits."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        log: ChangeLog,
        sender: WebhookSender,
        clock: Clock,
        settings: DeliverySettings,
        owner: str,
        visible: Visible | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._store, self._log, self._sender = store, log, sender
        self._visible, self._observe = visible, observe
        self._clock, self._settings, self._owner = clock, settings, owner
        self._running: dict[str, tuple[SubscriptionDelivery, asyncio.Task[None]]] = {}
        self._resting: dict[str, float] = {}  # undeliverable here: not claimed until then
        self._poked = asyncio.Event()

    @property
    def delivering(self) -> list[str]:
        """The subscriptions this process holds now."""
        return sorted(self._running)

    def wake(self, revision: int | None = None) -> None:
        """A revision committed (None: one may have): every delivery looks for events."""
        for delivery, _ in self._running.values():
            delivery.wake()

    def poke(self) -> None:
        """Look for subscriptions to claim now and wake every delivery (one was created or
        asked to redeliver)."""
        self._poked.set()
        self.wake()

    async def run(self) -> None:
        """Claim and deliver until cancelled; then stop every delivery (each gives up its
        lease)."""
        try:
            while True:
                try:
                    await self._claim_free()
                except Unavailable as exc:
                    log.warning("webhooks: cannot look for subscriptions to deliver (%s)", exc)
                try:
                    async with self._clock.timeout(self._settings.lease_seconds / 3):
                        await self._poked.wait()
                except TimeoutError:
                    pass
                self._poked.clear()
        finally:
            tasks = [task for _, task in self._running.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim_free(self) -> None:
        seconds = self._settings.lease_seconds
        for webhook_id in await self._store.claimable():
            if webhook_id in self._running or self._rests(webhook_id):
                continue
            try:
                lease = await self._store.claim(
                    webhook_id=webhook_id, owner=self._owner, seconds=seconds
                )
            except Undeliverable as exc:  # released by the store
                log.error("webhook %s: this process cannot deliver it: %s", webhook_id, exc)
                self._rest(webhook_id)
                continue
            if lease is not None:
                self._start(lease)

    def _rests(self, webhook_id: str) -> bool:
        until = self._resting.get(webhook_id)
        if until is None:
            return False
        if self._clock.now() < until:
            return True
        del self._resting[webhook_id]
        return False

    def _rest(self, webhook_id: str) -> None:
        self._resting[webhook_id] = self._clock.now() + self._settings.max_backoff_seconds

    def _start(self, lease: Lease) -> None:
        webhook_id = lease.webhook.webhook_id
        delivery = SubscriptionDelivery(
            lease=lease,
            store=self._store,
            log=self._log,
            sender=self._sender,
            clock=self._clock,
            settings=self._settings,
            visible=self._visible,
            observe=self._observe,
        )
        task = asyncio.create_task(delivery.run(), name=f"webhook-{webhook_id}")
        self._running[webhook_id] = (delivery, task)
        log.info("webhook %s: delivering from revision %d", webhook_id, delivery.cursor)

        def ended(done: asyncio.Task[None]) -> None:
            if self._running.get(webhook_id, (None, None))[1] is done:
                del self._running[webhook_id]
            if done.cancelled():
                return
            if done.exception() is not None:  # a bug: claimed again at the next round only
                log.error("webhook %s: delivery stopped", webhook_id, exc_info=done.exception())
            elif delivery.undeliverable is not None:
                self._rest(webhook_id)
            else:
                self._poked.set()  # it released the lease: another round may claim it

        task.add_done_callback(ended)
