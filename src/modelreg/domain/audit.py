"""The audit log: the events table read as a hash chain in change-log order, the calls
that were refused, and the verification of the chain.

Every stamped event carries `previous_hash` (the hash of the event before it in
change-log order: revision, then event id) and `hash` = sha256(previous_hash || the
event's canonical digest); the stamp computes it in the database (migration 0013), and
the verifier recomputes it with the same SQL function. A row changed behind the server's
back no longer matches its hash; a row removed leaves the next one pointing at a hash no
event has. What a chain cannot show by itself is a cut-off tail: an operator records the
head hash `modelreg audit verify` prints and compares it later.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.events import EventKind
from modelreg.domain.names import (
    ModelKey,
    check_principal,
    parse_model_name,
    parse_namespace_name,
)
from modelreg.domain.paging import PageTokens, number_position, page_of, page_size
from modelreg.domain.principals import Denial
from modelreg.domain.types import Page

GENESIS = bytes(32)  # the previous hash of the first event (modelreg_chain_genesis)
HASH_BYTES = 32
DEFAULT_VERIFY_EVENTS = 1000
MAX_VERIFY_EVENTS = 10_000
MAX_KINDS = 100
MAX_METHOD = 256


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event sits in change-log order."""

    revision: int
    event_id: int

    def as_token(self) -> list[int]:
        return [self.revision, self.event_id]


START = Position(0, 0)  # before every event


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event of the log, with its place in the chain."""

    event_id: int
    revision: int
    namespace: str
    kind: str
    resource: str
    actor: str
    time: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    latest_moved: bool
    previous_hash: bytes
    hash: bytes

    @property
    def position(self) -> Position:
        return Position(self.revision, self.event_id)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """ListEvents' filters; empty ones match everything."""

    namespace: str = ""
    model: ModelKey | None = None
    actor: str = ""
    kinds: tuple[str, ...] = ()
    start_time: datetime | None = None  # inclusive
    end_time: datetime | None = None  # exclusive
    newest_first: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """What a page token is bound to."""
        return {
            "events": [self.namespace, self.model.name if self.model else "", self.actor],
            "kinds": list(self.kinds),
            "time": [_iso(self.start_time), _iso(self.end_time)],
            "newest_first": self.newest_first,
        }


@dataclass(frozen=True, slots=True)
class DenialQuery:
    """ListDenials' filters; empty ones match everything."""

    actor: str = ""
    method: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    newest_first: bool = False

    def fingerprint(self) -> dict[str, Any]:
        return {
            "denials": [self.actor, self.method],
            "time": [_iso(self.start_time), _iso(self.end_time)],
            "newest_first": self.newest_first,
        }


@dataclass(frozen=True, slots=True)
class RecordedDenial:
    """A refused call as the denials table keeps it."""

    denial_id: int
    time: datetime
    denial: Denial


@dataclass(frozen=True, slots=True)
class ChainLink:
    """An event as the verifier reads it: what is stored, and its hash recomputed in the
    database from the hash of the link before it."""

    event_id: int
    revision: int
    resource: str
    previous_hash: bytes | None
    hash: bytes | None
    recomputed: bytes | None

    @property
    def position(self) -> Position:
        return Position(self.revision, self.event_id)


class MismatchKind(enum.StrEnum):
    """How a link fails to match."""

    # the row's content no longer gives its stored hash: it was changed
    CHANGED = "changed"
    # its previous hash is not the hash of the event before it: an event before it was
    # removed (or its place in the order changed)
    UNLINKED = "unlinked"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first event of a verified stretch that does not match."""

    kind: MismatchKind
    event_id: int
    revision: int
    resource: str
    stored_hash: bytes
    recomputed_hash: bytes
    stored_previous_hash: bytes
    expected_previous_hash: bytes


@dataclass(frozen=True, slots=True)
class Verification:
    """One page of verification: `checked` events matched after the starting position,
    up to `last` (whose hash is `last_hash`); `mismatch` is the first that did not."""

    checked: int
    last: Position
    last_hash: bytes
    mismatch: Mismatch | None
    done: bool  # no event after `last` (or a mismatch ended it)
    head_revision: int  # the log's head when the page was read, for progress


class AuditStore(Protocol):
    """Reads of the audit log (the events table and the denials table)."""

    async def list_events(
        self, *, query: EventQuery, after: Position | None, limit: int
    ) -> list[AuditEvent]:
        """Events matching `query` past `after`, in the query's direction."""
        ...

    async def chain(self, *, after: Position, previous: bytes, limit: int) -> list[ChainLink]:
        """Up to `limit` events after `after` in change-log order, each with its hash
        recomputed (the first from `previous`, every other from the stored hash of the
        one before it)."""
        ...

    async def head(self) -> int:
        """The highest revision stamped (0 for an empty log)."""
        ...

    async def list_denials(
        self, *, query: DenialQuery, after: int | None, limit: int
    ) -> list[RecordedDenial]:
        """Denials matching `query` past the denial id `after`, in the query's direction."""
        ...


