"""API keys: principals' credentials, created by an admin, shown once, stored as a hash,
revocable, optionally expiring; several live keys per principal, so rotation has no gap
(docs/architecture.md, "Authentication").

A key is `mrk_{key_id}_{secret}`: `key_id` (12 hex digits) is public and finds the
stored record; `secret` (32 random bytes, urlsafe base64) is kept only as
HMAC-SHA256(deployment key, secret). Keys are high-entropy random strings, not
passwords: nobody can guess 256 bits, so a slow KDF (bcrypt, scrypt, argon2) would buy
nothing against a stolen table and cost every call's verification; the HMAC's key (in
server_secrets) also means a dump of the keys table alone cannot even be checked
offline. Comparison is hmac.compare_digest, in constant time.

Verified records are cached per process (`KeyCache`, bounded); the cache follows the
change log (`KeyCacheApplier`), so a revocation drops the key in every worker and
replica, and the revoking process drops it before it answers. Expiry is checked on
every call, against the cached record.

A key presented again is recognised without its HMAC: the cache also remembers each
verified key text by a keyed BLAKE2b of it (the MAC's key is random per process and
never leaves it), with the principal it proves. A lookup by a MAC under a secret key
tells a caller nothing by its timing, no key text is kept in memory, and the entry goes
with its key's (revocation, age, eviction), so the memo only skips the work of a
verification already done.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from modelreg.domain.changelog import Change
from modelreg.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from modelreg.domain.events import EventKind
from modelreg.domain.names import check_principal
from modelreg.domain.paging import PageTokens, number_position, page_of, page_size
from modelreg.domain.principals import Principal, Proof
from modelreg.domain.rules import check_description
from modelreg.domain.types import Page

KEY_PREFIX = "mrk_"
KEY_ID_BYTES = 6  # 12 hex digits: a public name, unique by the table's primary key
SECRET_BYTES = 32
HASH_KEY_NAME = "api_keys"  # the server_secrets row that keys the secrets' HMAC
ADMIN = "admin"  # the principal the first start of a fresh deployment creates
SYSTEM_ACTOR = "modelreg"  # who events of the server's own doing name
GET_A_KEY = "an admin creates keys with `modelreg keys create NAME`"
_KEY = re.compile(r"mrk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class PrincipalKind(StrEnum):
    """What kind of caller a principal is."""

    PERSON = "person"
    SERVICE = "service"


class Secret:
    """Text that must never reach a log: its repr and str hide it; `reveal()` gives it."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        """The secret text, for the one place that must send or hash it."""
        return self._text

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public record (never its secret nor the secret's hash)."""

    key_id: str
    principal: str
    kind: PrincipalKind
    description: str = ""
    create_time: datetime | None = None
    creator: str = ""
    expire_time: datetime | None = None
    revoke_time: datetime | None = None
    seq: int = 0  # its place in ListApiKeys' order

    @property
    def name(self) -> str:
        return f"principals/{self.principal}/apiKeys/{self.key_id}"


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What verification reads: the record and the HMAC of its secret."""

    key: ApiKey
    secret_hash: bytes = b""

    def __repr__(self) -> str:  # the hash is not a secret, but it is nobody's business
        return f"StoredKey({self.key!r})"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key to store: its record and its hash."""

    key: ApiKey
    secret_hash: bytes
    kind_given: bool = True  # False: an existing principal keeps its kind

    def __repr__(self) -> str:
        return f"NewKey({self.key!r})"


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """A key as a caller sent it, split into its public id and its secret."""

    key_id: str
    secret: Secret


