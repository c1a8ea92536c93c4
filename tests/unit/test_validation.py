"""The edge checks by field type (api/validation.py), without a server."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from modelreg.api.validation import (
    UNDECODABLE,
    Refused,
    check_message,
    check_request,
    checked_deserializer,
)
from modelreg.domain.errors import InvalidArgument
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb


def _decoded(message: Any) -> Any:
    decode = checked_deserializer(type(message).FromString)
    assert decode is not None
    return decode(message.SerializeToString())


def _fields(message: Any) -> list[str]:
    decoded = _decoded(message)
    assert isinstance(decoded, Refused)
    return [field for field, _ in decoded.error.violations]


def test_a_valid_request_passes_as_it_was() -> None:
    request = rs.CreateModelVersionRequest(
        parent="namespaces/default/models/m",
        version=pb.ModelVersion(labels={"k": "v"}, metrics={"auc": 0.9}),
    )
    assert _decoded(request) == request
    check_request(_decoded(request))  # raises nothing


def test_nul_is_found_in_every_kind_of_string_leaf() -> None:
    request = rs.CreateModelVersionRequest(
        parent="p\0",
        version=pb.ModelVersion(
            labels={"k\0": "v"},
            params={"lr": "0.1\0"},
            tags=["ok", "b\0d"],
            source=pb.VersionSource(run_id="\0"),
        ),
    )
    assert sorted(_fields(request)) == [
        "parent",
        "version.labels",
        "version.params[lr]",
        "version.source.run_id",
        "version.tags[1]",
    ]


def test_nul_in_a_repeated_message_names_its_index() -> None:
    request = art.FinalizeModelVersionRequest(
        files=[art.ManifestEntry(path="a"), art.ManifestEntry(path="b\0")]
    )
    assert _fields(request) == ["files[1].path"]


def test_numbers_a_column_or_json_cannot_hold() -> None:
    assert _fields(wrappers_pb2.UInt64Value(value=2**63)) == ["value"]
    assert not isinstance(_decoded(wrappers_pb2.UInt64Value(value=2**63 - 1)), Refused)
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert _fields(wrappers_pb2.DoubleValue(value=bad)) == ["value"]
    metrics = rs.CreateModelVersionRequest(version=pb.ModelVersion(metrics={"m": float("nan")}))
    assert _fields(metrics) == ["version.metrics[m]"]


def test_a_reply_names_the_first_ten_violations() -> None:
    error = check_message(rs.BatchGetModelVersionsRequest(references=["\0"] * 50))
    assert error is not None
    assert len(error.violations) == 10


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"\x0a\x02\xff\xfe", "reference"),  # bad UTF-8
        (b"\x0a\x05ab", "reference"),  # five bytes announced, two sent
        (b"\xff", ""),  # a tag cut short
    ],
)
def test_an_undecodable_body_is_refused_naming_where_it_broke(raw: bytes, field: str) -> None:
    decode = checked_deserializer(rs.ResolveReferenceRequest.FromString)
    assert decode is not None
    refused = decode(raw)
    assert isinstance(refused, Refused)
    assert refused.error.reason == UNDECODABLE
    assert [f for f, _ in refused.error.violations] == [field]
    with pytest.raises(InvalidArgument):
        check_request(refused)


def test_a_broken_string_in_a_nested_message_is_named() -> None:
    source = b"\x0a\x01\xff"  # VersionSource.run_id = b"\xff"
    version = bytes([pb.ModelVersion.SOURCE_FIELD_NUMBER << 3 | 2, len(source)]) + source
    body = b"\x0a\x01p" + bytes([0x12, len(version)]) + version
    decode = checked_deserializer(rs.CreateModelVersionRequest.FromString)
    assert decode is not None
    refused = decode(body)
    assert isinstance(refused, Refused)
    assert refused.error.violations[0][0] == "version.source.run_id"


@settings(database=None)
@given(st.lists(st.text(max_size=8), max_size=20))
def test_the_fast_path_never_lets_a_nul_through(references: list[str]) -> None:
    request = rs.BatchGetModelVersionsRequest(references=references)
    refused = isinstance(_decoded(request), Refused)
    assert refused == any("\0" in r for r in references)
