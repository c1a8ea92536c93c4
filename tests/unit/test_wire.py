"""Hand-framed responses decode as the messages they stand for."""

from __future__ import annotations

import pytest

from modelreg.api import wire
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**14, 2**21 + 5, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    message = rs.SetAliasRequest(expected_version_number=value)  # optional: 0 is sent too
    assert message.SerializeToString() == b"\x20" + wire.varint(value)


@pytest.mark.parametrize("size", [0, 5, 127, 128, 70_000])
def test_framed_response_parses(size: int) -> None:
    version = pb.ModelVersion(name="namespaces/a/models/b/versions/1", description="x" * size)
    framed = wire.field(1, version.SerializeToString())
    assert rs.ResolveReferenceResponse.FromString(framed).version == version


def test_framed_batch_parses() -> None:
    version = pb.ModelVersion(number=3)
    result = wire.field(1, b"m:3") + wire.field(2, version.SerializeToString())
    reply = rs.BatchGetModelVersionsResponse.FromString(wire.field(1, result) * 2)
    assert [r.reference for r in reply.results] == ["m:3", "m:3"]
    assert reply.results[1].version.number == 3


@pytest.mark.parametrize("sizes", [[0], [5], [100, 0, 27], [262_144], [70_000, 1, 192_143]])
def test_download_chunks_framed_from_pieces_parse(sizes: list[int]) -> None:
    pieces = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    views: list[bytes | memoryview] = [memoryview(p) if n % 2 else p for n, p in enumerate(pieces)]
    head = art.DownloadFileResponse(version="namespaces/a/models/b/versions/1")
    first = head.SerializeToString()

    framed = wire.framed(art.DownloadFileResponse.DATA_FIELD_NUMBER, views, first)

    message = art.DownloadFileResponse.FromString(framed)
    assert message.version == head.version
    assert message.data == b"".join(pieces)
