"""Authentication: the call's credentials -> its `Principal` (MODELREG_AUTH=on).

`CredentialChain` is the Authenticator: it asks each `Credentials` source in order
(API keys, then JWT bearer tokens and client certificates when configured); the first
that recognises the call's credential decides, and a bad credential of a kind a source
knows is refused by that source with its own reason. The gate that uses it, and lets
health and reflection through, is api/authorization.py's `AuthorizingGate`.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelreg.api.identity import Context, Credentials
from modelreg.domain.errors import Unauthenticated
from modelreg.domain.identity import GET_A_KEY, KEY_PREFIX, ApiKeys
from modelreg.domain.principals import Principal

AUTHORIZATION = "authorization"
BEARER = "bearer "


def bearer_token(context: Context) -> str | None:
    """The token of the call's `authorization: Bearer <token>` header, if it has one."""
    for key, value in context.invocation_metadata() or ():
        if key == AUTHORIZATION and isinstance(value, str):
            if value[: len(BEARER)].lower() == BEARER:
                return value[len(BEARER) :].strip()
            raise Unauthenticated(
                "the authorization header must be `Bearer <key>`", reason="CREDENTIALS_MALFORMED"
            )
    return None


class ApiKeyCredentials:
    """The Credentials source of API keys: `authorization: Bearer mrk_...`."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def principal(self, context: Context) -> Principal | None:
        token = bearer_token(context)
        if token is None or not token.startswith(KEY_PREFIX):
            return None  # not an API key: another source's, or no credential at all
        return await self._keys.verify(token)


class CredentialChain:
    """The Authenticator over `sources`, asked in order; `key_file` is where this server
    wrote the first admin's key (named in the refusal of a call without credentials)."""

    def __init__(self, sources: Sequence[Credentials], *, key_file: str) -> None:
        self._sources = tuple(sources)
        self._how = (
            "send `authorization: Bearer <key>`; set MODELREG_TOKEN"
            f" ({GET_A_KEY}), the local admin key is at {key_file}"
        )

    async def authenticate(self, context: Context) -> Principal:
        for source in self._sources:
            principal = await source.principal(context)
            if principal is not None:
                return principal
        if bearer_token(context) is not None:
            raise Unauthenticated(
                f"unrecognised bearer token: API keys start with {KEY_PREFIX} (no other kind"
                f" of token is configured here); {self._how}",
                reason="CREDENTIALS_UNRECOGNIZED",
            )
        raise Unauthenticated(f"no credentials: {self._how}", reason="NO_CREDENTIALS")
