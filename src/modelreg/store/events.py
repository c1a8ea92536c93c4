"""The event log in PostgreSQL: the outbox row every change writes in its transaction."""

from __future__ import annotations

import asyncpg

from modelreg.domain.events import Event
from modelreg.store import rows

INSERT_EVENT = f"""
INSERT INTO events (model_id, ns, resource, kind, actor, before, after)
VALUES ({rows.MODEL_ID_OF}, $1, $3, $4, $5, $6, $7)
"""


class PostgresEventLog:
    """The EventLog port, on the transaction's connection; keeps what it wrote for the
    commit listeners."""

    _conn: asyncpg.Connection
    events: list[Event]

    async def append_event(self, *, event: Event) -> None:
        self.events.append(event)
        model = event.model.model if event.model else ""
        await self._conn.execute(
            INSERT_EVENT,
            event.namespace,
            model,
            event.resource,
            event.kind,
            event.actor,
            event.before,
            event.after,
        )
