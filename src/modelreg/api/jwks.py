"""The issuer's signing keys (a JWKS), fetched from a URL or read from a file, kept in
memory and refreshed: periodically, and when a token names a key id the set lacks (the
issuer rotated its keys), but never more often than once per `min_refresh_seconds`, so a
flood of tokens with made-up key ids cannot hammer the JWKS endpoint.

Fetching never blocks the event loop: the URL is fetched with aiohttp, the file read in
a thread; PyJWT parses each key (PyJWK) and verifies tokens with it (api/oidc.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt

from modelreg.domain.ports import Clock

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024  # a key set is a few KiB; refuse a runaway answer


class JwksUnavailable(Exception):
    """The key set could not be fetched or parsed (the message says why, safely)."""


class JwksSource(Protocol):
    """Where the key set comes from."""

    where: str  # for messages and logs: the URL or the file

    async def fetch(self) -> bytes:
        """The JWKS document; raise JwksUnavailable if it cannot be had."""
        ...


class HttpJwksSource:
    """A JWKS URL (the issuer's `jwks_uri`, or a Kubernetes API server's /openid/v1/jwks)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0) -> None:
        self._session, self.where = session, url
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(self) -> bytes:
        try:
            # no redirects: one to http:// would let whoever is on the way replace the keys
            get = self._session.get(self.where, timeout=self._timeout, allow_redirects=False)
            async with get as reply:
                if reply.status != 200:
                    raise JwksUnavailable(f"{self.where} answered HTTP {reply.status}")
                body = bytearray()
                async for chunk in reply.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        break
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise JwksUnavailable(
                f"cannot fetch {self.where}: {exc or type(exc).__name__}"
            ) from exc
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable(f"{self.where} answered more than {MAX_JWKS_BYTES} bytes")
        return bytes(body)


class FileJwksSource:
    """A JWKS file (say a ConfigMap holding a cluster's keys), re-read like a URL is
    fetched, so a rotated file is picked up without a restart."""

    def __init__(self, path: Path) -> None:
        self._path, self.where = path, str(path)

    async def fetch(self) -> bytes:
        try:
            return await asyncio.to_thread(self._path.read_bytes)
        except OSError as exc:
            raise JwksUnavailable(f"cannot read {self.where}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One verification key of the set."""

    kid: str
    key: Any  # a cryptography public key object
    alg: str | None  # the JWK's `alg`, when it pins one


class UnknownKey(Exception):
    """No key of the set has the token's key id (after a refresh, if one was allowed)."""


def parse_jwks(document: bytes, where: str) -> dict[str, SigningKey]:
    """The signature keys of a JWKS by key id; keys for encryption, symmetric keys and
    keys PyJWT cannot read are skipped (one odd key does not spoil the set)."""
    try:
        data = json.loads(document)
        entries = data["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise JwksUnavailable(f"{where} is not a JWKS document (a JSON object with keys)") from exc
    keys: dict[str, SigningKey] = {}
    for entry in entries:
        found = _signing_key(entry)
        if found is not None:
            keys[found.kid] = found
    if not keys:
        raise JwksUnavailable(f"{where} holds no usable signature key")
    return keys


def _signing_key(entry: Any) -> SigningKey | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    if entry.get("kty") == "oct":  # a shared secret has no place in a public key set
        return None
    try:
        parsed = jwt.PyJWK(entry)
    except jwt.PyJWTError:
        log.warning("skipping a JWKS key PyJWT cannot read (kid %r)", entry.get("kid"))
        return None
    key = parsed.key
    if hasattr(key, "private_bytes"):  # a private JWK published by mistake: use its public half
        key = key.public_key()
    alg = entry.get("alg")
    return SigningKey(str(entry.get("kid", "")), key, alg if isinstance(alg, str) else None)


class JwksKeys:
    """The key set in memory, refreshed as the module docstring says."""

    def __init__(
        self,
        source: JwksSource,
        *,
        clock: Clock,
        refresh_seconds: float,
        min_refresh_seconds: float,
    ) -> None:
        self._source, self._clock = source, clock
        self._refresh_seconds, self._min_refresh = refresh_seconds, min_refresh_seconds
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last fetch tried, successful or not
        self._failure = ""  # why the last fetch failed ("" if it did not)
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.fetches = 0  # fetches tried (what the rate limit bounds)

    @property
    def where(self) -> str:
        return self._source.where

    @property
    def holds_any(self) -> bool:
        """Whether any key is held (none: every fetch so far failed)."""
        return bool(self._keys)

    @property
    def failure(self) -> str:
        """Why the last fetch failed ("" if it did not)."""
        return self._failure

    def holds(self, kid: str) -> bool:
        """Whether the current set has the key `kid` (a cached token's key still counts)."""
        return kid in self._keys

    async def refresh(self) -> None:
        """Fetch the set now (start-up); a failure keeps the keys held and is logged."""
        async with self._lock:
            await self._fetch()

    async def key(self, kid: str) -> SigningKey:
        """The key `kid` (for a token without one: the set's only key); raise UnknownKey,
        or JwksUnavailable if the set cannot be had and holds no such key."""
        found = self._lookup(kid)
        if found is not None:
            self.refresh_if_stale()
            return found
        await self._refresh_if_allowed()
        found = self._lookup(kid)
        if found is not None:
            return found
        if self._failure:
            raise JwksUnavailable(self._failure)
        raise UnknownKey(kid)

    def refresh_if_stale(self) -> None:
        """Start fetching the set in the background if it is older than the refresh
        period (calls go on with the keys held meanwhile)."""
        if self._clock.now() - self._fetched_at >= self._refresh_seconds:
            self._refresh_in_background()

    async def settled(self) -> None:
        """Wait for a background refresh in flight (tests, shutdown)."""
        if self._background is not None:
            await asyncio.gather(self._background, return_exceptions=True)

    async def close(self) -> None:
        """Stop a background refresh still running."""
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    def _lookup(self, kid: str) -> SigningKey | None:
        if not kid and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if kid else None

    async def _refresh_if_allowed(self) -> None:
        """Fetch unless one was tried within the least interval; callers that queue
        behind a fetch in flight find it just tried, and fetch nothing more."""
        async with self._lock:
            if self._clock.now() - self._attempted_at >= self._min_refresh:
                await self._fetch()

    def _refresh_in_background(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._refresh_if_allowed(), name="jwks-refresh")

    async def _fetch(self) -> None:
        self._attempted_at = self._clock.now()
        self.fetches += 1
        try:
            keys = parse_jwks(await self._source.fetch(), self.where)
        except JwksUnavailable as exc:
            self._failure = f"the issuer's keys are unavailable: {exc}"
            log.warning("oidc: %s; keeping the %d keys held", exc, len(self._keys))
            return
        if set(keys) != set(self._keys):
            log.info("oidc: %d signing keys from %s (%s)", len(keys), self.where, ", ".join(keys))
        self._keys, self._failure = keys, ""
        self._fetched_at = self._attempted_at
