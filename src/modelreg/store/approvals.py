"""Protected aliases in PostgreSQL (migrations/0012_approvals.sql): policies, change
requests and their approvals. The writes half joins the transaction's connection; the
request row lock (`FOR UPDATE`) serialises concurrent approvals of one request, so the
move is applied at most once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from modelreg.domain.approvals import AliasPolicy, Approval, ChangeRequest
from modelreg.domain.errors import NotFound
from modelreg.domain.names import AliasKey, ModelKey
from modelreg.store.errors import translated

_POLICY = (
    "SELECT ns, model, aliases, approvals, updater FROM alias_policies WHERE ns = $1 AND model = $2"
)
_SAVE_POLICY = """
INSERT INTO alias_policies (ns, model, aliases, approvals, updater) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (ns, model) DO UPDATE SET aliases = EXCLUDED.aliases,
    approvals = EXCLUDED.approvals, updater = EXCLUDED.updater, update_time = now()
RETURNING ns, model, aliases, approvals, updater"""
_NEEDED = """
SELECT CASE WHEN $3 = ANY(aliases) THEN approvals ELSE 0 END FROM alias_policies
WHERE ns = $1 AND model IN ($2, '') ORDER BY model DESC LIMIT 1"""
_COLUMNS = """request_id, ns, model, alias, number, digest, expected_number, reason, requester,
approvals_needed, state, create_time, expire_time, decide_time, decider, decision"""
_INSERT = f"""
INSERT INTO change_requests (request_id, ns, model, alias, number, digest, expected_number,
    reason, requester, approvals_needed, expire_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + $11 * interval '1 second')
RETURNING {_COLUMNS}"""
_LOCK = f"SELECT {_COLUMNS}, now() AS now FROM change_requests WHERE request_id = $1 FOR UPDATE"
_GET = f"SELECT {_COLUMNS} FROM change_requests WHERE request_id = $1"
_APPROVALS = """SELECT request_id, approver, time, comment FROM change_request_approvals
WHERE request_id = ANY($1) ORDER BY time, approver"""
_ADD_APPROVAL = """INSERT INTO change_request_approvals (request_id, approver, comment)
VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING approver"""
_DECIDE = f"""UPDATE change_requests SET state = $2, decider = $3, decision = $4,
decide_time = now() WHERE request_id = $1 AND state = 'PENDING' RETURNING {_COLUMNS}"""
_LIST = f"""SELECT {_COLUMNS} FROM change_requests
WHERE ($1 = '' OR ns = $1) AND ($2 = '' OR model = $2) AND ($3 = '' OR alias = $3)
AND ($4 = '' OR state = $4) AND ($5::text IS NULL OR request_id < $5)
ORDER BY request_id DESC LIMIT $6"""


def _policy(row: Any) -> AliasPolicy:
    return AliasPolicy(
        row["ns"], row["model"], tuple(row["aliases"]), row["approvals"], row["updater"]
    )


def _request(row: Any, approvals: tuple[Approval, ...] = ()) -> ChangeRequest:
    return ChangeRequest(
        request_id=row["request_id"],
        alias=AliasKey(ModelKey(row["ns"], row["model"]), row["alias"]),
        number=row["number"],
        digest=row["digest"],
        expected_number=row["expected_number"],
        reason=row["reason"],
        requester=row["requester"],
        approvals_needed=row["approvals_needed"],
        state=row["state"],
        create_time=row["create_time"],
        expire_time=row["expire_time"],
        decide_time=row["decide_time"],
        decider=row["decider"],
        decision=row["decision"],
        approvals=approvals,
    )


async def _with_approvals(
    conn: asyncpg.Pool | asyncpg.Connection, found: list[Any]
) -> list[ChangeRequest]:
    ids = [r["request_id"] for r in found]
    by_id: dict[str, list[Approval]] = {i: [] for i in ids}
    for a in await conn.fetch(_APPROVALS, ids) if ids else []:
        by_id[a["request_id"]].append(Approval(a["approver"], a["time"], a["comment"]))
    return [_request(r, tuple(by_id[r["request_id"]])) for r in found]


class PostgresApprovalReads:
    """The ApprovalReads port, on the primary's pool (decisions are read where written)."""

    _primary_reads: asyncpg.Pool

    async def get_change_request(self, *, request_id: str) -> ChangeRequest:
        async with translated():
            row = await self._primary_reads.fetchrow(_GET, request_id)
            if row is None:
                raise NotFound(f"changeRequests/{request_id}")
            return (await _with_approvals(self._primary_reads, [row]))[0]

    async def list_change_requests(
        self,
        *,
        namespace: str,
        model: str,
        alias: str,
        state: str,
        before: str | None,
        limit: int,
    ) -> list[ChangeRequest]:
        async with translated():
            found = await self._primary_reads.fetch(
                _LIST, namespace, model, alias, state, before, limit
            )
            return await _with_approvals(self._primary_reads, list(found))


class PostgresApprovalWrites:
    """The ApprovalWrites and AliasProtection ports, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def alias_approvals_needed(self, *, key: AliasKey) -> int:
        found = await self._conn.fetchval(_NEEDED, key.model.namespace, key.model.model, key.alias)
        return int(found or 0)

    async def alias_policy(self, *, namespace: str, model: str) -> AliasPolicy | None:
        row = await self._conn.fetchrow(_POLICY, namespace, model)
        return None if row is None else _policy(row)

    async def save_alias_policy(self, *, policy: AliasPolicy) -> AliasPolicy:
        row = await self._conn.fetchrow(
            _SAVE_POLICY,
            policy.namespace,
            policy.model,
            list(policy.aliases),
            policy.approvals,
            policy.updater,
        )
        return _policy(row)

    async def insert_change_request(self, *, request: ChangeRequest) -> ChangeRequest:
        ttl = (request.expire_time - request.create_time).total_seconds()
        key = request.alias
        row = await self._conn.fetchrow(
            _INSERT,
            request.request_id,
            key.model.namespace,
            key.model.model,
            key.alias,
            request.number,
            request.digest,
            request.expected_number,
            request.reason,
            request.requester,
            request.approvals_needed,
            ttl,
        )
        return _request(row)

    async def lock_change_request(self, *, request_id: str) -> tuple[ChangeRequest, datetime]:
        row = await self._conn.fetchrow(_LOCK, request_id)
        if row is None:
            raise NotFound(f"changeRequests/{request_id}")
        return (await _with_approvals(self._conn, [row]))[0], row["now"]

    async def add_approval(self, *, request_id: str, approver: str, comment: str) -> bool:
        return await self._conn.fetchval(_ADD_APPROVAL, request_id, approver, comment) is not None

    async def decide_change_request(
        self, *, request_id: str, state: str, decider: str, decision: str
    ) -> ChangeRequest:
        row = await self._conn.fetchrow(_DECIDE, request_id, state, decider, decision)
        if row is None:  # the caller holds the row lock and saw it PENDING
            raise RuntimeError(f"change request {request_id} was not PENDING")
        return (await _with_approvals(self._conn, [row]))[0]
