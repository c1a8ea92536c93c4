"""The authorizing Gate: authenticate the caller, look the method up in the permission
table (api/permissions.py), decide from the in-memory grants (domain/grants.py).

Deny by default: a method without a row is refused, and so is every call no binding
allows. A refused mutation by an authenticated caller is recorded through the DenialLog.
On the hot path (an L1 hit) the gate costs a dict lookup, the request field's parse and
two dict reads of the caller's memoized grants: no database, no await beyond the
authenticator's own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from modelreg.api.identity import ANONYMOUS, Authenticator, Context
from modelreg.api.permissions import RULES, Rule, Where
from modelreg.domain.access import Decision, Permission
from modelreg.domain.errors import InvalidArgument, PermissionDenied
from modelreg.domain.grants import GrantCache
from modelreg.domain.principals import Denial, DenialLog, Principal, Proof

log = logging.getLogger(__name__)
_NOBODY = Principal(ANONYMOUS, Proof.NONE)


class LoggingDenialLog:
    """A DenialLog that writes each refusal to the server log (until the audit store's
    adapter is wired; it never raises)."""

    async def record(self, denial: Denial) -> None:
        log.warning(
            "denied: %s %s on %r lacks %s",
            denial.actor,
            denial.method,
            denial.resource,
            denial.permission,
        )


class AuthorizingGate:
    """The Gate port with authentication and authorization on."""

    def __init__(
        self,
        authenticator: Authenticator,
        grants: GrantCache,
        *,
        denials: DenialLog | None = None,
        wait_seconds: float = 1.0,
        rules: Mapping[str, Rule] = RULES,
    ) -> None:
        self._authenticator = authenticator
        self._grants = grants
        self._denials = denials or LoggingDenialLog()
        self._wait = wait_seconds
        self._rules = rules

    async def admit(self, method: str, request: Any, context: Context) -> Principal:
        rule = self._rules.get(method)
        if rule is not None and rule.permission is None:
            return _NOBODY  # health and reflection are open
        principal = await self._authenticator.authenticate(context)
        if rule is None:  # deny by default: a method the table does not know
            raise PermissionDenied(
                f"{method} has no entry in the permission table",
                reason="NO_PERMISSION_RULE",
                metadata={"method": method},
            )
        if not isinstance(request, Message):  # a client stream: its first message names it
            request = await _first(request)
        token = request.min_revision if _takes_token(request.DESCRIPTOR) else 0
        if token < 0:  # what the handler would say, said before anything waits on it
            raise InvalidArgument.field("min_revision", "must not be negative")
        if token > 0 and token > self._grants.revision:  # decide with it applied
            await self._grants.reached(token, wait_seconds=self._wait)
        if rule.scope is Where.PER_ITEM:
            return principal  # the servicer decides each item (on grants at the token)
        namespace = rule.namespace(request)
        assert rule.permission is not None
        if rule.scope is Where.ANYWHERE:
            decision = self._grants.bindings.decide_anywhere(principal, rule.permission)
        else:
            decision = self._grants.decide(principal, rule.permission, namespace)
        if decision.allowed:
            return principal
        if rule.mutates:
            await self._denials.record(_denial(method, request, decision))
        raise denied(decision)


def denied(decision: Decision) -> PermissionDenied:
    """The refusal of a call: the missing permission and the binding to ask for."""
    return PermissionDenied(
        decision.reason,
        reason="PERMISSION_DENIED",
        metadata={
            "permission": decision.permission.value,
            "namespace": decision.namespace,
            "principal": decision.principal,
        },
    )


def may(grants: GrantCache, principal: Principal, permission: Permission, namespace: str) -> None:
    """Raise the refusal unless `principal` may (for the servicers' per-item checks)."""
    decision = grants.decide(principal, permission, namespace)
    if not decision.allowed:
        raise denied(decision)


@functools.cache
def _takes_token(request_type: Descriptor) -> bool:
    """Whether requests of this type carry `min_revision` (one look per type: a missing
    attribute of a message costs an exception each time)."""
    return "min_revision" in request_type.fields_by_name


async def _first(requests: Any) -> Any:
    try:
        return await requests.peek()
    except StopAsyncIteration:
        raise InvalidArgument.field("header", "the stream carried no message") from None


def _denial(method: str, request: Any, decision: Decision) -> Denial:
    resource = ""
    for field in ("name", "parent", "reference"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            resource = value
            break
    if not resource and decision.namespace:
        resource = f"namespaces/{decision.namespace}"
    return Denial(
        actor=decision.principal,
        method=method,
        resource=resource[:1024],
        permission=decision.permission.value,
        reason=decision.reason,
    )
