"""Page sizes and opaque keyset page tokens.

A token carries the last key of the page and a fingerprint of the query that
produced it, so a token replayed against another query is refused rather than
silently returning the wrong rows. Tokens are signed (HMAC-SHA256 with the
deployment's key), so a client can hand back only what a server gave it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.types import Page

T = TypeVar("T")
P = TypeVar("P")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MIN_KEY_BYTES = 32
MAX_TOKEN = 4096  # characters; ours are a few dozen to a few hundred
MAX_POSITION = 2**63 - 1  # positions go into bigint columns
NOT_ISSUED = "is not a page token this server issued"


def page_size(value: int) -> int:
    """0 means the default; above the maximum is coerced down (AIP-158)."""
    if value < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokens:
    """Issues page tokens and reads back only the ones it issued.

    A token is `base64url(body) "." base64url(HMAC-SHA256(key, body))`, the body being
    JSON `{"q": query fingerprint, "p": last key of the page}`. The MAC is checked (in
    constant time) before the body is even parsed, so a hand-made or altered token is
    refused whatever it holds; the body is then checked by its shape all the same. Every
    process of a deployment must hold the same key (the server keeps it in PostgreSQL).
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a page token key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def ephemeral(cls) -> PageTokens:
        """Tokens readable by this process only (for one process, and for tests)."""
        return cls(secrets.token_bytes(MIN_KEY_BYTES))

    def encode(self, query: Any, position: Any) -> str:
        """A token continuing `query` after `position`."""
        body = json.dumps({"q": _fingerprint(query), "p": position}, separators=(",", ":"))
        data = body.encode()
        return f"{_b64(data)}.{_b64(self._mac(data))}"

    def decode(self, token: str, query: Any, shape: Callable[[Any], P]) -> P | None:
        """The position stored in `token` (checked by `shape`), or None for the first page."""
        if not token:
            return None
        try:
            fingerprint, position = self._verified(token)
            position = shape(position)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument.field("page_token", NOT_ISSUED) from exc
        if fingerprint != _fingerprint(query):
            raise InvalidArgument.field(
                "page_token", "belongs to a different query; send the same filters and order"
            )
        return position

    def _verified(self, token: str) -> tuple[str, Any]:
        if len(token) > MAX_TOKEN:
            raise ValueError("too long")
        body_part, _, mac_part = token.partition(".")
        data, mac = _unb64(body_part), _unb64(mac_part)
        if not hmac.compare_digest(mac, self._mac(data)):
            raise ValueError("not signed with this deployment's key")
        body = json.loads(data)
        if not isinstance(body, dict) or body.keys() != {"q", "p"}:
            raise ValueError("not a token body")
        if not isinstance(body["q"], str):
            raise TypeError("fingerprint must be a string")
        return body["q"], body["p"]

    def _mac(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, hashlib.sha256)


def page_of(items: list[T], limit: int, token_for: Callable[[T], str]) -> Page[T]:
    """Cut a `limit + 1` fetch into a page; the extra row only says another page exists."""
    if len(items) > limit:
        return Page(items[:limit], token_for(items[limit - 1]))
    return Page(items)


def text_position(value: Any) -> str:
    """A position that is one string (without NUL, which no stored text holds)."""
    if not isinstance(value, str) or "\0" in value:
        raise TypeError("position must be a string")
    value.encode()  # a lone surrogate (JSON allows "\udc00") raises UnicodeEncodeError
    return value


def number_position(value: Any) -> int:
    """A position that is one integer of a bigint column (0..2^63-1)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("position must be an integer")
    if not 0 <= value <= MAX_POSITION:
        raise ValueError(f"position must be between 0 and {MAX_POSITION}")
    return value


def texts_position(value: Any) -> tuple[str, ...]:
    """A position that is a list of strings."""
    if not isinstance(value, list):
        raise TypeError("position must be a list of strings")
    return tuple(text_position(v) for v in value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    padded = (text + "=" * (-len(text) % 4)).encode("ascii")  # UnicodeEncodeError: ValueError
    return base64.b64decode(padded, altchars=b"-_", validate=True)  # binascii.Error: ValueError


def _fingerprint(query: Any) -> str:
    text = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
