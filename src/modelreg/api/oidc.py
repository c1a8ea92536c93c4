"""OIDC / JWT bearer tokens: `authorization: Bearer <JWT>` -> a Principal.

A token is verified by PyJWT against the configured issuer (`iss`), audience (`aud`) and
the issuer's key set (api/jwks.py), with an explicit list of asymmetric algorithms (never
`none`, never an HMAC keyed with a public key); `exp`, `iss` and `aud` are required,
`nbf` and `iat` honoured, with a small leeway for clock skew. The principal is a claim
(`sub` by default) and the groups another (`groups`), both prefixed (`oidc:`), so an IdP
user named `admin` is never the local `admin`. Kubernetes service-account tokens are
such JWTs: their issuer is the cluster's, their keys at the API server's /openid/v1/jwks.

Verified tokens are cached (by digest, never the token itself) until their `exp`, as long
as their key is still in the set, so the hot path does not verify a signature per call.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from modelreg.api.identity import Context
from modelreg.api.jwks import JwksKeys, JwksUnavailable, SigningKey, UnknownKey
from modelreg.domain.errors import Unauthenticated, Unavailable
from modelreg.domain.principals import Principal, Proof

API_KEY_PREFIX = "mrk_"  # API keys (api/identity's) are bearers too; they are not ours
MAX_TOKEN_BYTES = 16 * 1024
ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
_REQUIRED = ["exp", "iss", "aud"]


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token must say, and how its claims become a Principal."""

    issuer: str
    audience: str
    principal_claim: str = "sub"
    groups_claim: str = "groups"
    prefix: str = "oidc:"
    leeway_seconds: float = 30.0
    cache_entries: int = 10_000


def refused(reason: str, message: str) -> Unauthenticated:
    """The UNAUTHENTICATED a bad token gets: its reason, and a message that never
    repeats the token."""
    return Unauthenticated(f"bearer token refused: {message}", reason=reason)


