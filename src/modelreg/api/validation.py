"""Checks every request passes before a servicer sees it, by field type, so a new field
cannot forget them: the request's descriptor is walked, not a list of fields.

The checks run in the deserializer the interceptor gives every method (api/interceptors.py),
which hands a `Refused` to the wrapper instead of the request; the wrapper answers it.

- A body that is not a valid encoding of the request message (bad UTF-8 in a string,
  a truncated field) is refused instead of raising, which grpc would answer with UNKNOWN
  and a traceback; the reply names the field where decoding broke when the wire shows it.
- Every string (fields, repeated elements, map keys and values, in nested messages too)
  must hold no NUL: PostgreSQL text and jsonb cannot store one.
- Every uint64 must fit the bigint columns (at most 2^63-1); every double must be finite
  (JSON, which holds metrics, has no NaN or infinity).

Domain rules (lengths, formats, names) stay in the domain; these are the ones no stored
value may break, whatever the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from modelreg.domain.errors import InvalidArgument

MAX_INT64 = 2**63 - 1
MAX_VIOLATIONS = 10  # a reply names the first few, not every bad leaf of a huge request
UNDECODABLE = "UNDECODABLE_REQUEST"

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_UNSIGNED = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_FLOATING = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


@dataclass(frozen=True, slots=True)
class Refused:
    """What the deserializer hands on in place of a request that must not reach a servicer."""

    error: InvalidArgument


def checked_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning `Refused` where it would raise (grpc answers a raising
    deserializer with UNKNOWN and logs a traceback, before any interceptor can step in)
    or where the decoded request breaks a rule of its field types."""
    if deserializer is None:
        return None
    # A generated message's FromString is bound to its class, which knows its descriptor.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    always = descriptor is None or _has_numbers(descriptor, set())

    def decode(raw: bytes) -> Any:
        try:
            message = deserializer(raw)
        except (DecodeError, ValueError):  # upb raises DecodeError, for bad UTF-8 too
            return Refused(_undecodable(bytes(raw), descriptor))
        # A string holding NUL puts a zero byte on the wire: without one (most requests,
        # a batch of a thousand references too) only the numbers need a look.
        if always or b"\0" in raw:
            error = check_message(message)
            if error is not None:
                return Refused(error)
        return message

    return decode


def check_request(request: Any) -> None:
    """Raise the INVALID_ARGUMENT of a request the deserializer refused."""
    if isinstance(request, Refused):
        raise request.error


def check_message(message: Any) -> InvalidArgument | None:
    """INVALID_ARGUMENT naming the fields of `message` that hold what no field may hold."""
    if not isinstance(message, Message):
        return None
    violations = []
    for violation in _violations(message, ""):
        violations.append(violation)
        if len(violations) == MAX_VIOLATIONS:
            break
    return InvalidArgument(violations) if violations else None


def _undecodable(raw: bytes, descriptor: Descriptor | None) -> InvalidArgument:
    """INVALID_ARGUMENT naming where decoding broke ("" when the wire format hides it)."""
    if descriptor is None:
        return InvalidArgument([("", "the request does not decode")], reason=UNDECODABLE)
    field = _broken_field(memoryview(raw), descriptor, "") or ""
    what = f"the request is not a valid {descriptor.full_name}"
    if field:
        what = "does not decode (strings must be UTF-8, lengths must fit the message)"
    return InvalidArgument([(field, what)], reason=UNDECODABLE)


def _has_numbers(descriptor: Descriptor, seen: set[str]) -> bool:
    """Whether messages of `descriptor` can hold a uint64 or a floating-point number."""
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if field.type in _UNSIGNED or field.type in _FLOATING:
            return True
        inner = field.message_type
        if inner is not None and inner.full_name not in seen and _has_numbers(inner, seen):
            return True
    return False


def _violations(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if _is_map(field):
            yield from _map_violations(field, value, path)
        elif field.is_repeated:
            if field.type != _MESSAGE and not _any_bad(field.type, value):
                continue  # the common case, checked without a path per element
            for index, item in enumerate(value):
                yield from _value_violations(field, item, f"{path}[{index}]")
        else:
            yield from _value_violations(field, value, path)


def _map_violations(field: FieldDescriptor, value: Any, path: str) -> Iterator[tuple[str, str]]:
    key_field, value_field = _entry(field).fields  # a map entry is (key, value)
    for key, item in value.items():
        if key_field.type == _STRING and "\0" in key:
            yield path, "keys must not contain NUL characters"
            continue
        shown = key if len(key) <= 128 else key[:125] + "..."  # a huge key cannot flood a reply
        yield from _value_violations(value_field, item, f"{path}[{shown}]")


def _value_violations(field: FieldDescriptor, value: Any, path: str) -> Iterator[tuple[str, str]]:
    kind = field.type
    if kind == _MESSAGE:
        yield from _violations(value, f"{path}.")
    elif kind == _STRING and "\0" in value:
        yield path, "must not contain NUL characters"
    elif kind in _UNSIGNED and value > MAX_INT64:
        yield path, f"must be at most {MAX_INT64}"
    elif kind in _FLOATING and not math.isfinite(value):
        yield path, "must be a finite number"


def _any_bad(kind: int, values: Any) -> bool:
    """Whether some of a repeated scalar field's values break a rule (a batch of a
    thousand references is checked in microseconds)."""
    if kind == _STRING:
        return "\0" in "".join(values)
    if kind in _UNSIGNED:
        return any(v > MAX_INT64 for v in values)
    if kind in _FLOATING:
        return not all(map(math.isfinite, values))
    return False


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == _MESSAGE and field.is_repeated and _entry(field).GetOptions().map_entry


def _entry(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field (a map's entry type for a map)."""
    assert field.message_type is not None  # a TYPE_MESSAGE field always has one
    return field.message_type


# Locating the broken field: a walk of the wire format, used only for a body that failed.


def _broken_field(data: memoryview, descriptor: Descriptor, prefix: str) -> str | None:
    """The path of the first field whose bytes do not decode, or None if none is found."""
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        if at < 0:
            return prefix.rstrip(".") or None
        number, wire = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        path = f"{prefix}{field.name}" if field is not None else prefix.rstrip(".")
        end = _skip(data, at, wire)
        if end < 0:
            return path or None
        if wire == 2 and field is not None:
            broken = _broken_value(data[at:end], field, path)
            if broken is not None:
                return broken
        at = end
    return None


def _broken_value(data: memoryview, field: FieldDescriptor, path: str) -> str | None:
    size, start = _varint(data, 0)
    body = data[start : start + size]
    if field.type == _STRING:
        try:
            str(body, "utf-8")
        except UnicodeDecodeError:
            return path
        return None
    if field.type == _MESSAGE:
        return _broken_field(body, _entry(field), f"{path}.")
    return None


def _skip(data: memoryview, at: int, wire: int) -> int:
    """The offset after a value of wire type `wire` starting at `at`, or -1 if it is cut."""
    if wire == 0:
        return _varint(data, at)[1]
    if wire in (1, 5):
        end = at + (8 if wire == 1 else 4)
        return end if end <= len(data) else -1
    if wire == 2:
        size, start = _varint(data, at)
        return start + size if start >= 0 and start + size <= len(data) else -1
    return -1  # groups (3, 4) are not used by proto3; 6 and 7 do not exist


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    """(value, offset after it), or (0, -1) if the varint runs past the end."""
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return 0, -1
