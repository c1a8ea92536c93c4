"""The lease a server process holds on an upload while it streams it (domain/uploads.py).

The lease lives in PostgreSQL (`upload_sessions.lease_owner/lease_until`); another
process may claim the upload once `lease_until` has passed. This process renews it
every third of its length and counts it as held only until two thirds of a lease
after the last renewal it *sent*: so it stops writing a good third of a lease before
anyone else may start, whatever happened to the renewals (PostgreSQL unreachable,
a renewal task that died). A renewal succeeds only if nobody else claimed the upload
since (the last owner stays recorded after a release), so a lease once lost is never
taken back. Before it writes what it buffered at the end of a stream, it renews once
more and writes nothing if that fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from modelreg.domain.errors import FailedPrecondition, RegistryError, Unavailable
from modelreg.domain.ports import ArtifactStore, ArtifactTransaction, UploadSession

log = logging.getLogger(__name__)


def lease_lost() -> Unavailable:
    """What a stream answers once its lease is not its own any more."""
    return Unavailable(
        "this server lost the upload's lease (PostgreSQL was unreachable, or another"
        " stream took the upload over); ask GetUploadStatus and resume",
        reason="UPLOAD_LEASE_LOST",
    )


class UploadLease:
    """One stream's claim on one upload, identified by `owner`."""

    def __init__(
        self,
        store: ArtifactStore,
        session: UploadSession,
        owner: str,
        seconds: float,
        claimed_at: float,
    ) -> None:
        """`claimed_at`: time.monotonic() taken before the claim's transaction began."""
        self._store, self._session, self.owner, self.seconds = store, session, owner, seconds
        self._until = claimed_at + seconds * 2 / 3
        self._lost = False
        self._renewing: asyncio.Task[None] | None = None

    def held(self) -> bool:
        """Whether this process may still write the upload's staged bytes."""
        return not self._lost and time.monotonic() < self._until

    async def claim(self, tx: ArtifactTransaction) -> None:
        """Take the lease inside `tx`; FAILED_PRECONDITION if another stream holds it."""
        claimed = await tx.claim_upload(
            version=self._session.version,
            upload_id=self._session.upload_id,
            owner=self.owner,
            seconds=self.seconds,
        )
        if not claimed:
            raise FailedPrecondition(
                f"upload {self._session.upload_id} is already streaming; wait for it or"
                " resume later",
                reason="UPLOAD_IN_PROGRESS",
                metadata={"upload_id": self._session.upload_id},
            )

    def start_renewing(self) -> None:
        """Renew in the background until `stop_renewing`."""
        self._renewing = asyncio.create_task(self._renew_forever())

    async def stop_renewing(self) -> None:
        if self._renewing is None:
            return
        self._renewing.cancel()
        (outcome,) = await asyncio.gather(self._renewing, return_exceptions=True)
        if isinstance(outcome, Exception):  # the lease then ran out on its own: logged
            log.error("renewing the lease of upload %s failed", self._session.upload_id,
                      exc_info=outcome)  # fmt: skip
        self._renewing = None

    async def confirm(self) -> bool:
        """Renew now; True if the lease is still this stream's (checked before the last
        writes of a stream)."""
        if not self.held():
            return False
        await self._renew_once()
        return self.held()

    async def release(self) -> None:
        with suppress(RegistryError):  # it runs out on its own
            async with self._store.transaction() as tx:
                await tx.release_upload(
                    version=self._session.version,
                    upload_id=self._session.upload_id,
                    owner=self.owner,
                )

    async def _renew_forever(self) -> None:
        while self.held():
            await asyncio.sleep(self.seconds / 3)
            await self._renew_once()

    async def _renew_once(self) -> None:
        sent = time.monotonic()
        try:  # a failure the store does not translate is a lapse too, and is logged
            async with self._store.transaction() as tx:
                claimed = await tx.renew_upload(
                    version=self._session.version,
                    upload_id=self._session.upload_id,
                    owner=self.owner,
                    seconds=self.seconds,
                )
                file = self._session.file  # in use: not an orphan while it streams
                await tx.reserve_blob(
                    model=self._session.version.model, sha256=file.sha256, size=file.size
                )
        except RegistryError as exc:
            log.warning("lease of upload %s not renewed: %s", self._session.upload_id, exc)
            return
        if claimed:
            self._until = sent + self.seconds * 2 / 3
        else:
            self._lost = True  # another stream claimed it, or the upload was dropped
