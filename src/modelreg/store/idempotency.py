"""Idempotency keys in PostgreSQL: the request_ids a create claims."""

from __future__ import annotations

import asyncpg

from modelreg.domain.types import PriorRequest

# ON CONFLICT waits for a concurrent claim of the same id to commit or roll back.
CLAIM_REQUEST = """
INSERT INTO request_ids (request_id, method, fingerprint) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING true
"""
PRIOR_REQUEST = "SELECT method, fingerprint, resource FROM request_ids WHERE request_id = $1"
FINISH_REQUEST = "UPDATE request_ids SET resource = $2 WHERE request_id = $1"


class PostgresIdempotency:
    """The Idempotency port, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def claim_request(
        self, *, request_id: str, method: str, fingerprint: str
    ) -> PriorRequest | None:
        if await self._conn.fetchval(CLAIM_REQUEST, request_id, method, fingerprint):
            return None
        row = await self._conn.fetchrow(PRIOR_REQUEST, request_id)
        return PriorRequest(row["method"], row["fingerprint"], row["resource"])

    async def finish_request(self, *, request_id: str, resource: str) -> None:
        await self._conn.execute(FINISH_REQUEST, request_id, resource)
