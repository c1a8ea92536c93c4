"""Idempotent creates: the first call with a request_id decides the result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.ports import Idempotency
from modelreg.domain.rules import check_request_id


def fingerprint(method: str, payload: Any) -> str:
    """A digest of what a request asked for, to spot a request_id reused for another request."""
    text = json.dumps([method, payload], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


async def replayed(tx: Idempotency, *, request_id: str, method: str, payload: Any) -> str | None:
    """Claim `request_id` in `tx`; return the first result's resource name if it was used before.

    A concurrent call with the same id waits on the claim's row until the first
    commits, so exactly one of them does the work.
    """
    if not check_request_id(request_id):
        return None
    digest = fingerprint(method, payload)
    previous = await tx.claim_request(request_id=request_id, method=method, fingerprint=digest)
    if previous is None:
        return None
    if (previous.method, previous.fingerprint) != (method, digest):
        raise InvalidArgument.field("request_id", "was already used for a different request")
    return previous.resource
