"""Role bindings in PostgreSQL (migrations/0011_access.sql): grant and revoke, each with
its access event in the same transaction, stamped into the change log; the listing; and
the snapshot every process's grant cache loads at start."""

from __future__ import annotations

import asyncpg

from modelreg.domain import consistency
from modelreg.domain.access import Binding, BindingKey, Role, SubjectKind
from modelreg.domain.errors import AlreadyExists, NotFound
from modelreg.domain.events import Event, EventKind
from modelreg.domain.names import NamespaceKey, RegistryKey
from modelreg.store import changelog
from modelreg.store.errors import translated
from modelreg.store.events import INSERT_EVENT

COLUMNS = "role, subject_kind, subject, scope, created_by, create_time"
INSERT = f"""
INSERT INTO role_bindings (role, subject_kind, subject, scope, created_by)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}
"""
DELETE = f"""
DELETE FROM role_bindings WHERE role = $1 AND subject_kind = $2 AND subject = $3 AND scope = $4
RETURNING {COLUMNS}
"""
ALL = f"SELECT {COLUMNS} FROM role_bindings"
# Keyset over (scope, subject_kind, subject, role); an empty filter matches every row.
LIST = f"""
SELECT {COLUMNS} FROM role_bindings
WHERE ($1::text IS NULL OR scope = $1)
  AND ($2::text IS NULL OR (subject_kind = $2 AND subject = $3))
  AND (scope, subject_kind, subject, role) > ($4, $5, $6, $7)
ORDER BY scope, subject_kind, subject, role LIMIT $8
"""
Position = tuple[str, str, str, str]


class PostgresAccessStore:
    """The AccessStore port (domain/accesscontrol.py) and the grant cache's snapshot."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def grant(self, *, key: BindingKey, actor: str) -> tuple[Binding, Event, int]:
        """Make the binding; ALREADY_EXISTS if it is there. Returns it, its event and the
        revision it committed at."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(INSERT, key.role, key.kind, key.subject, key.scope, actor)
            if row is None:
                raise AlreadyExists(f"role binding {key.describe()}")
            binding = binding_of(row)
            event = Event(
                EventKind.ACCESS_GRANTED,
                _scope(key.scope),
                actor,
                after=binding.to_json(),
                latest_moved=False,
            )
            revision = await _append(conn, event)
        consistency.committed(revision)
        return binding, event, revision

    async def revoke(self, *, key: BindingKey, actor: str) -> tuple[Binding, Event, int]:
        """Remove the binding; NOT_FOUND if there is none."""
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(DELETE, key.role, key.kind, key.subject, key.scope)
            if row is None:
                raise NotFound(
                    "role_bindings", message=f"no role binding {key.describe()} to revoke"
                )
            binding = binding_of(row)
            event = Event(
                EventKind.ACCESS_REVOKED,
                _scope(key.scope),
                actor,
                before=binding.to_json(),
                latest_moved=False,
            )
            revision = await _append(conn, event)
        consistency.committed(revision)
        return binding, event, revision

    async def list_bindings(
        self,
        *,
        scope: str | None,
        subject: tuple[SubjectKind, str] | None,
        after: Position | None,
        limit: int,
    ) -> list[Binding]:
        kind, name = subject if subject is not None else (None, None)
        start = after or ("", "", "", "")
        async with translated():
            rows = await self._pool.fetch(LIST, scope, kind, name, *start, limit)
        return [binding_of(row) for row in rows]

    async def snapshot(self) -> tuple[list[Binding], int]:
        async with (
            translated(),
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(ALL)
            head: int = await conn.fetchval(changelog.HEAD)
        return [binding_of(row) for row in rows], head


async def _append(conn: asyncpg.Connection, event: Event) -> int:
    await conn.execute(
        INSERT_EVENT,
        event.namespace,
        "",
        event.resource,
        event.kind,
        event.actor,
        event.before,
        event.after,
    )
    return await changelog.stamp(conn, [event])


def _scope(scope: str) -> NamespaceKey | RegistryKey:
    return NamespaceKey(scope) if scope else RegistryKey()


def binding_of(row: asyncpg.Record) -> Binding:
    key = BindingKey(
        Role(row["role"]), SubjectKind(row["subject_kind"]), row["subject"], row["scope"]
    )
    return Binding(key, row["created_by"], row["create_time"])
