"""api/jwks.py's key set: refreshed when old (in the background, calls going on with the
keys held) and when a key id is unknown, never more than once per least interval however
many callers ask at once, and kept when a fetch fails. The source is a double of our own
JwksSource port; time is a FakeClock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from modelreg.api.jwks import JwksKeys, JwksUnavailable, UnknownKey, parse_jwks
from tests.unit.fakes import FakeClock


def _jwk(kid: str, **extra: Any) -> dict[str, Any]:
    public = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    return public | {"kid": kid} | extra


class ScriptedSource:
    """The JwksSource port answering `keys` (or failing), counting fetches; a fetch
    waits for `gate` when the test holds it closed."""

    where = "test://jwks"

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.failing = False
        self.fetches = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def fetch(self) -> bytes:
        self.fetches += 1
        self.waiting.set()
        await self.gate.wait()
        if self.failing:
            raise JwksUnavailable("the test's IdP is down")
        return json.dumps({"keys": self.keys}).encode()


def _keys(source: ScriptedSource, clock: FakeClock) -> JwksKeys:
    return JwksKeys(source, clock=clock, refresh_seconds=300, min_refresh_seconds=10)


async def test_an_old_set_is_refreshed_in_the_background() -> None:
    source, clock = ScriptedSource(_jwk("a")), FakeClock()
    keys = _keys(source, clock)
    await keys.refresh()
    source.keys = [_jwk("b")]  # the IdP dropped a
    await clock.advance(299)
    await keys.key("a")
    await keys.settled()
    assert source.fetches == 1  # not old yet
    await clock.advance(1)
    assert (await keys.key("a")).kid == "a"  # answered from the set held...
    await keys.settled()
    assert source.fetches == 2  # ...while the set was fetched again
    assert not keys.holds("a")
    assert keys.holds("b")


async def test_callers_of_an_unknown_kid_at_once_share_one_fetch() -> None:
    source, clock = ScriptedSource(_jwk("a")), FakeClock()
    keys = _keys(source, clock)
    await keys.refresh()
    await clock.advance(10)
    source.gate.clear()
    source.waiting.clear()
    callers = [asyncio.create_task(keys.key(f"made-up-{i}")) for i in range(50)]
    await source.waiting.wait()  # the first caller's fetch is in flight; the rest queue
    source.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, UnknownKey) for r in results)
    assert source.fetches == 2  # start-up, and one for all fifty


async def test_a_failed_fetch_keeps_the_keys_and_says_so_for_unknown_ones() -> None:
    source, clock = ScriptedSource(_jwk("a")), FakeClock()
    keys = _keys(source, clock)
    await keys.refresh()
    source.failing = True
    await clock.advance(10)
    with pytest.raises(JwksUnavailable, match="down"):
        await keys.key("b")
    assert (await keys.key("a")).kid == "a"
    source.failing = False
    source.keys.append(_jwk("b"))
    with pytest.raises(JwksUnavailable):  # within the least interval: no new fetch yet
        await keys.key("b")
    await clock.advance(10)
    assert (await keys.key("b")).kid == "b"


async def test_a_token_without_kid_uses_the_only_key() -> None:
    source, clock = ScriptedSource(_jwk("only")), FakeClock()
    keys = _keys(source, clock)
    await keys.refresh()
    assert (await keys.key("")).kid == "only"
    source.keys.append(_jwk("second"))
    await clock.advance(300)
    await keys.key("only")
    await keys.settled()
    with pytest.raises(UnknownKey):  # two keys: which one is not for us to guess
        await keys.key("")


def test_keys_not_for_signatures_are_skipped() -> None:
    document = {
        "keys": [
            _jwk("sig"),
            _jwk("enc", use="enc"),
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},
            "not a key",
        ]
    }
    assert list(parse_jwks(json.dumps(document).encode(), "x")) == ["sig"]
    with pytest.raises(JwksUnavailable, match="no usable signature key"):
        parse_jwks(json.dumps({"keys": [document["keys"][1]]}).encode(), "x")
    with pytest.raises(JwksUnavailable, match="not a JWKS document"):
        parse_jwks(b"[1, 2]", "x")
