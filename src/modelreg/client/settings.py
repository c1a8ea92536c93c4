"""What both clients share: who the caller is (its API key, sent as
`authorization: Bearer`), the default timeout, and the retry budget
of one call (only UNAVAILABLE is retried, only for idempotent calls, with jittered backoff;
and a state the call says passes on its own, such as an upload still winding down, is
waited out until the deadline); and the consistency token, the highest revision seen."""

from __future__ import annotations

import getpass
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import platformdirs
from google.protobuf.message import Message

from modelreg.client.calls import Call
from modelreg.client.tracing import Metadata, with_trace_context

ACTOR_HEADER = "x-modelreg-actor"  # the name a server without authentication records
AUTHORIZATION = "authorization"
KEY_FILE = "admin.key"  # what the first start of a fresh home writes there
FIRST_BACKOFF = 0.1  # seconds before the first retry; doubles each time
MAX_BACKOFF = 2.0


def default_actor() -> str:
    """MODELREG_ACTOR, else the login name, else "unknown"."""
    try:
        return os.environ.get("MODELREG_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no login name in this container
        return "unknown"


def default_token() -> str | None:
    """MODELREG_TOKEN, else the key the local server's first start wrote to
    `<MODELREG_HOME>/admin.key` if this user can read it, else None."""
    given = os.environ.get("MODELREG_TOKEN")
    if given:
        return given.strip()
    home = os.environ.get("MODELREG_HOME") or platformdirs.user_data_path("modelreg")
    try:
        return (Path(home) / KEY_FILE).read_text().strip() or None
    except OSError:  # no such file, or not ours to read
        return None


class Attempts:
    """The deadline and retry budget of one call."""

    def __init__(self, timeout: float, retries: int, waits_for: tuple[str, ...] = ()) -> None:
        self._deadline = time.monotonic() + timeout
        self._retries_left = retries
        self._waits_for = waits_for
        self._backoff = FIRST_BACKOFF

    def remaining(self) -> float:
        """Seconds left for the next attempt."""
        return max(self._deadline - time.monotonic(), 0.0)

    def next_delay(self, code: grpc.StatusCode, reason: str = "") -> float | None:
        """Seconds to wait before retrying after `code` (and its `reason`), or None to
        give up."""
        waiting = code is grpc.StatusCode.FAILED_PRECONDITION and reason in self._waits_for
        retrying = code is grpc.StatusCode.UNAVAILABLE and self._retries_left > 0
        if not (waiting or retrying):
            return None
        delay = self._backoff * (0.5 + random.random() / 2)  # jitter spreads out the herd
        if delay >= self.remaining():
            return None
        self._retries_left -= retrying
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        return delay


class Tokens:
    """Read-your-writes: the highest revision any mutation answered, sent as the
    `min_revision` of every lookup, so a lookup on any server process or replica
    reflects every write this client saw acknowledged. Safe across threads and tasks."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._revision = 0
        self._lock = threading.Lock()

    @property
    def revision(self) -> int:
        """The highest revision seen (0: none yet)."""
        return self._revision

    def saw(self, revision: int) -> None:
        """A reply carried `revision`; the token only moves forward."""
        with self._lock:
            self._revision = max(self._revision, revision)

    def stamp(self, request: Message) -> None:
        """Ask a lookup for at least the revision seen: a caller's own token below it
        would give up this client's read-your-writes, so the higher of the two is sent."""
        if not self.enabled or self._revision == 0:
            return
        if _has(request, "min_revision"):
            own = request.min_revision  # type: ignore[attr-defined]
            request.min_revision = max(own, self._revision)  # type: ignore[attr-defined]

    def read(self, reply: Any) -> None:
        """Remember the revision of a mutation's reply."""
        if isinstance(reply, Message) and _has(reply, "revision"):
            self.saw(reply.revision)  # type: ignore[attr-defined]


def _has(message: Message, field: str) -> bool:
    return field in message.DESCRIPTOR.fields_by_name


class Settings:
    """Actor metadata, default timeout and retry budget, and the consistency token, as
    both clients hold them."""

    def __init__(
        self,
        *,
        actor: str | None,
        token: str | None = None,
        timeout: float,
        retries: int,
        read_your_writes: bool = True,
        tokens: Tokens | None = None,
    ) -> None:
        self._actor = actor or default_actor()
        self._token = token or default_token()
        # The actor header is only the name a server without authentication records.
        self._static_metadata: Metadata = ((ACTOR_HEADER, self._actor),)
        if self._token:
            self._static_metadata = ((AUTHORIZATION, f"Bearer {self._token}"),
                                     *self._static_metadata)  # fmt: skip
        self._timeout = timeout
        self._retries = retries
        self._tokens = tokens or Tokens(enabled=read_your_writes)

    @property
    def _metadata(self) -> Metadata:
        """What every call sends: the key, the actor, and the caller's trace context."""
        return with_trace_context(self._static_metadata)

    @property
    def revision(self) -> int:
        """The highest revision this client has seen a mutation commit at: what its
        lookups send as `min_revision` (unless made with `read_your_writes=False`)."""
        return self._tokens.revision

    def saw_revision(self, revision: int) -> None:
        """Read at least `revision` from now on (a token from another client or process)."""
        self._tokens.saw(revision)

    def _attempts(self, call: Call[Any]) -> Attempts:
        timeout = self._timeout if call.timeout is None else call.timeout
        return Attempts(timeout, self._retries if call.idempotent else 0, call.waits_for)
