"""Page sizes and opaque keyset page tokens.

A token carries the last key of the page and a fingerprint of the query that
produced it, so a token replayed against another query is refused rather than
silently returning the wrong rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.types import Page

T = TypeVar("T")
P = TypeVar("P")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    """0 means the default; above the maximum is coerced down (AIP-158)."""
    if value < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(query: Any, position: Any) -> str:
    """A token continuing `query` after `position`."""
    body = json.dumps({"q": _fingerprint(query), "p": position}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(token: str, query: Any, shape: Callable[[Any], P]) -> P | None:
    """The position stored in `token` (checked by `shape`), or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        fingerprint, position = body["q"], shape(body["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument.field("page_token", "is not a token this server issued") from exc
    if fingerprint != _fingerprint(query):
        raise InvalidArgument.field(
            "page_token", "belongs to a different query; send the same filters and order"
        )
    return position


def page_of(items: list[T], limit: int, token_for: Callable[[T], str]) -> Page[T]:
    """Cut a `limit + 1` fetch into a page; the extra row only says another page exists."""
    if len(items) > limit:
        return Page(items[:limit], token_for(items[limit - 1]))
    return Page(items)


def text_position(value: Any) -> str:
    """A position that is one string."""
    if not isinstance(value, str):
        raise TypeError("position must be a string")
    return value


def number_position(value: Any) -> int:
    """A position that is one integer."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("position must be an integer")
    return value


def texts_position(value: Any) -> tuple[str, ...]:
    """A position that is a list of strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("position must be a list of strings")
    return tuple(value)


def _fingerprint(query: Any) -> str:
    text = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
