"""Who is calling: the actor recorded in events."""

from __future__ import annotations

from typing import Any

import grpc

from modelreg.domain.rules import check_length

ACTOR_HEADER = "x-modelreg-actor"
ANONYMOUS = "anonymous"


def actor_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's self-declared name, until authentication lands."""
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_HEADER and isinstance(value, str) and value:
            return check_length(value, ACTOR_HEADER, 256)
    return ANONYMOUS
