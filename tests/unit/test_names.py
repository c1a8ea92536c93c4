"""The one parser of resource names and short references."""

from __future__ import annotations

import pytest

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import (
    ModelKey,
    Reference,
    parse_alias_name,
    parse_reference,
    parse_version_name,
)

D = ModelKey("default", "m")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m", Reference(D)),
        ("default/m", Reference(D)),
        ("m@latest", Reference(D)),
        ("team/m@prod", Reference(ModelKey("team", "m"), alias="prod")),
        ("m:7", Reference(D, number=7)),
        ("namespaces/default/models/m", Reference(D)),
        ("namespaces/default/models/m/versions/12", Reference(D, number=12)),
        ("namespaces/default/models/m/aliases/champion", Reference(D, alias="champion")),
        ("a.b-c_d/x.y@r1", Reference(ModelKey("a.b-c_d", "x.y"), alias="r1")),
    ],
)
def test_references_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a/b/c",
        "m@",
        "m:",
        "m:0",
        "m:-1",
        "m:01",
        "m:1.5",
        f"m:{2**63}",
        "m@12",
        "M",
        "m@Prod",
        "-m",
        "m@x@y",
        "m:1@x",
        "namespaces/default/models/m/blobs/1",
        "default/" + "m" * 64,
        "m" * 301,
    ],
)
def test_bad_references_name_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_reference(text, "ref")
    assert [field for field, _ in caught.value.violations] == ["ref"]


def test_canonical_spelling_is_one_per_meaning() -> None:
    same = {parse_reference(t).canonical for t in ("m", "default/m", "m@latest")}
    assert same == {"default/m@latest"}
    assert parse_reference("namespaces/default/models/m/versions/3").canonical == "default/m:3"


def test_alias_and_version_names() -> None:
    assert parse_version_name("namespaces/a/models/b/versions/3").number == 3
    assert parse_alias_name("namespaces/a/models/b/aliases/prod").alias == "prod"
    for bad in ("namespaces/a/models/b/aliases/7", "namespaces/a/models/b/aliases/latest"):
        with pytest.raises(InvalidArgument):
            parse_alias_name(bad)
