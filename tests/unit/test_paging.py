"""Page sizes and tokens bound to their query."""

from __future__ import annotations

import pytest

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.paging import (
    decode_token,
    encode_token,
    number_position,
    page_of,
    page_size,
    texts_position,
)


def test_page_size_defaults_and_caps() -> None:
    assert page_size(0) == 50
    assert page_size(7) == 7
    assert page_size(10**6) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_token_round_trips_only_for_its_query() -> None:
    token = encode_token({"model": "a"}, 42)
    assert decode_token(token, {"model": "a"}, number_position) == 42
    assert decode_token("", {"model": "a"}, number_position) is None
    with pytest.raises(InvalidArgument) as caught:
        decode_token(token, {"model": "b"}, number_position)
    assert caught.value.violations[0][0] == "page_token"


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", encode_token("q", "text")])
def test_forged_or_mistyped_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_token(token, "q", number_position)


def test_texts_position_requires_strings() -> None:
    with pytest.raises(TypeError):
        texts_position([1, 2])
    assert texts_position(["a", "b"]) == ("a", "b")


def test_page_of_cuts_the_lookahead_row() -> None:
    page = page_of([1, 2, 3], 2, str)
    assert (page.items, page.next_token) == ([1, 2], "2")
    assert page_of([1, 2], 2, str).next_token == ""
