"""Property: whatever a client sends to any RPC, the answer is a status the client can act
on — never INTERNAL, UNKNOWN or a hang — no traceback is logged, and a refused call wrote
nothing.

Requests are built from the descriptors (tests/integration/rpcs.py lists every RPC of
every service), so a new RPC or field is fuzzed without anyone adding it, in three
shapes: random messages, semi-valid ones (names of a seeded model, with junk leaves),
and bodies that are not valid protobuf at all.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.helpers import make_model, make_version
from tests.integration.rpcs import RPCS, Rpc, stored_state

M = "namespaces/default/models/m"
DEADLINE = 30.0  # seconds: generous under load; a call that needs it is a hang
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
EXAMPLES = 40  # per RPC: ~1,200 calls, about 20 s on an idle 2-core machine

VALID_STRINGS = [
    "",
    "namespaces/default",
    M,
    f"{M}/versions/1",
    f"{M}/versions/2",
    f"{M}/aliases/prod",
    "default",
    "m",
    "m:1",
    "m:2",
    "default/m@prod",
    "default/m",
    "prod",
    "weights.bin",
    "upload-1",
    "0" * 64,
    "name",
    "create_time desc",
    "number",
    "description",
    "labels",
    "http://127.0.0.1:9/hook",
    "webhooks/w",
    "webhooks/w/deliveries/1",
    "alias.set",
    "model.updated",
    "alice",
    "/modelreg.v1.RegistryService/SetAlias",
]
NASTY_STRINGS = [
    "\0",
    "a\0b",
    "C:/x",
    "weights/CON.txt",
    "ok/\u202egpj.exe",
    "../x",
    "a" * 5000,
    "%%%",
    "\U0001f642",
    "eyJxIjoiMCIsInAiOjkyMjMzNzIwMzY4NTQ3NzU4MDh9",  # base64 JSON: an unsigned token
]
VALID_INTS = [0, 1, 2, 3, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]

_INT_RANGES = {
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open
}


def _strings(semi_valid: bool) -> st.SearchStrategy[str]:
    junk = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_STRINGS))
    if not semi_valid:
        return junk
    return st.one_of(st.sampled_from(VALID_STRINGS), st.sampled_from(VALID_STRINGS), junk)


def _scalars(field: FieldDescriptor, semi_valid: bool) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _strings(semi_valid)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    low, high = _INT_RANGES[kind]
    near = st.sampled_from([v for v in VALID_INTS if low <= v <= high])
    return st.one_of(near, st.integers(low, high)) if semi_valid else st.integers(low, high)


@st.composite
def messages(draw: Any, descriptor: Descriptor, semi_valid: bool, depth: int = 0) -> Message:
    """A message of `descriptor` with a random subset of its fields set, recursively."""
    message: Message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        _set(draw, message, field, semi_valid, depth)
    return message


def _set(draw: Any, message: Message, field: FieldDescriptor, semi_valid: bool, depth: int) -> None:
    target = getattr(message, field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        entry = field.message_type
        assert entry is not None  # every message field has its type
        if entry.GetOptions().map_entry:
            key_field, value_field = entry.fields
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalars(key_field, semi_valid))
                if value_field.message_type is not None:
                    target[key].CopyFrom(draw(messages(value_field.message_type, semi_valid)))
                else:
                    target[key] = draw(_scalars(value_field, semi_valid))
            return
        if depth >= 3:
            return
        values = [draw(messages(entry, semi_valid, depth + 1))]
        if field.is_repeated:
            values += [draw(messages(entry, semi_valid, depth + 1)) for _ in range(2)]
            for value in values[: draw(st.integers(0, 3))]:
                target.add().CopyFrom(value)
        else:
            target.CopyFrom(values[0])
        return
    if field.is_repeated:
        target.extend(draw(st.lists(_scalars(field, semi_valid), max_size=4)))
    else:
        setattr(message, field.name, draw(_scalars(field, semi_valid)))


@st.composite
def undecodable(draw: Any, descriptor: Descriptor) -> bytes:
    """Bytes that are usually not a valid message: random, or a valid one mangled."""
    if draw(st.booleans()):
        return bytes(draw(st.binary(max_size=80)))
    body = bytearray(draw(messages(descriptor, semi_valid=True)).SerializeToString())
    mangle = draw(st.sampled_from(["cut", "flip", "bad utf-8"]))
    if mangle == "cut" and body:
        return bytes(body[: draw(st.integers(0, len(body) - 1))])
    if mangle == "flip" and body:
        body[draw(st.integers(0, len(body) - 1))] ^= 0xFF
        return bytes(body)
    return bytes(body) + b"\x0a\x02\xff\xfe"  # field 1 as two bytes of broken UTF-8


@st.composite
def bodies(draw: Any, rpc: Rpc) -> bytes | list[bytes]:
    """One request body (a stream of one to three for a client-streaming RPC)."""
    count = draw(st.integers(1, 3)) if rpc.client_streaming else 1
    each = []
    for _ in range(count):
        shape = draw(st.sampled_from(["random", "semi-valid", "semi-valid", "undecodable"]))
        descriptor = rpc.request_type.DESCRIPTOR
        if shape == "undecodable":
            each.append(draw(undecodable(descriptor)))
        else:
            message = draw(messages(descriptor, semi_valid=shape == "semi-valid"))
            each.append(bytes(message.SerializeToString()))
    return each if rpc.client_streaming else each[0]


@pytest.fixture
async def seeded(
    clean: None, db: asyncpg.Connection, stub: rs_grpc.RegistryServiceAsyncStub
) -> None:
    """A model with a READY version 1, a PENDING version 2 and an alias, for the
    semi-valid requests to name."""
    await db.execute("TRUNCATE version_files, upload_sessions, blobs")
    await make_model(stub)
    await make_version(stub)
    await make_version(stub, ready=False)
    await stub.SetAlias(rs.SetAliasRequest(name=f"{M}/aliases/prod", version_number=1))


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.name for rpc in RPCS])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the seed is per RPC, not per example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_no_request_gets_internal_unknown_or_a_hang_or_writes_when_refused(  # noqa: PLR0917
    seeded: None,
    channel: grpc.aio.Channel,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    rpc: Rpc,
    data: st.DataObject,
) -> None:
    body = data.draw(bodies(rpc), label="body")
    caplog.clear()
    before = await stored_state(db)
    refused: grpc.aio.AioRpcError | None = None
    with caplog.at_level(logging.ERROR):
        try:
            await rpc.call(channel, body, deadline=DEADLINE)
        except grpc.aio.AioRpcError as failed:
            refused = failed
    if refused is not None:
        assert refused.code() not in FORBIDDEN, f"{refused.code()}: {refused.details()}"
        after = await stored_state(db)
        assert _comparable(rpc, after) == _comparable(rpc, before), "a refused call wrote"
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks


def _comparable(rpc: Rpc, state: tuple[Any, ...]) -> tuple[Any, ...]:
    """The state a refused call must leave as it was. An upload stream refused part-way
    keeps the session it opened and the bytes it had sent (that is what a resume
    continues from, DESIGN.md §5), so its upload_sessions count may grow."""
    if rpc.name == "UploadFile":
        return state[:-2] + state[-1:]
    return state
