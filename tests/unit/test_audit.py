"""The chain verification rule and the audit command line, without servers: the
verifier against a fake of our own AuditStore port, the parser, the counting bar."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import pytest

from modelreg import cli
from modelreg.cli.audit import _count
from modelreg.cli.progress import ProgressBar
from modelreg.domain.audit import (
    GENESIS,
    START,
    Audit,
    AuditEvent,
    ChainLink,
    DenialQuery,
    EventQuery,
    MismatchKind,
    Position,
    RecordedDenial,
    Verification,
    verify_start,
)
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.paging import PageTokens


def _digest(n: int) -> bytes:
    return hashlib.sha256(f"event {n}".encode()).digest()


class FakeChain:
    """An AuditStore of `count` events, one per revision, whose hashes recompute as the
    SQL does (sha256(previous || digest)); `changed` events no longer match their digest,
    `removed` ones are gone."""

    def __init__(self, count: int, *, changed: int = 0, removed: int = 0) -> None:
        self.rows: list[tuple[int, bytes, bytes]] = []  # (n, prev_hash, hash)
        previous = GENESIS
        for n in range(1, count + 1):
            current = hashlib.sha256(previous + _digest(n)).digest()
            self.rows.append((n, previous, current))
            previous = current
        self.changed = changed
        self.rows = [row for row in self.rows if row[0] != removed]

    async def chain(self, *, after: Position, previous: bytes, limit: int) -> list[ChainLink]:
        rows = [row for row in self.rows if row[0] > after.revision][:limit]
        links, before = [], previous
        for n, prev_hash, stored in rows:
            digest = _digest(n) if n != self.changed else _digest(-n)
            links.append(
                ChainLink(
                    n, n, f"r{n}", prev_hash, stored, hashlib.sha256(before + digest).digest()
                )
            )
            before = stored
        return links

    async def head(self) -> int:
        return self.rows[-1][0] if self.rows else 0

    async def list_events(
        self, *, query: EventQuery, after: Position | None, limit: int
    ) -> list[AuditEvent]:
        raise NotImplementedError

    async def list_denials(
        self, *, query: DenialQuery, after: int | None, limit: int
    ) -> list[RecordedDenial]:
        raise NotImplementedError


async def _verify_all(chain: FakeChain, page: int) -> tuple[int, Verification]:
    audit = Audit(store=chain, tokens=PageTokens.ephemeral())
    after, previous, checked = START, GENESIS, 0
    while True:
        result = await audit.verify(after=after, previous=previous, limit=page)
        checked += result.checked
        if result.done:
            return checked, result
        after, previous = result.last, result.last_hash


async def test_an_intact_chain_verifies_page_by_page() -> None:
    chain = FakeChain(10)
    checked, result = await _verify_all(chain, 3)
    assert checked == 10
    assert result.mismatch is None
    assert result.last_hash == chain.rows[-1][2]


async def test_a_changed_event_is_named_and_the_ones_before_it_counted() -> None:
    checked, result = await _verify_all(FakeChain(10, changed=6), 4)
    assert checked == 5
    assert result.mismatch is not None
    assert result.mismatch.kind is MismatchKind.CHANGED
    assert result.mismatch.event_id == 6


async def test_a_removed_event_unlinks_the_next() -> None:
    checked, result = await _verify_all(FakeChain(10, removed=4), 4)
    assert checked == 3
    assert result.mismatch is not None
    assert result.mismatch.kind is MismatchKind.UNLINKED
    assert result.mismatch.event_id == 5


def test_the_start_takes_genesis_and_later_positions_need_their_hash() -> None:
    assert verify_start(revision=0, event_id=0, previous=b"", limit=0) == (START, GENESIS, 1000)
    assert verify_start(revision=0, event_id=0, previous=b"", limit=10**6)[2] == 10_000
    with pytest.raises(InvalidArgument):
        verify_start(revision=5, event_id=9, previous=b"", limit=0)


def test_events_list_and_audit_verify_parse() -> None:
    args = vars(
        cli.build_parser().parse_args(
            ["events", "list", "--model", "t/m", "--kind", "alias.set", "--kind", "model.created",
             "--since", "2026-12-01", "--newest-first"]
        )
    )  # fmt: skip
    assert args["kind"] == ["alias.set", "model.created"]
    assert args["since"] == datetime(2026, 12, 1, tzinfo=UTC)
    assert args["newest_first"]
    assert vars(cli.build_parser().parse_args(["audit", "verify"]))["page"] == 1000


def test_the_verify_bar_counts_events() -> None:
    bar = ProgressBar(io.StringIO(), units=_count)
    assert "1,500 / 3,000" in bar.line(1500, 3000, 1.0)
