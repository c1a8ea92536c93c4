"""What cache entries hold: a kind byte, then the payload.

b"A"                 the model is active (state entries only)
b"V" + bytes         a hit: encoded resource, or a pointer's version number
b"N" + json error    negative entry: NotFound (cached briefly)
b"D" + json error    the model is deleted (FailedPrecondition)
"""

from __future__ import annotations

import json

from modelreg.domain.errors import FailedPrecondition, NotFound, RegistryError

ACTIVE = b"A"
HIT = b"V"
MISSING = b"N"
DELETED = b"D"


def hit(payload: bytes) -> bytes:
    return HIT + payload


def error_entry(exc: RegistryError) -> bytes | None:
    """The entry of an error worth caching (NotFound, deleted model), else None."""
    if isinstance(exc, NotFound):
        return missing(exc)
    if isinstance(exc, FailedPrecondition) and exc.reason == "MODEL_DELETED":
        return DELETED + _body(exc)
    return None


def missing(exc: NotFound) -> bytes:
    """The negative entry of a NotFound."""
    return MISSING + _body(exc)


def _body(exc: RegistryError) -> bytes:
    body = {"r": exc.metadata.get("resource", ""), "why": exc.reason, "m": exc.message}
    return json.dumps(body, separators=(",", ":")).encode()


def error_of(entry: bytes) -> RegistryError:
    """The error a negative or deleted entry stands for."""
    body = json.loads(entry[1:])
    if entry[:1] == DELETED:
        return FailedPrecondition(body["m"], reason=body["why"], metadata={"resource": body["r"]})
    return NotFound(body["r"], reason=body["why"], message=body["m"])


def is_negative(entry: bytes) -> bool:
    return entry[:1] in (MISSING, DELETED)