class JwtCredentials:
    """The Credentials port for JWT bearer tokens (any bearer that is not an API key)."""

    def __init__(self, *, rules: TokenRules, keys: JwksKeys) -> None:
        self._rules, self._keys = rules, keys
        self._cache: dict[bytes, tuple[Principal, float, str]] = {}

    async def principal(self, context: Context) -> Principal | None:
        token = bearer_token(context)
        if token is None or token.startswith(API_KEY_PREFIX):
            return None
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            principal, expires, kid = cached
            if time.time() < expires and self._keys.holds(kid):
                self._keys.refresh_if_stale()  # a removed key must stop working
                return principal
            del self._cache[digest]
        principal, expires, kid = await self._verify(token)
        self._remember(digest, (principal, expires, kid))
        return principal

    async def close(self) -> None:
        await self._keys.close()

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
        if len(token) > MAX_TOKEN_BYTES:
            raise refused("MALFORMED_TOKEN", f"longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise refused("MALFORMED_TOKEN", "not a JWT (header.payload.signature)") from None
        alg, kid = header.get("alg"), header.get("kid", "")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise refused(
                "ALGORITHM_NOT_ALLOWED",
                f"algorithm {str(alg)[:16]!r} is not allowed (allowed: {', '.join(ALGORITHMS)})",
            )
        if not isinstance(kid, str):
            raise refused("MALFORMED_TOKEN", "its key id (kid) is not a string")
        key = await self._key(kid)
        _check_key_fits(key, alg)
        claims = self._claims(token, key, alg)
        return self._principal_of(claims), float(claims["exp"]), key.kid

    async def _key(self, kid: str) -> SigningKey:
        try:
            return await self._keys.key(kid)
        except UnknownKey:
            raise refused(
                "UNKNOWN_KEY",
                f"signed with a key the issuer does not publish (kid {kid[:64]!r},"
                f" keys from {self._keys.where})",
            ) from None
        except JwksUnavailable as exc:
            raise Unavailable(str(exc), reason="JWKS_UNAVAILABLE") from None

    def _claims(self, token: str, key: SigningKey, alg: str) -> dict[str, Any]:
        rules = self._rules
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=rules.audience,
                issuer=rules.issuer,
                leeway=rules.leeway_seconds,
                options={"require": _REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise _refusal(exc, rules) from None
        return claims

    def _principal_of(self, claims: dict[str, Any]) -> Principal:
        rules = self._rules
        name = claims.get(rules.principal_claim)
        if not isinstance(name, str) or not _usable(rules.prefix + name):
            raise refused(
                "MALFORMED_TOKEN",
                f"claim {rules.principal_claim!r} must be a name of printable ASCII, no space",
            )
        groups = claims.get(rules.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(
            isinstance(g, str) and _usable(rules.prefix + g) for g in groups
        ):
            raise refused(
                "MALFORMED_TOKEN", f"claim {rules.groups_claim!r} must be a list of group names"
            )
        return Principal(
            rules.prefix + name, Proof.JWT, frozenset(rules.prefix + g for g in groups)
        )

    def _remember(self, digest: bytes, entry: tuple[Principal, float, str]) -> None:
        limit = self._rules.cache_entries
        if limit <= 0:
            return
        if len(self._cache) >= limit:
            now = time.time()
            for stale in [d for d, (_, expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= limit:  # still full: drop the oldest
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = entry


def bearer_token(context: Context) -> str | None:
    """The token of the call's `authorization: Bearer ...` metadata, or None."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _usable(name: str) -> bool:
    return 0 < len(name) <= 256 and all("!" <= c <= "~" for c in name)


def _check_key_fits(key: SigningKey, alg: str) -> None:
    """The token's algorithm must be one its key is for: the JWK's `alg` if it pins one,
    else the key's type (and, for ECDSA, its curve)."""
    public = key.key
    if alg.startswith(("RS", "PS")):
        fits = isinstance(public, rsa.RSAPublicKey)
    elif alg in _CURVES:
        fits = isinstance(public, ec.EllipticCurvePublicKey) and isinstance(
            public.curve, _CURVES[alg]
        )
    else:
        fits = isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    if not fits or (key.alg is not None and key.alg != alg):
        raise refused(
            "ALGORITHM_NOT_ALLOWED",
            f"algorithm {alg} does not match its key (kid {key.kid[:64]!r})",
        )


_REASONS: Sequence[tuple[type[jwt.PyJWTError], str, str]] = (
    (jwt.ExpiredSignatureError, "TOKEN_EXPIRED", "expired (exp is past)"),
    (jwt.ImmatureSignatureError, "TOKEN_NOT_YET_VALID", "not valid yet (nbf or iat is ahead)"),
    (jwt.InvalidIssuerError, "WRONG_ISSUER", "issued by another issuer (iss)"),
    (jwt.InvalidAudienceError, "WRONG_AUDIENCE", "meant for another audience (aud)"),
    (jwt.InvalidSignatureError, "BAD_SIGNATURE", "its signature does not verify"),
    (jwt.InvalidAlgorithmError, "ALGORITHM_NOT_ALLOWED", "its algorithm is not allowed"),
    (jwt.MissingRequiredClaimError, "MALFORMED_TOKEN", ""),
)


def _refusal(exc: jwt.PyJWTError, rules: TokenRules) -> Unauthenticated:
    for kind, reason, said in _REASONS:
        if isinstance(exc, kind):
            message = said
            if isinstance(exc, jwt.MissingRequiredClaimError):
                message = f"it lacks the required claim {exc.claim!r}"
            elif reason == "WRONG_ISSUER":
                message += f"; expected {rules.issuer}"
            elif reason == "WRONG_AUDIENCE":
                message += f"; expected {rules.audience}"
            return refused(reason, message)
    return refused("MALFORMED_TOKEN", "its header or claims cannot be read")
