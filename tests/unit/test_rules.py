"""Field rules: sizes, formats, etags and update masks."""

from __future__ import annotations

import pytest

from modelreg.domain.errors import Aborted, InvalidArgument
from modelreg.domain.rules import (
    check_etag,
    check_mask,
    check_metrics,
    check_string_map,
    check_tags,
)
from modelreg.domain.types import etag_of


def test_tags_are_sorted_unique_and_bounded() -> None:
    assert check_tags(["b", "a", "b"], "tags") == ("a", "b")
    with pytest.raises(InvalidArgument):
        check_tags([f"t{i}" for i in range(65)], "tags")
    with pytest.raises(InvalidArgument):
        check_tags(["has space"], "tags")


def test_maps_check_keys_values_and_numbers() -> None:
    assert check_string_map({"b": "1", "a": "2"}, "labels") == {"a": "2", "b": "1"}
    with pytest.raises(InvalidArgument) as caught:
        check_string_map({"k": "v" * 1025}, "params")
    assert caught.value.violations[0][0] == "params[k]"
    with pytest.raises(InvalidArgument):
        check_metrics({"loss": float("nan")}, "metrics")


def test_etag_and_mask() -> None:
    check_etag("", 3, "r")
    check_etag(etag_of(3), 3, "r")
    with pytest.raises(Aborted):
        check_etag(etag_of(2), 3, "r")
    allowed = frozenset({"description", "tags"})
    assert check_mask(["tags"], allowed) == {"tags"}
    for bad in ([], ["owner"]):
        with pytest.raises(InvalidArgument):
            check_mask(bad, allowed)
