"""Postgres side of uploads: the session rows, their lease and their progress.

Every write of an upload's progress is guarded on the lease token its stream claimed
(`RECORD_PROGRESS ... AND lease_token = $5`): the fence of domain/uploads.py.
`UploadWrites` gives PostgresTransaction the UploadTransaction methods, `UploadReads`
gives PostgresReader `get_upload`, and `PostgresUploadLeases` gives PostgresStore the
UploadLeases port outside a transaction (each call one statement on the primary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from modelreg.domain.errors import NotFound
from modelreg.domain.names import VersionKey
from modelreg.domain.types import Part, UploadProgress, UploadSession, VersionFile
from modelreg.store.errors import translated
from modelreg.store.rows import Row

_MODEL = "(SELECT model_id FROM models WHERE ns = $1 AND name = $2)"
_VERSION = f"model_id = {_MODEL} AND number = $3"
_COLUMNS = "path, size, sha256, committed_size, staging, hash_state, parts, complete"
INSERT_UPLOAD = f"""
INSERT INTO upload_sessions (model_id, number, upload_id, path, size, sha256)
VALUES ({_MODEL}, $3, $4, $5, $6, $7)
ON CONFLICT (model_id, number, upload_id) DO NOTHING
RETURNING {_COLUMNS}
"""
LOCK_UPLOAD = (
    f"SELECT {_COLUMNS} FROM upload_sessions WHERE {_VERSION} AND upload_id = $4 FOR UPDATE"
)
GET_UPLOAD = f"SELECT {_COLUMNS} FROM upload_sessions WHERE {_VERSION} AND upload_id = $4"
RECORD_PROGRESS = f"""
UPDATE upload_sessions
SET committed_size = $6, staging = $7, hash_state = $8, parts = $9, complete = $10,
    update_time = now()
WHERE {_VERSION} AND upload_id = $4 AND lease_token = $5 AND NOT complete
RETURNING true
"""
# A released lease has no lease_until; one that ran out is past it.
CLAIM_UPLOAD = f"""
UPDATE upload_sessions
SET lease_token = lease_token + 1, lease_until = now() + make_interval(secs => $5)
WHERE {_VERSION} AND upload_id = $4 AND NOT complete
  AND (lease_until IS NULL OR lease_until < now())
RETURNING lease_token
"""
# Renewing also marks the blob used, so collection leaves an upload's bytes alone.
RENEW_UPLOAD = f"""
WITH renewed AS (
    UPDATE upload_sessions SET lease_until = now() + make_interval(secs => $6)
    WHERE {_VERSION} AND upload_id = $4 AND lease_token = $5 AND lease_until IS NOT NULL
      AND NOT complete
    RETURNING model_id, sha256, size)
INSERT INTO blobs (model_id, sha256, size) SELECT model_id, sha256, size FROM renewed
ON CONFLICT (model_id, sha256) DO UPDATE SET last_used = now()
RETURNING true
"""
RELEASE_UPLOAD = f"""
UPDATE upload_sessions SET lease_until = NULL
WHERE {_VERSION} AND upload_id = $4 AND lease_token = $5
"""
LIVE_UPLOADS = f"""
SELECT upload_id FROM upload_sessions
WHERE {_VERSION} AND lease_until > now() ORDER BY upload_id
"""
DROP_UPLOADS = f"DELETE FROM upload_sessions WHERE {_VERSION} RETURNING upload_id, {_COLUMNS}"


def _version_args(key: VersionKey) -> tuple[str, str, int]:
    return key.model.namespace, key.model.model, key.number


def _session(version: VersionKey, upload_id: str, row: Row) -> UploadSession:
    file = VersionFile(row["path"], row["size"], row["sha256"])
    parts = tuple(
        Part(int(n), int(size), str(etag), str(sum_)) for n, size, etag, sum_ in row["parts"]
    )
    progress = UploadProgress(row["committed_size"], row["staging"], row["hash_state"], parts)
    return UploadSession(upload_id, version, file, progress, complete=row["complete"])


def _parts(parts: Sequence[Part]) -> list[list[Any]]:
    return [[p.number, p.size, p.etag, p.checksum] for p in parts]


class UploadWrites:
    """UploadTransaction methods, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def save_upload(self, *, session: UploadSession) -> UploadSession:
        args = (*_version_args(session.version), session.upload_id)
        file = session.file
        row = await self._conn.fetchrow(INSERT_UPLOAD, *args, file.path, file.size, file.sha256)
        if row is None:  # resumed: the upload exists; lock it against a concurrent finalize
            row = await self._conn.fetchrow(LOCK_UPLOAD, *args)
        return _session(session.version, session.upload_id, row)

    async def record_progress(
        self,
        *,
        version: VersionKey,
        upload_id: str,
        token: int,
        progress: UploadProgress,
        complete: bool = False,
    ) -> bool:
        p = progress
        args = (*_version_args(version), upload_id, token, p.committed_size, p.staging)
        extra = (p.hash_state, _parts(p.parts), complete)
        return bool(await self._conn.fetchval(RECORD_PROGRESS, *args, *extra))

    async def claim(self, *, version: VersionKey, upload_id: str, seconds: float) -> int | None:
        token: int | None = await self._conn.fetchval(
            CLAIM_UPLOAD, *_version_args(version), upload_id, seconds
        )
        return token

    async def renew(
        self, *, version: VersionKey, upload_id: str, token: int, seconds: float
    ) -> bool:
        args = (*_version_args(version), upload_id, token, seconds)
        return bool(await self._conn.fetchval(RENEW_UPLOAD, *args))

    async def release(self, *, version: VersionKey, upload_id: str, token: int) -> None:
        await self._conn.execute(RELEASE_UPLOAD, *_version_args(version), upload_id, token)

    async def live(self, *, version: VersionKey) -> list[str]:
        return [
            r["upload_id"] for r in await self._conn.fetch(LIVE_UPLOADS, *_version_args(version))
        ]

    async def drop_uploads(self, *, version: VersionKey) -> list[UploadSession]:
        found = await self._conn.fetch(DROP_UPLOADS, *_version_args(version))
        return [_session(version, r["upload_id"], r) for r in found]


class UploadReads:
    """The reader's `get_upload`, on its pool."""

    _pool: asyncpg.Pool

    async def get_upload(self, *, version: VersionKey, upload_id: str) -> UploadSession:
        async with translated():
            row = await self._pool.fetchrow(GET_UPLOAD, *_version_args(version), upload_id)
        if row is None:
            raise NotFound(f"{version.name}/uploads/{upload_id}")
        return _session(version, upload_id, row)


class PostgresUploadLeases:
    """The UploadLeases port on the store's primary: each call one statement."""

    _primary: asyncpg.Pool

    async def claim(self, *, version: VersionKey, upload_id: str, seconds: float) -> int | None:
        async with translated():
            token: int | None = await self._primary.fetchval(
                CLAIM_UPLOAD, *_version_args(version), upload_id, seconds
            )
        return token

    async def renew(
        self, *, version: VersionKey, upload_id: str, token: int, seconds: float
    ) -> bool:
        args = (*_version_args(version), upload_id, token, seconds)
        async with translated():
            return bool(await self._primary.fetchval(RENEW_UPLOAD, *args))

    async def release(self, *, version: VersionKey, upload_id: str, token: int) -> None:
        async with translated():
            await self._primary.execute(RELEASE_UPLOAD, *_version_args(version), upload_id, token)

    async def live(self, *, version: VersionKey) -> list[str]:
        async with translated():
            found = await self._primary.fetch(LIVE_UPLOADS, *_version_args(version))
        return [r["upload_id"] for r in found]
