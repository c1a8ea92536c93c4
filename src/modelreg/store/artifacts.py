"""Postgres side of artifacts: version files and blob records (uploads: store/uploads.py).

Two mixins: `ArtifactWrites` gives PostgresTransaction the ArtifactTransaction
methods of files and blobs, `ArtifactReads` gives PostgresReader the ArtifactReader ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from modelreg.domain.artifacts import file_name
from modelreg.domain.errors import AlreadyExists, NotFound
from modelreg.domain.names import ModelKey, VersionKey
from modelreg.domain.types import VersionFile, VersionState
from modelreg.store.errors import translated
from modelreg.store.rows import Row

_MODEL = "(SELECT model_id FROM models WHERE ns = $1 AND name = $2)"
_VERSION = f"model_id = {_MODEL} AND number = $3"
FILES = f"SELECT path, size, sha256 FROM version_files WHERE {_VERSION} ORDER BY path"
FIND_FILE = f"SELECT path, size, sha256 FROM version_files WHERE {_VERSION} AND path = $4"
COUNT_FILES = f"SELECT count(*) FROM version_files WHERE {_VERSION}"
ADD_FILE = f"""
INSERT INTO version_files (model_id, number, path, size, sha256)
VALUES ({_MODEL}, $3, $4, $5, $6)
ON CONFLICT (model_id, number, path) DO NOTHING RETURNING true
"""
RESERVE_BLOB = f"""
INSERT INTO blobs (model_id, sha256, size) VALUES ({_MODEL}, $3, $4)
ON CONFLICT (model_id, sha256) DO UPDATE SET last_used = now()
"""
# A blob is live while a version that is not FAILED holds it, or while a stream is
# uploading it (between publishing the bytes and linking them, it is in neither).
_LIVE = f"""(EXISTS (
    SELECT 1 FROM version_files f
    JOIN model_versions v ON v.model_id = f.model_id AND v.number = f.number
    WHERE f.sha256 = {{blob}} AND v.state <> {VersionState.FAILED.value})
  OR EXISTS (
    SELECT 1 FROM upload_sessions u
    WHERE u.sha256 = {{blob}} AND u.lease_until > now()))"""
FORGET_BLOB = f"""
DELETE FROM blobs b WHERE b.sha256 = $1
  AND NOT EXISTS (SELECT 1 FROM blobs u WHERE u.sha256 = $1
                  AND u.last_used >= now() - make_interval(secs => $2))
  AND NOT {_LIVE.format(blob="$1")}
RETURNING 1
"""
ORPHANED_BLOBS = f"""
SELECT b.sha256 FROM blobs b GROUP BY b.sha256
HAVING max(b.last_used) < now() - make_interval(secs => $1)
   AND NOT {_LIVE.format(blob="b.sha256")}
ORDER BY b.sha256 LIMIT $2
"""
# Per-digest locks between collection (exclusive) and uploads linking a blob (shared);
# the two-int form keeps them apart from the single-bigint key of the migration lock.
_BLOB_LOCK_CLASS = 5
LOCK_BLOB = f"SELECT pg_advisory_xact_lock({_BLOB_LOCK_CLASS}, hashtext($1))"
LOCK_BLOB_SHARED = f"SELECT pg_advisory_xact_lock_shared({_BLOB_LOCK_CLASS}, hashtext($1))"
KNOWN_BLOBS = "SELECT DISTINCT sha256 FROM blobs WHERE sha256 = ANY($1::text[])"


def _version_args(key: VersionKey) -> tuple[str, str, int]:
    return key.model.namespace, key.model.model, key.number


def _file(row: Row) -> VersionFile:
    return VersionFile(row["path"], row["size"], row["sha256"])


class ArtifactWrites:
    """ArtifactTransaction methods, on the transaction's connection."""

    _conn: asyncpg.Connection

    async def version_files(self, *, version: VersionKey) -> list[VersionFile]:
        return [_file(r) for r in await self._conn.fetch(FILES, *_version_args(version))]

    async def find_file(self, *, version: VersionKey, path: str) -> VersionFile | None:
        row = await self._conn.fetchrow(FIND_FILE, *_version_args(version), path)
        return None if row is None else _file(row)

    async def count_files(self, *, version: VersionKey) -> int:
        count: int = await self._conn.fetchval(COUNT_FILES, *_version_args(version))
        return count

    async def add_file(self, *, version: VersionKey, file: VersionFile) -> None:
        args = (*_version_args(version), file.path, file.size, file.sha256)
        if await self._conn.fetchval(ADD_FILE, *args):
            return
        if await self.find_file(version=version, path=file.path) != file:
            raise AlreadyExists(file_name(version, file.path))  # a concurrent upload won

    async def reserve_blob(self, *, model: ModelKey, sha256: str, size: int) -> None:
        await self._conn.execute(RESERVE_BLOB, model.namespace, model.model, sha256, size)

    async def forget_blob(self, *, sha256: str, grace_seconds: float) -> bool:
        await self._conn.execute(LOCK_BLOB, sha256)
        return bool(await self._conn.fetch(FORGET_BLOB, sha256, grace_seconds))

    async def lock_blob(self, *, sha256: str) -> None:
        await self._conn.execute(LOCK_BLOB_SHARED, sha256)


class ArtifactReads:
    """ArtifactReader methods, on the reader's pool."""

    _pool: asyncpg.Pool

    async def get_file(self, *, version: VersionKey, path: str) -> VersionFile:
        async with translated():
            row = await self._pool.fetchrow(FIND_FILE, *_version_args(version), path)
        if row is None:
            raise NotFound(file_name(version, path))
        return _file(row)

    async def list_files(self, *, version: VersionKey) -> list[VersionFile]:
        async with translated():
            found = await self._pool.fetch(FILES, *_version_args(version))
        return [_file(r) for r in found]

    async def known_blobs(self, *, digests: Sequence[str]) -> set[str]:
        async with translated():
            found = await self._pool.fetch(KNOWN_BLOBS, list(digests))
        return {r["sha256"] for r in found}

    async def orphaned_blobs(self, *, grace_seconds: float, limit: int) -> list[str]:
        async with translated():
            found = await self._pool.fetch(ORPHANED_BLOBS, grace_seconds, limit)
        return [r["sha256"] for r in found]
