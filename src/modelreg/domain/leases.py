"""The lease a stream holds on an upload while it runs (domain/uploads.py): one stream at
a time per upload, nothing more.

The lease lives in PostgreSQL (`upload_sessions.lease_token/lease_until`). A claim takes
the next token once nobody holds the lease (it was released, or ran out: its process
died or hung); the stream renews it every third of its length. Safety does not rest on
the lease's timing: every write of the upload's progress is guarded on the token
(UploadTransaction.record_progress), so a stream whose token is not the upload's any more
records nothing, publishes nothing, and stops as soon as the database says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from modelreg.domain.errors import FailedPrecondition, RegistryError, Unavailable
from modelreg.domain.ports import Clock, UploadLeases, UploadTransaction
from modelreg.domain.types import UploadSession

log = logging.getLogger(__name__)


class SystemClock:
    """The Clock port on the event loop's monotonic time."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        async with asyncio.timeout(seconds):
            yield


def lease_lost() -> Unavailable:
    """What a stream answers once the database refused it: another stream has the upload."""
    return Unavailable(
        "another stream took this upload over (this one was cut off or stalled past its"
        " lease); ask GetUploadStatus and resume",
        reason="UPLOAD_LEASE_LOST",
    )


class UploadLease:
    """One stream's lease on one upload; `token` fences everything the stream records."""

    def __init__(
        self, leases: UploadLeases, session: UploadSession, seconds: float, clock: Clock
    ) -> None:
        self._leases, self._session, self.seconds, self._clock = leases, session, seconds, clock
        self.token = 0
        self.superseded = False  # the database said another stream has the upload
        self._renewing: asyncio.Task[None] | None = None

    async def claim(self, tx: UploadTransaction) -> None:
        """Take the lease inside `tx`; FAILED_PRECONDITION if another stream holds it."""
        session = self._session
        token = await tx.claim(
            version=session.version, upload_id=session.upload_id, seconds=self.seconds
        )
        if token is None:
            raise FailedPrecondition(
                f"upload {session.upload_id} is already streaming; wait for it or resume later",
                reason="UPLOAD_IN_PROGRESS",
                metadata={"upload_id": session.upload_id},
            )
        self.token = token

    def start_renewing(self) -> None:
        """Renew in the background until `stop_renewing`."""
        self._renewing = asyncio.create_task(self._renew_forever())

    async def stop_renewing(self) -> None:
        """Stop renewing: from now on the lease runs out unless released first."""
        if self._renewing is None:
            return
        self._renewing.cancel()
        (outcome,) = await asyncio.gather(self._renewing, return_exceptions=True)
        if isinstance(outcome, Exception):  # a bug: the lease then ran out on its own
            log.error("renewing the lease of upload %s failed", self._session.upload_id,
                      exc_info=outcome)  # fmt: skip

    async def release(self) -> None:
        """End the lease now, if it is still this stream's."""
        session = self._session
        try:  # if it fails, the lease runs out on its own
            await self._leases.release(
                version=session.version, upload_id=session.upload_id, token=self.token
            )
        except RegistryError as exc:
            log.warning("lease of upload %s not released: %s", session.upload_id, exc)

    async def _renew_forever(self) -> None:
        session = self._session
        while not self.superseded:
            await self._clock.sleep(self.seconds / 3)
            try:
                renewed = await self._leases.renew(
                    version=session.version,
                    upload_id=session.upload_id,
                    token=self.token,
                    seconds=self.seconds,
                )
            except RegistryError as exc:  # PostgreSQL unreachable: try again next time
                log.warning("lease of upload %s not renewed: %s", session.upload_id, exc)
                continue
            self.superseded = not renewed
