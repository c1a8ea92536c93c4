"""Encoded responses built from cached bytes: the hot path does no protobuf work on a hit.

A message field holding another message is its tag, the length, then the bytes, so
`ResolveReferenceResponse{version = <bytes>}` is a few bytes of header before them.
"""

from __future__ import annotations

from collections.abc import Sequence

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (message, string or bytes) with its tag."""
    return b"".join((varint(number << 3 | _LENGTH_DELIMITED), varint(len(payload)), payload))


def framed(number: int, pieces: Sequence[bytes | memoryview], before: bytes = b"") -> bytes:
    """`before`, then a length-delimited field whose payload is the pieces, in one copy."""
    size = sum(len(piece) for piece in pieces)
    head = before + varint(number << 3 | _LENGTH_DELIMITED) + varint(size)
    return b"".join((head, *pieces))


_SMALL = [bytes((n,)) for n in range(0x80)]  # one-byte varints, the common case
