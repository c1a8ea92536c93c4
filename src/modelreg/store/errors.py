"""Translate asyncpg and connection errors into the domain's error tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from modelreg.domain.errors import Aborted, Unavailable

_UNAVAILABLE = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,  # statement_timeout, or a cancel from an operator
    asyncpg.ReadOnlySQLTransactionError,  # a primary that just became a replica
    asyncpg.LockNotAvailableError,  # lock_timeout
)
_CONFLICT = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Re-raise driver failures as Unavailable (retry later) or Aborted (retry now)."""
    try:
        yield
    except _CONFLICT as exc:
        raise Aborted(
            "the request conflicted with a concurrent one; retry it", reason="CONCURRENT_UPDATE"
        ) from exc
    except _UNAVAILABLE as exc:
        raise Unavailable(
            "the database cannot be reached; retry later", reason="DATABASE_UNAVAILABLE"
        ) from exc