class ApiKeyStore(Protocol):
    """API keys and their principals as IdentityService and verification use them."""

    async def create_key(self, *, new: NewKey, actor: str) -> ApiKey:
        """Store `new`, making its principal if it does not exist (FailedPrecondition if
        it exists with another kind), and write its `key.created` event."""
        ...

    async def find_key(self, *, key_id: str) -> StoredKey | None:
        """The stored key, or None."""
        ...

    async def list_keys(
        self, *, principal: str | None, before: int | None, limit: int
    ) -> list[ApiKey]:
        """Keys newest first (of `principal`, else of all), below the position `before`."""
        ...

    async def revoke_key(self, *, key_id: str, actor: str) -> tuple[ApiKey, bool]:
        """Revoke it (NotFound); True if this call revoked it (and wrote `key.revoked`),
        False if it was revoked already (nothing written)."""
        ...

    async def create_first_admin(self, *, new: NewKey, keep: Callable[[], None]) -> bool:
        """If no principal exists, make `new`'s principal and store `new`, calling `keep`
        (which saves the key for the user) before committing; one caller at a time
        across every process on the database. False if a principal existed."""
        ...


class KeyHasher:
    """HMAC-SHA256 of key secrets under the deployment's key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "KeyHasher(***)"

    def hash(self, secret: Secret) -> bytes:
        return hmac.digest(self._key, secret.reveal().encode(), hashlib.sha256)

    def matches(self, secret: Secret, stored: bytes) -> bool:
        """Whether `secret` hashes to `stored`, compared in constant time."""
        return hmac.compare_digest(self.hash(secret), stored)


def parse_key(token: str) -> PresentedKey:
    """`mrk_{key_id}_{secret}` -> its parts; Unauthenticated KEY_MALFORMED otherwise
    (the message never repeats what was sent)."""
    match = _KEY.fullmatch(token)
    if match is None:
        raise Unauthenticated(
            "malformed API key: a key is `mrk_` + 12 hex digits + `_` + 43 characters, as"
            f" `modelreg keys create` prints it; {GET_A_KEY}",
            reason="KEY_MALFORMED",
        )
    return PresentedKey(match[1], Secret(match[2]))


def new_key_text() -> tuple[str, Secret]:
    """A fresh key id and secret."""
    return secrets.token_hex(KEY_ID_BYTES), Secret(secrets.token_urlsafe(SECRET_BYTES))


def key_text(key_id: str, secret: Secret) -> Secret:
    """The key as the user sends it."""
    return Secret(f"{KEY_PREFIX}{key_id}_{secret.reveal()}")


class KeyCache:
    """Verified keys by id, bounded (least recently used out), entries aged out after
    `ttl` seconds as a bound should a change be missed. A fill is refused if a drop
    happened since its read began (the generation moved): a read that started before a
    revocation cannot put the revoked key back.

    Beside them, `recognised` remembers verified key texts (by a keyed MAC, see the
    module docstring) with their principal, for as long as the key's own entry stays."""

    def __init__(self, *, max_entries: int = 10_000, ttl: float = 300.0) -> None:
        self._entries: OrderedDict[str, tuple[StoredKey, float]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl
        self.generation = 0
        self._mac_key = secrets.token_bytes(32)
        # MAC of a key text -> (key id, principal, expiry as a POSIX time or None, aged out at)
        self._verified: dict[bytes, tuple[str, Principal, float | None, float]] = {}
        self._macs: dict[str, list[bytes]] = {}  # key id -> the MACs remembered for it

    def mac(self, token: str) -> bytes:
        """The memo's name for a presented key text."""
        return hashlib.blake2b(token.encode(), key=self._mac_key, digest_size=16).digest()

    def recognised(self, mac: bytes, *, now: Callable[[], float]) -> Principal | None:
        """The principal of a key text verified before (by its `mac`), if it still
        holds: neither dropped, aged out nor expired at `now()` (a POSIX time)."""
        found = self._verified.get(mac)
        if found is None:
            return None
        _, principal, expires, aged = found
        if aged < time.monotonic() or (expires is not None and expires <= now()):
            del self._verified[mac]
            return None  # verified again the long way, which says why it fails
        return principal

    def get(self, key_id: str) -> StoredKey | None:
        found = self._entries.get(key_id)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._entries[key_id]
            return None
        self._entries.move_to_end(key_id)
        return found[0]

    def fill(self, stored: StoredKey, *, generation: int) -> bool:
        """Keep `stored`, unless a drop happened since its read began (then False)."""
        if generation != self.generation or self._max <= 0:
            return False
        self._entries[stored.key.key_id] = (stored, time.monotonic() + self._ttl)
        self._entries.move_to_end(stored.key.key_id)
        while len(self._entries) > self._max:
            evicted, _ = self._entries.popitem(last=False)
            self._forget({evicted})
        return True

    def remember(self, mac: bytes, stored: StoredKey, principal: Principal) -> None:
        """Remember a key text just verified against `stored`, held in this cache."""
        key = stored.key
        held = self._entries.get(key.key_id)
        if held is None or held[0] is not stored:
            return  # not (or no longer) what the cache holds: nothing to skip next time
        expires = key.expire_time.timestamp() if key.expire_time is not None else None
        self._verified[mac] = (key.key_id, principal, expires, held[1])
        self._macs.setdefault(key.key_id, []).append(mac)
        while len(self._verified) > self._max:  # texts of one key id count each
            del self._verified[next(iter(self._verified))]  # its _macs entry is harmless

    def drop(self, key_ids: Sequence[str]) -> None:
        self.generation += 1
        for key_id in key_ids:
            self._entries.pop(key_id, None)
        self._forget(set(key_ids))

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._verified.clear()
        self._macs.clear()

    def _forget(self, key_ids: set[str]) -> None:
        for key_id in key_ids:
            for mac in self._macs.pop(key_id, ()):
                self._verified.pop(mac, None)


class KeyCacheApplier:
    """The Follower's `apply` for the key cache: a revoked key is dropped; a change this
    release cannot read empties the cache (assume the worst). `revision` is how far it
    has applied (AdminService shows it as the counter `identity.keys.revision`)."""

    def __init__(self, cache: KeyCache, on_applied: Callable[[int], None] = lambda _: None) -> None:
        self._cache = cache
        self._on_applied = on_applied

    async def __call__(self, changes: Sequence[Change]) -> None:
        if any(change.undecodable for change in changes):
            self._cache.clear()
        revoked = [
            str((event.after or {}).get("key_id", ""))
            for change in changes
            for event in change.events
            if event.kind is EventKind.KEY_REVOKED
        ]
        if revoked:
            self._cache.drop(revoked)
        self._on_applied(changes[-1].revision)


class ApiKeys:
    """The IdentityService key use cases, and the verification of a presented key."""

    def __init__(
        self,
        *,
        store: ApiKeyStore,
        hasher: KeyHasher,
        tokens: PageTokens,
        cache: KeyCache | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._tokens = tokens
        self.cache = cache or KeyCache()
        self._now = now or (lambda: datetime.now(UTC))
        self._posix = time.time if now is None else lambda: self._now().timestamp()

    async def create(
        self,
        *,
        principal: str,
        kind: PrincipalKind | None,
        description: str,
        expire_time: datetime | None,
        actor: str,
    ) -> tuple[ApiKey, Secret]:
        """A new key for `principal` (made on first use); returns it and the key text,
        which is never stored and cannot be shown again."""
        if expire_time is not None and expire_time <= self._now():
            raise InvalidArgument.field("expire_time", "must be in the future")
        key_id, secret = new_key_text()
        record = ApiKey(
            key_id=key_id,
            principal=check_principal(principal),
            kind=kind or PrincipalKind.PERSON,
            description=check_description(description, "description"),
            expire_time=expire_time,
        )
        new = NewKey(record, self._hasher.hash(secret), kind_given=kind is not None)
        created = await self._store.create_key(new=new, actor=actor)
        return created, key_text(key_id, secret)

    async def list(self, *, principal: str, size: int, token: str) -> Page[ApiKey]:
        """Keys newest first, of one principal or of all, a page at a time."""
        who = check_principal(principal) if principal else None
        limit = page_size(size)
        query = ["api_keys", who or ""]
        before = self._tokens.decode(token, query, number_position)
        items = await self._store.list_keys(principal=who, before=before, limit=limit + 1)
        return page_of(items, limit, lambda last: self._tokens.encode(query, last.seq))

    async def revoke(self, *, key_id: str, actor: str) -> ApiKey:
        """Revoke a key; this process refuses it at once, the others when they follow
        the change log's `key.revoked`."""
        checked = check_key_id(key_id)
        revoked, _ = await self._store.revoke_key(key_id=checked, actor=actor)
        self.cache.drop([checked])
        return revoked

    async def verify(self, token: str) -> Principal:
        """The principal a presented key proves, or Unauthenticated with the reason
        (KEY_MALFORMED, KEY_UNKNOWN, KEY_REVOKED, KEY_EXPIRED)."""
        mac = self.cache.mac(token)
        known = self.cache.recognised(mac, now=self._posix)
        if known is not None:
            return known  # this text verified before, its key still held and unexpired
        presented = parse_key(token)
        stored = self.cache.get(presented.key_id)
        if stored is None:
            generation = self.cache.generation
            stored = await self._store.find_key(key_id=presented.key_id)
            if stored is None or not self._hasher.matches(presented.secret, stored.secret_hash):
                raise _unknown(presented.key_id)
            self.cache.fill(stored, generation=generation)
        elif not self._hasher.matches(presented.secret, stored.secret_hash):
            raise _unknown(presented.key_id)
        key = stored.key
        if key.revoke_time is not None:
            raise Unauthenticated(
                f"API key {key.key_id} was revoked; {GET_A_KEY}",
                reason="KEY_REVOKED",
                metadata={"key_id": key.key_id},
            )
        if key.expire_time is not None and key.expire_time <= self._now():
            raise Unauthenticated(
                f"API key {key.key_id} expired at {key.expire_time.isoformat()}; {GET_A_KEY}",
                reason="KEY_EXPIRED",
                metadata={"key_id": key.key_id},
            )
        principal = Principal(key.principal, Proof.API_KEY, key_id=key.key_id)
        self.cache.remember(mac, stored, principal)
        return principal

    async def create_first_admin(self, keep: Callable[[Secret], None]) -> bool:
        """On a deployment without any principal: make `admin` and one key, handed to
        `keep` (which writes it where the local CLI finds it) before the commit. False
        if a principal existed (nothing is made)."""
        key_id, secret = new_key_text()
        record = ApiKey(
            key_id=key_id,
            principal=ADMIN,
            kind=PrincipalKind.PERSON,
            description="made by the first start of this deployment",
        )
        new = NewKey(record, self._hasher.hash(secret))
        return await self._store.create_first_admin(
            new=new, keep=lambda: keep(key_text(key_id, secret))
        )


def check_key_id(key_id: str, field: str = "key_id") -> str:
    """A key's public id: 12 hex digits (what follows `mrk_`)."""
    if not re.fullmatch(r"[0-9a-f]{12}", key_id):
        raise InvalidArgument.field(field, "must be a key id: 12 hex digits, as ListApiKeys shows")
    return key_id


def _unknown(key_id: str) -> Unauthenticated:
    return Unauthenticated(
        f"API key {key_id} is not known to this registry; {GET_A_KEY}",
        reason="KEY_UNKNOWN",
        metadata={"key_id": key_id},
    )


def not_found(key_id: str) -> NotFound:
    return NotFound(f"apiKeys/{key_id}", message=f"API key {key_id} not found")


def kind_conflict(principal: str, kind: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"principals/{principal} exists and is a {kind}: leave kind unspecified or give {kind}",
        reason="PRINCIPAL_KIND_MISMATCH",
    )
