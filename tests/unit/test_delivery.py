"""Webhook delivery rules against fakes of our own ports and a clock the test moves: the
backoff doubles with jitter up to its cap, Retry-After (seconds or an HTTP-date) makes
the wait longer and never shorter, the cursor moves only after a 2xx, a failing event
blocks the ones after it, every attempt of an event carries one webhook-id, and a holder
whose lease is gone stops at its next write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from modelreg.domain.changelog import Change
from modelreg.domain.delivery import (
    PRUNE_EVERY,
    RETRY_AFTER_LIMIT,
    Answer,
    Attempt,
    DeliverySettings,
    Lease,
    Message,
    Redelivery,
    SubscriptionDelivery,
    Undeliverable,
    WebhookDispatcher,
    backoff_seconds,
    message_of,
    parse_retry_after,
    retry_delay,
)
from modelreg.domain.errors import Aborted, Unavailable
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey, NamespaceKey
from modelreg.domain.webhooks import Webhook, WebhookFilter
from tests.unit.fakes import FakeClock

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SETTINGS = DeliverySettings(lease_seconds=30, first_backoff_seconds=1, max_backoff_seconds=60)


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, 0.0, 0.5),
        (1, 0.999, 0.9995),
        (2, 0.0, 1.0),
        (3, 0.5, 3.0),
        (7, 0.0, 30.0),
        (8, 0.0, 30.0),
        (10_000, 0.999, 59.97),
    ],
)
def test_backoff_doubles_per_attempt_with_equal_jitter_up_to_the_cap(
    attempt: int, jitter: float, expected: float
) -> None:
    assert backoff_seconds(attempt, first=1, cap=60, jitter=jitter) == pytest.approx(expected)


def test_jitter_spreads_a_wait_over_its_upper_half() -> None:
    waits = [backoff_seconds(4, first=1, cap=60, jitter=j / 100) for j in range(100)]
    assert min(waits) == 4.0
    assert max(waits) < 8.0
    assert len(set(waits)) == 100


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Thu, 03 Dec 2026 12:00:30 GMT", 30.0),
        ("Thu, 03 Dec 2026 11:00:00 GMT", 0.0),  # in the past: retry now
        ("Thursday, 03-Dec-26 12:01:00 GMT", 60.0),  # RFC 850, which RFC 9110 still accepts
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not delay-seconds
        # Longer than the limit, however long the digit string (int() refuses > 4300
        # digits, float() overflows past 1e308): the limit, never an exception.
        (str(int(RETRY_AFTER_LIMIT) + 1), RETRY_AFTER_LIMIT),
        ("9" * 400, RETRY_AFTER_LIMIT),
        ("9" * 5000, RETRY_AFTER_LIMIT),
        ("0" * 5000 + "7", 7.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_LIMIT),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_retry_after_lengthens_the_wait_but_never_shortens_it() -> None:
    assert retry_delay(1, retry_after=None, settings=SETTINGS, jitter=0) == 0.5
    assert retry_delay(1, retry_after=120, settings=SETTINGS, jitter=0) == 120  # above the cap
    assert retry_delay(7, retry_after=2, settings=SETTINGS, jitter=0) == 30  # backoff is longer
    huge = retry_delay(1, retry_after=10**9, settings=SETTINGS, jitter=0)
    assert huge == RETRY_AFTER_LIMIT


# --- the loop, against fakes ---------------------------------------------------------------


class FakeLog:
    """The ChangeLog port over a list the test appends to."""

    def __init__(self, changes: Sequence[Change]) -> None:
        self.changes = list(changes)

    async def changes_after(self, *, revision: int, limit: int) -> list[Change]:
        return [c for c in self.changes if c.revision > revision][: max(limit, 1)]

    async def head(self) -> int:
        return self.changes[-1].revision if self.changes else 0


class FakeDeliveryStore:
    """The DeliveryStore port for one subscription: the lease is held while `token`
    matches; a test takes it away with `steal()`, and moves the cursor back with
    `rewind()`."""

    def __init__(self) -> None:
        self.token = 1
        self.revision = 0
        self.rewinds = 0
        self.advances = 0
        self.attempts: list[Attempt] = []
        self.queue: list[Redelivery] = []
        self.released = False

    def steal(self) -> None:
        self.token += 1

    def rewind(self, revision: int) -> None:
        self.revision = min(self.revision, revision)
        self.rewinds += 1

    def _held(self, lease: Lease) -> bool:
        return lease.token == self.token

    async def claimable(self) -> list[str]:
        return []

    async def claim(self, *, webhook_id: str, owner: str, seconds: float) -> Lease | None:
        return None

    async def renew(self, *, lease: Lease, seconds: float) -> int | None:
        return self.rewinds if self._held(lease) else None

    async def cursor(self, *, lease: Lease) -> tuple[int, int] | None:
        return (self.revision, self.rewinds) if self._held(lease) else None

    async def record(self, *, lease: Lease, attempt: Attempt, seconds: float) -> bool:
        if self._held(lease):
            self.attempts.append(attempt)
        return self._held(lease)

    async def advance(self, *, lease: Lease, revision: int, rewinds: int) -> bool:
        moved = self._held(lease) and rewinds == self.rewinds
        self.advances += 1
        if moved:
            self.revision = max(self.revision, revision)
        return moved

    async def queued(self, *, lease: Lease, limit: int) -> list[Redelivery]:
        return list(self.queue[:limit]) if self._held(lease) else []

    async def dequeue(self, *, lease: Lease, redelivery_id: int) -> bool:
        self.queue = [q for q in self.queue if q.redelivery_id != redelivery_id]
        return self._held(lease)

    async def release(self, *, lease: Lease) -> None:
        self.released = True

    async def prune(self, *, lease: Lease, keep: int) -> None:
        del self.attempts[:-keep]

    async def last_attempt(self, *, lease: Lease, message_id: str) -> int:
        return max((a.attempt for a in self.attempts if a.message_id == message_id), default=0)

    async def event_time(self, *, revision: int) -> datetime:
        return NOW


class ScriptedSender:
    """The WebhookSender port answering from a script (then 204), noting when (on the
    fake clock) each message was sent."""

    def __init__(self, clock: FakeClock, script: Sequence[Answer]) -> None:
        self._clock = clock
        self._script = list(script)
        self.sent: list[tuple[float, Message]] = []
        self.sent_one = asyncio.Event()

    async def send(self, *, url: str, message: Message, secret: bytes) -> Answer:
        self.sent.append((self._clock.now(), message))
        self.sent_one.set()
        return self._script.pop(0) if self._script else Answer(204)


def _change(revision: int, *namespaces: str) -> Change:
    events = tuple(
        Event(EventKind.NAMESPACE_CREATED, NamespaceKey(ns), "alice", latest_moved=False)
        for ns in namespaces
    )
    return Change(revision, events)


def _delivery(
    store: FakeDeliveryStore,
    log: FakeLog,
    sender: ScriptedSender,
    clock: FakeClock,
    webhook_filter: WebhookFilter | None = None,
) -> SubscriptionDelivery:
    webhook = Webhook("w", "http://hooks.example/w", webhook_filter or WebhookFilter())
    return SubscriptionDelivery(
        lease=Lease(webhook, b"k" * 32, store.token, "me"),
        store=store,
        log=log,
        sender=sender,
        clock=clock,
        settings=SETTINGS,
        wall=lambda: NOW,
        jitter=lambda: 0.0,
    )


async def _advance_until(clock: FakeClock, done: Callable[[], bool], limit: float = 600) -> None:
    """Move the fake clock a quarter second at a time until `done()` holds."""
    start = clock.now()
    await clock.advance(0)  # let the started tasks reach their first wait
    while not done():
        assert clock.now() - start < limit, "never happened"
        await clock.advance(0.25)


async def test_retries_wait_the_backoff_or_the_retry_after_and_keep_one_webhook_id() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a"), _change(2, "b")])
    script = [Answer(500), Answer(503, retry_after="7"), Answer(0, error="timed out")]
    sender = ScriptedSender(clock, script)
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: len(sender.sent) == 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    times = [when for when, _ in sender.sent]
    ids = [message.message_id for _, message in sender.sent]
    # 500 -> 0.5 s (backoff 1, jitter 0); 503 Retry-After 7 -> 7 s; timeout -> 2 s; then 2xx
    assert times == [0.0, 0.5, 7.5, 9.5, 9.5]
    assert ids == ["msg_w_1_0"] * 4 + ["msg_w_2_0"]  # revision 2 waited for revision 1
    assert [a.next_attempt_seconds for a in store.attempts] == [0.5, 7.0, 2.0, None, None]
    assert [a.attempt for a in store.attempts] == [1, 2, 3, 4, 1]
    assert [a.answer.error for a in store.attempts][2] == "timed out"
    assert store.revision == 2
    assert store.released


async def test_the_cursor_moves_only_after_every_matching_event_of_a_revision_got_a_2xx() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a", "skip", "b")])
    sender = ScriptedSender(clock, [Answer(204), Answer(500)])
    only_a_b = WebhookFilter(namespaces=("a", "b"))
    task = asyncio.create_task(_delivery(store, log, sender, clock, only_a_b).run())
    await _advance_until(clock, lambda: len(sender.sent) == 2)
    assert store.revision == 0  # "b" failed: revision 1 is not delivered yet
    await _advance_until(clock, lambda: len(sender.sent) == 3)
    await _advance_until(clock, lambda: store.revision == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [m.message_id for _, m in sender.sent] == ["msg_w_1_0", "msg_w_1_2", "msg_w_1_2"]


async def test_a_holder_whose_lease_was_taken_stops_at_its_next_write() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a")])
    sender = ScriptedSender(clock, [Answer(500)] * 100)
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: len(sender.sent) == 2)
    store.steal()  # another process claimed it (or a rewind fenced this one off)
    await _advance_until(clock, task.done)
    assert task.exception() is None
    assert len(sender.sent) == 2  # nothing more was sent under the lost lease
    assert store.revision == 0


async def test_a_queued_redelivery_sends_that_one_event_again_with_its_webhook_id() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a", "b"), _change(2, "c")])
    store.revision = 2
    store.queue = [Redelivery(1, revision=1, event_index=1)]
    sender = ScriptedSender(clock, [])
    delivery = _delivery(store, log, sender, clock)
    delivery.cursor = 2
    task = asyncio.create_task(delivery.run())
    await _advance_until(clock, lambda: not store.queue)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [m.message_id for _, m in sender.sent] == ["msg_w_1_1"]


def test_a_payload_is_the_standard_webhooks_shape() -> None:
    event = Event(
        EventKind.ALIAS_SET,
        AliasKey(ModelKey("ns", "m"), "prod"),
        "bob",
        before={"number": 1},
        after={"number": 2},
        latest_moved=False,
    )
    message = message_of("w", 9, 0, event, NOW)
    assert message.message_id == "msg_w_9_0"
    assert json.loads(message.body) == {
        "type": "alias.set",
        "timestamp": "2026-12-03T12:00:00Z",
        "data": {
            "revision": 9,
            "resource": "namespaces/ns/models/m/aliases/prod",
            "actor": "bob",
            "before": {"number": 1},
            "after": {"number": 2},
            "latest_moved": False,
        },
    }


async def test_a_rewind_restarts_the_holder_from_the_rewound_cursor_under_the_same_lease() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a"), _change(2, "b"), _change(3, "c")])
    sender = ScriptedSender(clock, [])
    delivery = _delivery(store, log, sender, clock)
    task = asyncio.create_task(delivery.run())
    await _advance_until(clock, lambda: store.revision == 3)
    store.rewind(1)  # RedeliverWebhook(from_revision=2), while this holder is idle
    delivery.wake()
    await _advance_until(clock, lambda: len(sender.sent) == 5)
    await _advance_until(clock, lambda: store.revision == 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ids = [m.message_id for _, m in sender.sent]
    assert ids == ["msg_w_1_0", "msg_w_2_0", "msg_w_3_0", "msg_w_2_0", "msg_w_3_0"]


async def test_an_advance_after_a_rewind_does_not_overwrite_it() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a"), _change(2, "b")])

    class RewindingSender(ScriptedSender):
        async def send(self, *, url: str, message: Message, secret: bytes) -> Answer:
            if message.message_id == "msg_w_2_0" and store.rewinds == 0:
                store.rewind(0)  # asked while revision 2 is in flight
            return await super().send(url=url, message=message, secret=secret)

    sender = RewindingSender(clock, [])
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: len(sender.sent) == 4)
    await _advance_until(clock, lambda: store.revision == 2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    ids = [m.message_id for _, m in sender.sent]
    assert ids == ["msg_w_1_0", "msg_w_2_0", "msg_w_1_0", "msg_w_2_0"]


async def test_changes_nobody_subscribed_to_cost_one_cursor_write_per_batch() -> None:
    clock = FakeClock()
    changes = [_change(r, "other") for r in range(1, 51)] + [_change(51, "a")]
    changes += [_change(r, "other") for r in range(52, 61)]
    store, log = FakeDeliveryStore(), FakeLog(changes)
    sender = ScriptedSender(clock, [])
    only_a = WebhookFilter(namespaces=("a",))
    task = asyncio.create_task(_delivery(store, log, sender, clock, only_a).run())
    await _advance_until(clock, lambda: store.revision == 60)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [m.message_id for _, m in sender.sent] == ["msg_w_51_0"]
    assert store.advances == 2  # after revision 51's 2xx, and at the end of the batch


async def test_a_sender_that_raises_is_a_recorded_failed_attempt_then_a_retry() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a")])

    class RaisingSender(ScriptedSender):
        async def send(self, *, url: str, message: Message, secret: bytes) -> Answer:
            answer = await super().send(url=url, message=message, secret=secret)
            if len(self.sent) == 1:
                raise UnicodeError("encoding with 'idna' codec failed")
            return answer

    sender = RaisingSender(clock, [])
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: store.revision == 1)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [a.answer.status for a in store.attempts] == [0, 204]
    assert store.attempts[0].answer.error.startswith("unexpected UnicodeError")
    assert [when for when, _ in sender.sent] == [0.0, 0.5]  # the first backoff


async def test_an_unexpected_failure_backs_off_holding_the_lease_then_goes_on() -> None:
    clock = FakeClock()
    log = FakeLog([_change(1, "a")])
    failures = [RuntimeError("a bug"), RuntimeError("again")]

    class FailingStore(FakeDeliveryStore):
        async def event_time(self, *, revision: int) -> datetime:
            if failures:
                raise failures.pop(0)
            return NOW

    store = FailingStore()
    sender = ScriptedSender(clock, [])
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: store.revision == 1)
    assert not task.done()  # the task did not die
    assert not store.released  # nor give the lease up to be claimed again at once
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [when for when, _ in sender.sent] == [1.5]  # backed off 0.5 s, then 1 s


async def test_a_change_this_release_cannot_read_is_never_skipped() -> None:
    clock = FakeClock()
    unreadable = Change(2, _change(2, "b").events, undecodable=1, positions=(1,))
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a"), unreadable, _change(3, "c")])
    sender = ScriptedSender(clock, [])
    delivery = _delivery(store, log, sender, clock)
    task = asyncio.create_task(delivery.run())
    await _advance_until(clock, task.done)
    assert task.exception() is None
    assert [m.message_id for _, m in sender.sent] == ["msg_w_1_0"]
    assert store.revision == 1  # below the change it cannot read
    assert store.released  # for a process that can
    assert delivery.undeliverable is not None


async def test_a_webhook_id_counts_the_events_this_release_cannot_read() -> None:
    clock = FakeClock()
    events = _change(1, "a", "c").events
    store, log = FakeDeliveryStore(), FakeLog([Change(1, events, undecodable=1, positions=(0, 2))])
    store.revision = 1
    store.queue = [Redelivery(1, revision=1, event_index=2)]
    sender = ScriptedSender(clock, [])
    delivery = _delivery(store, log, sender, clock)
    delivery.cursor = 1
    task = asyncio.create_task(delivery.run())
    await _advance_until(clock, lambda: not store.queue)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [m.message_id for _, m in sender.sent] == ["msg_w_1_2"]
    assert json.loads(sender.sent[0][1].body)["data"]["resource"] == "namespaces/c"


class ClaimingStore(FakeDeliveryStore):
    """A FakeDeliveryStore the dispatcher claims from; `refuse` makes each claim fail
    as one whose secret or filter does not read."""

    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.claims = 0
        self.held = False
        self.refuse = refuse

    async def claimable(self) -> list[str]:
        return [] if self.held else ["w"]

    async def claim(self, *, webhook_id: str, owner: str, seconds: float) -> Lease | None:
        if self.held:
            return None
        self.claims += 1
        if self.refuse:
            raise Undeliverable("its secret does not open")
        self.held = True
        webhook = Webhook("w", "http://hooks.example/w", WebhookFilter())
        return Lease(webhook, b"k" * 32, self.token, owner)

    async def release(self, *, lease: Lease) -> None:
        self.released, self.held = True, False


@pytest.mark.parametrize("refuse", [False, True], ids=["unreadable change", "refused claim"])
async def test_the_dispatcher_leaves_an_undeliverable_subscription_alone_for_a_while(
    refuse: bool,
) -> None:
    clock = FakeClock()
    unreadable = Change(1, (), undecodable=1, positions=())
    store, log = ClaimingStore(refuse), FakeLog([unreadable])
    dispatcher = WebhookDispatcher(
        store=store,
        log=log,
        sender=ScriptedSender(clock, []),
        clock=clock,
        settings=SETTINGS,
        owner="me",
    )
    task = asyncio.create_task(dispatcher.run())
    await _advance_until(clock, lambda: store.claims == 1)
    start = clock.now()
    await _advance_until(clock, lambda: clock.now() - start >= 50)
    assert store.claims == 1  # not re-claimed in a loop: at most once per max backoff
    await _advance_until(clock, lambda: store.claims == 2, limit=SETTINGS.max_backoff_seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert store.revision == 0


async def test_the_delivery_log_stays_bounded_while_one_event_blocks() -> None:
    clock = FakeClock()
    store, log = FakeDeliveryStore(), FakeLog([_change(1, "a")])
    sender = ScriptedSender(clock, [Answer(500)] * 1000)
    fast = DeliverySettings(
        lease_seconds=30, first_backoff_seconds=0.25, max_backoff_seconds=0.25, log_keep=5
    )
    webhook = Webhook("w", "http://hooks.example/w", WebhookFilter())
    delivery = SubscriptionDelivery(
        lease=Lease(webhook, b"k" * 32, store.token, "me"),
        store=store,
        log=log,
        sender=sender,
        clock=clock,
        settings=fast,
        wall=lambda: NOW,
        jitter=lambda: 0.0,
    )
    task = asyncio.create_task(delivery.run())
    longest = 0
    while len(sender.sent) < 3 * PRUNE_EVERY:
        await clock.advance(0.25)
        longest = max(longest, len(store.attempts))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert store.revision == 0  # still blocked
    assert longest <= fast.log_keep + PRUNE_EVERY


def test_a_lease_never_shows_its_secret() -> None:
    webhook = Webhook("w", "http://hooks.example/w", WebhookFilter())
    lease = Lease(webhook, b"hunter2-signing-secret-32-bytes!", 7, "me")
    assert "hunter2" not in repr(lease)
    assert "hunter2" not in str(lease)
    assert "token=7" in repr(lease)


@pytest.mark.parametrize("error", [Unavailable, Aborted])
async def test_the_attempt_count_goes_on_after_the_database_failed(
    error: type[Unavailable | Aborted],
) -> None:
    clock = FakeClock()
    log = FakeLog([_change(1, "a")])

    class FlakyStore(FakeDeliveryStore):
        records = 0

        async def record(self, *, lease: Lease, attempt: Attempt, seconds: float) -> bool:
            self.records += 1
            if self.records == 2:  # attempt 2 was sent, but not logged
                raise error("the database went away")
            return await super().record(lease=lease, attempt=attempt, seconds=seconds)

    store = FlakyStore()
    sender = ScriptedSender(clock, [Answer(500), Answer(500)])
    task = asyncio.create_task(_delivery(store, log, sender, clock).run())
    await _advance_until(clock, lambda: store.revision == 1)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(sender.sent) == 3
    # Numbered on from the log (the unlogged attempt's number is taken again), not from 1.
    assert [a.attempt for a in store.attempts] == [1, 2]
    assert [a.answer.status for a in store.attempts] == [500, 204]
