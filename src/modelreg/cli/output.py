"""What commands print: tables of list results, `key: value` fields of one message, short
summaries, or (with --json) the proto3 JSON mapping."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, cast

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, MessageToJson
from google.protobuf.message import Message

from modelreg.client import error_from_status


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: header, field path (`version.state`), and an optional width cap."""

    header: str
    path: str
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """A command's list output: messages shown as a table, or a JSON array; `notes` go to
    stderr after it, and `exit_code` is the command's status."""

    columns: Sequence[Column]
    items: Sequence[Message]
    exit_code: int = 0
    notes: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Summary:
    """A command's short text output; with --json, the message it sums up. `notes` go to
    stderr after it."""

    message: Message
    text: str
    notes: Sequence[str] = ()
    exit_code: int = 0


Output = Message | Listing | Summary

# Version numbers where the proto says 0 stands for "no version": shown as words, not as a
# version 0 nobody made (with --json the field is absent, as proto3 leaves zeros out).
_ZERO_MEANS = {
    "modelreg.v1.SetAliasResponse.previous_version_number": "(none)",
    "modelreg.v1.AliasEvent.previous_version_number": "(none)",
    "modelreg.v1.AliasEvent.version_number": "(deleted)",
    "modelreg.v1.Model.latest_version_number": "(none)",
}

NAMESPACE_COLUMNS = (Column("NAME", "name"), Column("DESCRIPTION", "description", 50))
MODEL_COLUMNS = (
    Column("NAME", "name"),
    Column("LATEST", "latest_version_number"),
    Column("TAGS", "tags", 40),
    Column("CREATED", "create_time"),
    Column("DELETED", "delete_time"),
)
VERSION_COLUMNS = (
    Column("NAME", "name"),
    Column("NUMBER", "number"),
    Column("STATE", "state"),
    Column("DIGEST", "digest", 20),
    Column("CREATED", "create_time"),
)
ALIAS_COLUMNS = (
    Column("NAME", "name"),
    Column("VERSION", "version_number"),
    Column("UPDATER", "updater"),
    Column("UPDATED", "update_time"),
)
CHANGE_REQUEST_COLUMNS = (
    Column("NAME", "name"),
    Column("VERSION", "version_number"),
    Column("STATE", "state"),
    Column("REQUESTER", "requester"),
    Column("EXPIRES", "expire_time"),
)
EVENT_COLUMNS = (
    Column("EVENT", "event_id"),
    Column("FROM", "previous_version_number"),
    Column("TO", "version_number"),
    Column("ACTOR", "actor"),
    Column("TIME", "time"),
)
BATCH_COLUMNS = (
    Column("REFERENCE", "reference"),
    Column("VERSION", "version.name"),
    Column("STATE", "version.state"),
    Column("DIGEST", "version.digest", 20),
    Column("ERROR", "error"),
)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, under a header row."""
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table)
    return "\n".join(line.rstrip() for line in lines)


def format_fields(message: Message) -> str:
    """Every set field of a message, one `key: value` per line, nested ones as `a.b`."""
    pairs = list(_field_pairs(message, ""))
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in pairs)


def format_listing(listing: Listing) -> str:
    """A listing as a table."""
    headers = [column.header for column in listing.columns]
    rows = ([_cell(item, column) for column in listing.columns] for item in listing.items)
    return format_table(headers, rows)


def render(output: Output, *, as_json: bool) -> str:
    """The text to print for a command's output."""
    if isinstance(output, Summary):
        return MessageToJson(output.message) if as_json else output.text
    if isinstance(output, Listing):
        if as_json:
            return json.dumps([MessageToDict(item) for item in output.items], indent=2)
        return format_listing(output)
    return MessageToJson(output) if as_json else format_fields(output)


def field_text(message: Message, path: str) -> str:
    """The field at `path` (`a.b.c`) as short text; "" when it is unset."""
    head, _, rest = path.partition(".")
    field = _field(message, head)
    if _is_single_message(field) and not message.HasField(head):
        return ""
    value = getattr(message, head)
    return field_text(value, rest) if rest else _text(field, value)


def _cell(message: Message, column: Column) -> str:
    text = field_text(message, column.path)
    if column.limit is not None and len(text) > column.limit:
        return text[: column.limit - 1] + "…"
    return text


def _field_pairs(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for field in _fields(message):
        if _is_single_message(field) and not _is_leaf(field):
            if message.HasField(field.name):
                yield from _field_pairs(getattr(message, field.name), f"{prefix}{field.name}.")
            continue
        text = field_text(message, field.name)
        if text:
            yield prefix + field.name, text


# The stubs type a descriptor as the pure-Python or the upb class; the two behave alike.
def _field(message: Message, name: str) -> FieldDescriptor:
    return cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])


def _fields(message: Message) -> Sequence[FieldDescriptor]:
    return cast(Sequence[FieldDescriptor], message.DESCRIPTOR.fields)


def _is_single_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not field.is_repeated


def _is_leaf(field: FieldDescriptor) -> bool:
    """Messages shown as one value: a time, or a google.rpc.Status."""
    kind = field.message_type
    return kind is not None and kind.full_name in _LEAVES


_LEAVES = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.rpc.Status"}


def _text(field: FieldDescriptor, value: Any) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return ", ".join(f"{key}={_scalar(value[key])}" for key in sorted(value))
    if field.is_repeated:
        return ", ".join(_scalar(item) for item in value)
    if field.enum_type is not None:
        return _enum_text(field.enum_type, value)
    if field.message_type is None:
        none = _ZERO_MEANS.get(field.full_name)
        return none if none is not None and value == 0 else _scalar(value)
    return _leaf_text(field.message_type.full_name, value)


def _leaf_text(kind: str, value: Any) -> str:
    if kind == "google.protobuf.Timestamp":
        return str(value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ"))
    if kind == "google.protobuf.Duration":
        return f"{value.ToTimedelta().total_seconds():.3f}s"
    error = error_from_status(value)  # google.rpc.Status
    return f"{error.code.name}: {error.message}"


def _enum_text(enum: EnumDescriptor, value: int) -> str:
    """`MODEL_VERSION_STATE_READY` -> `READY`; "" for the UNSPECIFIED zero value."""
    if value == 0:
        return ""
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return str(enum.values_by_number[value].name).removeprefix(prefix)


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return str(value).lower() if value else ""
    if isinstance(value, bytes):  # a hash
        return value.hex()
    return str(value)
