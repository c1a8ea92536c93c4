"""Principals and API keys in PostgreSQL (migrations/0010_identity.sql): the ApiKeyStore
port. Every change writes its event and ends with the change log's stamp in the same
transaction, as the registry's mutations do; snapshots hold the public record only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from modelreg.domain import consistency
from modelreg.domain.access import GLOBAL, Role, SubjectKind
from modelreg.domain.events import Event, EventKind, change
from modelreg.domain.identity import (
    SYSTEM_ACTOR,
    ApiKey,
    NewKey,
    PrincipalKind,
    StoredKey,
    kind_conflict,
    not_found,
)
from modelreg.domain.names import PrincipalKey, RegistryKey
from modelreg.store import access, changelog
from modelreg.store.errors import translated
from modelreg.store.events import PostgresEventLog

# One first-admin bootstrap at a time across every process on the database.
_BOOTSTRAP_LOCK = 0x6D6F64656C6B6579  # "modelkey"
_COLUMNS = """k.key_id, k.seq, k.principal, p.kind, k.description, k.create_time,
k.created_by, k.expire_time, k.revoke_time"""
_FROM = "api_keys k JOIN principals p ON p.name = k.principal"
_FIND = f"SELECT {_COLUMNS}, k.secret_hash FROM {_FROM} WHERE k.key_id = $1"
_LIST = f"""SELECT {_COLUMNS} FROM {_FROM}
WHERE ($1::text IS NULL OR k.principal = $1) AND ($2::bigint IS NULL OR k.seq < $2)
ORDER BY k.seq DESC LIMIT $3"""
_PRINCIPAL = "SELECT kind FROM principals WHERE name = $1 FOR UPDATE"
_NEW_PRINCIPAL = "INSERT INTO principals (name, kind, created_by) VALUES ($1, $2, $3)"
_INSERT = f"""WITH k AS (
    INSERT INTO api_keys (key_id, principal, secret_hash, description, created_by, expire_time)
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING *
) SELECT {_COLUMNS} FROM k JOIN principals p ON p.name = k.principal"""
_REVOKE = """UPDATE api_keys SET revoke_time = now()
WHERE key_id = $1 AND revoke_time IS NULL RETURNING key_id"""
_ANY_PRINCIPAL = "SELECT EXISTS (SELECT 1 FROM principals)"


class _Events(PostgresEventLog):
    """The event log on one transaction's connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.events = []


class PostgresApiKeyStore:
    """The ApiKeyStore port on the primary's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_key(self, *, new: NewKey, actor: str) -> ApiKey:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await self._principal(conn, new, actor)
            created = await _insert(conn, new, actor)
            revision = await _changed(conn, EventKind.KEY_CREATED, created, actor)
        consistency.committed(revision)
        return created

    async def find_key(self, *, key_id: str) -> StoredKey | None:
        async with translated():
            row = await self._pool.fetchrow(_FIND, key_id)
        return None if row is None else StoredKey(key_of(row), bytes(row["secret_hash"]))

    async def list_keys(
        self, *, principal: str | None, before: int | None, limit: int
    ) -> list[ApiKey]:
        async with translated():
            rows = await self._pool.fetch(_LIST, principal, before, limit)
        return [key_of(row) for row in rows]

    async def revoke_key(self, *, key_id: str, actor: str) -> tuple[ApiKey, bool]:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            revoked = await conn.fetchval(_REVOKE, key_id) is not None
            row = await conn.fetchrow(_FIND, key_id)
            if row is None:
                raise not_found(key_id)
            key = key_of(row)
            revision = await _changed(conn, EventKind.KEY_REVOKED, key, actor) if revoked else 0
        if revision:
            consistency.committed(revision)
        return key, revoked

    async def create_first_admin(self, *, new: NewKey, keep: Callable[[], None]) -> bool:
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
            if await conn.fetchval(_ANY_PRINCIPAL):
                return False
            key = new.key
            await conn.execute(_NEW_PRINCIPAL, key.principal, key.kind.value, SYSTEM_ACTOR)
            created = await _insert(conn, new, SYSTEM_ACTOR)
            granted = await grant_first_admin(conn, key.principal)
            await _changed(conn, EventKind.KEY_CREATED, created, SYSTEM_ACTOR, before=granted)
            # Saved before COMMIT: if saving fails, nothing is committed, and a key that
            # is committed has been saved. (A COMMIT that fails after a save leaves a file
            # holding a key the database never had: the next start replaces it.)
            await asyncio.to_thread(keep)
        return True

    async def _principal(self, conn: asyncpg.Connection, new: NewKey, actor: str) -> None:
        """Make the key's principal if it is new; refuse a kind it does not have."""
        key = new.key
        stored = await conn.fetchval(_PRINCIPAL, key.principal)
        if stored is None:
            try:
                async with conn.transaction():  # a savepoint: a racing create may win
                    await conn.execute(_NEW_PRINCIPAL, key.principal, key.kind.value, actor)
                return
            except asyncpg.UniqueViolationError:
                stored = await conn.fetchval(_PRINCIPAL, key.principal)
        if new.kind_given and stored != key.kind.value:
            raise kind_conflict(key.principal, stored)


async def grant_first_admin(conn: asyncpg.Connection, principal: str) -> Event | None:
    """Give the first principal the global `admin` role, in the transaction that makes it;
    the grant's event (not yet stamped), or None if the binding was there already."""
    row = await conn.fetchrow(
        access.INSERT, Role.ADMIN.value, SubjectKind.PRINCIPAL.value, principal, GLOBAL,
        SYSTEM_ACTOR,
    )  # fmt: skip
    if row is None:
        return None
    event = Event(
        EventKind.ACCESS_GRANTED,
        RegistryKey(),
        SYSTEM_ACTOR,
        after=access.binding_of(row).to_json(),
        latest_moved=False,
    )
    await _Events(conn).append_event(event=event)
    return event


async def _insert(conn: asyncpg.Connection, new: NewKey, actor: str) -> ApiKey:
    key = new.key
    row = await conn.fetchrow(
        _INSERT, key.key_id, key.principal, new.secret_hash, key.description, actor,
        key.expire_time,
    )  # fmt: skip
    return key_of(row)


async def _changed(
    conn: asyncpg.Connection,
    kind: EventKind,
    key: ApiKey,
    actor: str,
    *,
    before: Event | None = None,
) -> int:
    """The event of a key change, stamped with `before` (an event the transaction
    appended already) as the transaction's last statements; its revision, which the
    caller hands on after the commit."""
    log = _Events(conn)
    event = change(kind, PrincipalKey(key.principal), actor, after=_public(key), latest_moved=False)
    await log.append_event(event=event)
    return await changelog.stamp(conn, [*([before] if before else []), *log.events])


def _public(key: ApiKey) -> dict[str, Any]:
    """The snapshot an event keeps: the public record (no secret, no hash)."""
    return {
        "key_id": key.key_id,
        "principal": key.principal,
        "kind": key.kind.value,
        "description": key.description,
        "creator": key.creator,
        "expire_time": key.expire_time.isoformat() if key.expire_time else None,
        "revoke_time": key.revoke_time.isoformat() if key.revoke_time else None,
    }


def key_of(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        principal=row["principal"],
        kind=PrincipalKind(row["kind"]),
        description=row["description"],
        create_time=row["create_time"],
        creator=row["created_by"],
        expire_time=row["expire_time"],
        revoke_time=row["revoke_time"],
        seq=row["seq"],
    )