class Audit:
    """AuditService's use cases: list events and denials, verify the chain."""

    def __init__(self, *, store: AuditStore, tokens: PageTokens) -> None:
        self._store, self._tokens = store, tokens

    async def list_events(self, *, query: EventQuery, size: int, token: str) -> Page[AuditEvent]:
        limit = page_size(size)
        fingerprint = query.fingerprint()
        after = self._tokens.decode(token, fingerprint, _position)
        items = await self._store.list_events(query=query, after=after, limit=limit + 1)
        return page_of(
            items, limit, lambda last: self._tokens.encode(fingerprint, last.position.as_token())
        )

    async def list_denials(
        self, *, query: DenialQuery, size: int, token: str
    ) -> Page[RecordedDenial]:
        limit = page_size(size)
        fingerprint = query.fingerprint()
        after = self._tokens.decode(token, fingerprint, _denial_position)
        items = await self._store.list_denials(query=query, after=after, limit=limit + 1)
        return page_of(items, limit, lambda last: self._tokens.encode(fingerprint, last.denial_id))

    async def verify(self, *, after: Position, previous: bytes, limit: int) -> Verification:
        """Check up to `limit` events after `after`, `previous` being the hash of the
        event at `after` (GENESIS at the start)."""
        head = await self._store.head()
        links = await self._store.chain(after=after, previous=previous, limit=limit + 1)
        more = len(links) > limit
        checked, last, expected = 0, after, previous
        for link in links[:limit]:
            mismatch = _mismatch(link, expected)
            if mismatch is not None:
                return Verification(checked, last, expected, mismatch, True, head)
            checked, last, expected = checked + 1, link.position, link.hash or b""
        return Verification(checked, last, expected, None, not more, head)


def _mismatch(link: ChainLink, expected: bytes) -> Mismatch | None:
    stored_previous = link.previous_hash or b""
    stored, recomputed = link.hash or b"", link.recomputed or b""
    if stored_previous != expected:
        kind = MismatchKind.UNLINKED
    elif not stored or stored != recomputed:
        kind = MismatchKind.CHANGED
    else:
        return None
    return Mismatch(
        kind,
        link.event_id,
        link.revision,
        link.resource,
        stored_hash=stored,
        recomputed_hash=recomputed,
        stored_previous_hash=stored_previous,
        expected_previous_hash=expected,
    )


def event_query(
    *,
    namespace: str,
    model: str,
    actor: str,
    kinds: Sequence[str],
    start_time: datetime | None,
    end_time: datetime | None,
    newest_first: bool,
) -> EventQuery:
    """Checked ListEvents filters (resource names, as in the request)."""
    ns = parse_namespace_name(namespace, "namespace") if namespace else ""
    key = parse_model_name(model, "model") if model else None
    if key is not None and ns and key.namespace != ns:
        raise InvalidArgument.field("model", f"is not in namespace {ns!r}")
    if len(kinds) > MAX_KINDS:
        raise InvalidArgument.field("kinds", f"at most {MAX_KINDS}")
    for kind in kinds:
        _kind(kind)
    _check_range(start_time, end_time)
    return EventQuery(
        namespace=ns,
        model=key,
        actor=check_principal(actor, "actor") if actor else "",
        kinds=tuple(sorted(set(kinds))),
        start_time=start_time,
        end_time=end_time,
        newest_first=newest_first,
    )


def denial_query(
    *,
    actor: str,
    method: str,
    start_time: datetime | None,
    end_time: datetime | None,
    newest_first: bool,
) -> DenialQuery:
    """Checked ListDenials filters."""
    if method and (len(method) > MAX_METHOD or not method.isprintable() or " " in method):
        raise InvalidArgument.field("method", "must be a gRPC method, /package.Service/Method")
    _check_range(start_time, end_time)
    return DenialQuery(
        actor=check_principal(actor, "actor") if actor else "",
        method=method,
        start_time=start_time,
        end_time=end_time,
        newest_first=newest_first,
    )


def verify_start(
    *, revision: int, event_id: int, previous: bytes, limit: int
) -> tuple[Position, bytes, int]:
    """Checked VerifyAuditLog arguments: the position, the previous hash, the page size."""
    if revision < 0:
        raise InvalidArgument.field("after_revision", "must not be negative")
    if event_id < 0:
        raise InvalidArgument.field("after_event_id", "must not be negative")
    if limit < 0:
        raise InvalidArgument.field("max_events", "must not be negative")
    position = Position(revision, event_id)
    if position == START and not previous:
        previous = GENESIS
    if len(previous) != HASH_BYTES:
        raise InvalidArgument.field(
            "expected_previous_hash",
            f"must be the {HASH_BYTES}-byte hash of the event at the starting position"
            " (the last_hash of the previous page)",
        )
    return position, previous, min(limit or DEFAULT_VERIFY_EVENTS, MAX_VERIFY_EVENTS)


def _kind(value: str) -> None:
    try:
        EventKind(value)
    except ValueError:
        known = ", ".join(k.value for k in EventKind)
        raise InvalidArgument.field("kinds", f"unknown event kind; one of {known}") from None


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidArgument.field("end_time", "must be after start_time")


def _position(value: Any) -> Position:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError("position must be [revision, event_id]")
    return Position(number_position(value[0]), number_position(value[1]))


def _denial_position(value: Any) -> int:
    return number_position(value)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""
