"""Who is calling: the one `Principal` of each call, and the `Gate` that admits calls.

The error interceptor (api/interceptors.py) asks its `Gate` to admit every call before
its handler runs, and keeps the `Principal` it answers for the call's duration; servicers
read it with `caller()` (or `actor_of`, the name events record). A gate refuses by
raising `Unauthenticated` or `PermissionDenied`, so a refused call never reaches a
handler and changes nothing.
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

import grpc

from modelreg.domain.principals import Principal, Proof
from modelreg.domain.rules import check_length

ACTOR_HEADER = "x-modelreg-actor"  # the self-declared name, honoured only without auth
ANONYMOUS = "anonymous"

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("modelreg_caller")

Context = grpc.aio.ServicerContext[Any, Any]


class Gate(Protocol):
    """Admits a call: who is calling (authentication) and whether it may (authorization)."""

    async def admit(self, method: str, request: Any, context: Context) -> Principal:
        """The caller of `method` with `request` (for a client stream: the request
        iterator), or raise Unauthenticated / PermissionDenied."""
        ...


class Credentials(Protocol):
    """One kind of credential (API keys, JWT bearer tokens, client certificates)."""

    async def principal(self, context: Context) -> Principal | None:
        """The caller the call's credential of this kind proves; None if the call carries
        none of this kind; raise Unauthenticated if it carries a bad one (expired,
        revoked, badly signed...)."""
        ...


class Authenticator(Protocol):
    """Credentials -> Principal, whatever kind the call carries."""

    async def authenticate(self, context: Context) -> Principal:
        """The proven caller, or raise Unauthenticated (saying how to get a key)."""
        ...


class OpenGate:
    """No authentication: every call is admitted, as the actor it declares in the
    `x-modelreg-actor` header (anonymous if none)."""

    async def admit(self, method: str, request: Any, context: Context) -> Principal:
        return declared_principal(context)


def declared_principal(context: Context) -> Principal:
    """The caller's self-declared name, unproven."""
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_HEADER and isinstance(value, str) and value:
            return Principal(check_length(value, ACTOR_HEADER, 256), Proof.NONE)
    return Principal(ANONYMOUS, Proof.NONE)


def admitted(principal: Principal) -> contextvars.Token[Principal]:
    """Make `principal` the caller of the running call (the interceptor does this)."""
    return _CALLER.set(principal)


def dismissed(token: contextvars.Token[Principal]) -> None:
    """End what `admitted` began."""
    _CALLER.reset(token)


def caller() -> Principal:
    """The caller of the running call."""
    return _CALLER.get()


def actor_of(context: Context) -> str:
    """The name events record for the running call's caller."""
    principal = _CALLER.get(None)
    return principal.name if principal is not None else declared_principal(context).name
