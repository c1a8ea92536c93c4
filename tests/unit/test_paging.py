"""Page sizes, and page tokens bound to their query and signed by their deployment."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.paging import (
    NOT_ISSUED,
    PageTokens,
    number_position,
    page_of,
    page_size,
    text_position,
    texts_position,
)

TOKENS = PageTokens(b"k" * 32)


def test_page_size_defaults_and_caps() -> None:
    assert page_size(0) == 50
    assert page_size(7) == 7
    assert page_size(10**6) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_token_round_trips_only_for_its_query() -> None:
    token = TOKENS.encode({"model": "a"}, 42)
    assert TOKENS.decode(token, {"model": "a"}, number_position) == 42
    assert TOKENS.decode("", {"model": "a"}, number_position) is None
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(token, {"model": "b"}, number_position)
    assert caught.value.violations[0][0] == "page_token"


def test_a_token_is_read_by_every_holder_of_the_key_and_nobody_else() -> None:
    token = TOKENS.encode("q", 7)
    assert PageTokens(b"k" * 32).decode(token, "q", number_position) == 7
    with pytest.raises(InvalidArgument) as caught:
        PageTokens(b"j" * 32).decode(token, "q", number_position)
    assert caught.value.violations == [("page_token", NOT_ISSUED)]


def _unsigned(body: Any) -> str:
    """A token as the server used to issue them (base64 JSON), which anyone can make."""
    raw = json.dumps(body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _altered(token: str) -> str:
    body, mac = token.split(".")
    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["p"] = 2**63
    return f"{_unsigned(raw)}.{mac}"


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "bm90IGpzb24",
        "a.b.c",
        "\udc00",
        "é.é",
        "x" * 5000,
        _unsigned({"q": "x", "p": 2**63}),  # the adversarial run's hand-made tokens
        _unsigned({"q": "x", "p": "\udc00"}),
        _altered(TOKENS.encode("q", 1)),
        TOKENS.encode("q", 1) + "A",
        TOKENS.encode("q", 1).replace(".", ""),
    ],
)
def test_forged_or_altered_tokens_are_not_ours(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(token, "q", number_position)
    assert caught.value.violations == [("page_token", NOT_ISSUED)]


@pytest.mark.parametrize("position", ["text", 2**63, -1, True, 1.5, None, [1]])
def test_a_signed_token_of_the_wrong_shape_is_refused(position: Any) -> None:
    with pytest.raises(InvalidArgument) as caught:
        TOKENS.decode(TOKENS.encode("q", position), "q", number_position)
    assert caught.value.violations == [("page_token", NOT_ISSUED)]


def test_positions_are_checked_by_shape() -> None:
    assert texts_position(["a", "b"]) == ("a", "b")
    for bad in ([1, 2], "ab", ["a\0"], ["\udc00"]):
        with pytest.raises((TypeError, ValueError)):
            texts_position(bad)
    with pytest.raises((TypeError, ValueError)):
        text_position("\udc00")
    assert number_position(2**63 - 1) == 2**63 - 1


def test_a_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PageTokens(b"short")
    with pytest.raises(InvalidArgument):  # each ephemeral key is its own
        PageTokens.ephemeral().decode(PageTokens.ephemeral().encode("q", 1), "q", str)


def test_page_of_cuts_the_lookahead_row() -> None:
    page = page_of([1, 2, 3], 2, str)
    assert (page.items, page.next_token) == ([1, 2], "2")
    assert page_of([1, 2], 2, str).next_token == ""
