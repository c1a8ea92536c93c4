"""The key cache's memo of verified key texts: a key presented again skips its HMAC, and
the memo never outlives what it stands for (revocation, eviction, age, expiry)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from modelreg.domain.errors import Unauthenticated
from modelreg.domain.identity import (
    ApiKey,
    ApiKeys,
    KeyCache,
    KeyHasher,
    PrincipalKind,
    Secret,
    StoredKey,
    key_text,
    new_key_text,
)
from modelreg.domain.paging import PageTokens
from modelreg.domain.principals import Principal, Proof

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class CountingHasher(KeyHasher):
    def __init__(self) -> None:
        super().__init__(secrets.token_bytes(32))
        self.checks = 0

    def matches(self, secret: Secret, stored: bytes) -> bool:
        self.checks += 1
        return super().matches(secret, stored)


class OneKeyStore:
    """The ApiKeyStore port holding one key (the calls verification makes)."""

    def __init__(self, stored: StoredKey) -> None:
        self.stored = stored
        self.reads = 0

    async def find_key(self, *, key_id: str) -> StoredKey | None:
        self.reads += 1
        return self.stored if key_id == self.stored.key.key_id else None


def issued(hasher: KeyHasher, *, expire_time: datetime | None = None) -> tuple[StoredKey, str]:
    key_id, secret = new_key_text()
    record = ApiKey(key_id, "svc", PrincipalKind.SERVICE, expire_time=expire_time)
    return StoredKey(record, hasher.hash(secret)), key_text(key_id, secret).reveal()


def keys_on(
    stored: StoredKey, hasher: KeyHasher, now: Callable[[], datetime] = lambda: T0
) -> tuple[ApiKeys, OneKeyStore]:
    store = OneKeyStore(stored)
    keys = ApiKeys(
        store=store,  # type: ignore[arg-type]  # only find_key is called
        hasher=hasher,
        tokens=PageTokens(secrets.token_bytes(32)),
        now=now,
    )
    return keys, store


async def test_a_key_presented_again_is_recognised_without_its_hmac() -> None:
    hasher = CountingHasher()
    stored, token = issued(hasher)
    keys, store = keys_on(stored, hasher)
    first = await keys.verify(token)
    assert first == Principal("svc", Proof.API_KEY, key_id=stored.key.key_id)
    for _ in range(5):
        assert await keys.verify(token) is first
    assert (hasher.checks, store.reads) == (1, 1)


async def test_a_wrong_secret_for_a_remembered_key_is_still_refused() -> None:
    hasher = CountingHasher()
    stored, token = issued(hasher)
    keys, _ = keys_on(stored, hasher)
    await keys.verify(token)
    last = "A" if token[-1] != "A" else "B"
    with pytest.raises(Unauthenticated) as refused:
        await keys.verify(token[:-1] + last)
    assert refused.value.reason == "KEY_UNKNOWN"
    assert hasher.checks == 2  # the wrong text went the long way


async def test_a_revoked_key_is_forgotten_with_its_entry() -> None:
    hasher = CountingHasher()
    stored, token = issued(hasher)
    keys, store = keys_on(stored, hasher)
    await keys.verify(token)
    store.stored = StoredKey(
        ApiKey(stored.key.key_id, "svc", PrincipalKind.SERVICE, revoke_time=T0),
        stored.secret_hash,
    )
    keys.cache.drop([stored.key.key_id])  # what revoke and the change log's key.revoked do
    with pytest.raises(Unauthenticated) as refused:
        await keys.verify(token)
    assert refused.value.reason == "KEY_REVOKED"


async def test_a_remembered_key_still_expires_on_the_clock_of_the_keys() -> None:
    hasher = CountingHasher()
    stored, token = issued(hasher, expire_time=T0 + timedelta(seconds=10))
    clock = [T0]
    keys, _ = keys_on(stored, hasher, now=lambda: clock[0])
    await keys.verify(token)
    clock[0] = T0 + timedelta(seconds=9)
    await keys.verify(token)
    assert hasher.checks == 1
    clock[0] = T0 + timedelta(seconds=10)
    with pytest.raises(Unauthenticated) as refused:
        await keys.verify(token)
    assert refused.value.reason == "KEY_EXPIRED"


def test_the_memo_goes_with_its_key_entry() -> None:
    hasher = KeyHasher(secrets.token_bytes(32))
    cache = KeyCache(max_entries=1)
    one, one_text = issued(hasher)
    other, _ = issued(hasher)
    principal = Principal("svc", Proof.API_KEY, key_id=one.key.key_id)
    posix = T0.timestamp
    mac = cache.mac(one_text)
    assert cache.fill(one, generation=cache.generation)
    cache.remember(mac, one, principal)
    assert cache.recognised(mac, now=posix) is principal
    assert cache.recognised(cache.mac(one_text + "x"), now=posix) is None
    assert cache.fill(other, generation=cache.generation)  # evicts `one`, and its memo
    assert cache.recognised(mac, now=posix) is None

    cache = KeyCache()
    generation = cache.generation
    cache.drop(["someone-else"])  # a drop while a read was in flight: the fill is refused
    assert not cache.fill(one, generation=generation)
    cache.remember(mac, one, principal)  # nothing to remember a text against
    assert cache.recognised(mac, now=posix) is None

    aged = KeyCache(ttl=-1.0)  # every entry already past its age
    assert aged.fill(one, generation=aged.generation)
    aged.remember(mac, one, principal)
    assert aged.recognised(mac, now=posix) is None

    cleared = KeyCache()
    assert cleared.fill(one, generation=cleared.generation)
    cleared.remember(mac, one, principal)
    cleared.clear()  # an undecodable change: assume the worst
    assert cleared.recognised(mac, now=posix) is None


def test_the_memo_is_keyed_per_process_and_holds_no_key_text() -> None:
    hasher = KeyHasher(secrets.token_bytes(32))
    stored, token = issued(hasher)
    one, two = KeyCache(), KeyCache()
    assert one.mac(token) != two.mac(token)  # a MAC under a key of this process alone
    one.fill(stored, generation=one.generation)
    one.remember(one.mac(token), stored, Principal("svc", Proof.API_KEY))
    held = repr(vars(one)).encode()
    assert token.encode() not in held
    assert token.rpartition("_")[2].encode() not in held
