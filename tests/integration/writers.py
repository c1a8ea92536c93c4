"""Writers for the change-log tests: transactions that each append events about one
alias of `model`, held open until told to commit (or roll back), with ticks of one
logical clock around their commit, so a test can say which commits a reader must see."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import AliasKey, ModelKey
from modelreg.store.postgres import PostgresStore


class Rollback(Exception):
    """Raised inside a writer's transaction to roll it back."""


@dataclass
class Writer:
    """One transaction: `events` events, held open until `go`; `began`/`acked` are ticks
    of one logical clock just before its commit starts and after it returned."""

    index: int
    events: int
    rollback: bool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)
    began: int = -1
    acked: int = -1


async def write(
    store: PostgresStore, writer: Writer, clock: itertools.count[int], model: ModelKey
) -> None:
    """Run `writer`'s transaction: append its events, wait for `go`, commit (or roll back)."""
    try:
        async with store.transaction() as tx:
            for n in range(writer.events):
                subject = AliasKey(model, f"w{writer.index}")
                after = {"writer": writer.index, "n": n}
                await tx.append_event(
                    event=Event(EventKind.ALIAS_SET, subject, "t", after=after, latest_moved=False)
                )
            writer.ready.set()
            await writer.go.wait()
            writer.began = next(clock)
            if writer.rollback:
                raise Rollback
    except Rollback:
        return
    writer.acked = next(clock)
