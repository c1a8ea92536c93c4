"""The audit log: events are append-only in PostgreSQL itself, hash-chained in change-log
order, and VerifyAuditLog (and `modelreg audit verify`) names the first event that was
changed or removed behind the server's back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest

from modelreg.v1 import audit_service_pb2 as au
from modelreg.v1 import audit_service_pb2_grpc as au_grpc
from modelreg.v1 import registry_service_pb2 as rs
from tests.helpers import make_model

if TYPE_CHECKING:
    from modelreg.v1.audit_service_pb2_grpc import AuditServiceAsyncStub
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub as Stub
GENESIS = bytes(32)


@pytest.fixture
def audit(channel: grpc.aio.Channel) -> AuditServiceAsyncStub:
    return au_grpc.AuditServiceStub(channel)


async def _events(stub: Stub, count: int, model: str = "m") -> None:
    """`count` events: the model's creation, then updates of its description."""
    await make_model(stub, model)
    for n in range(count - 1):
        await stub.UpdateModel(
            rs.UpdateModelRequest(
                model={"name": f"namespaces/default/models/{model}", "description": f"d{n}"},
                update_mask={"paths": ["description"]},
            )
        )


async def verify_all(
    audit: AuditServiceAsyncStub, page: int
) -> tuple[list[au.VerifyAuditLogResponse], au.VerifyAuditLogResponse]:
    """Verify page by page from the start; the answers, and the last one."""
    answers = []
    request = au.VerifyAuditLogRequest(max_events=page)
    while True:
        answer = await audit.VerifyAuditLog(request)
        answers.append(answer)
        if answer.done:
            return answers, answer
        request = au.VerifyAuditLogRequest(
            after_revision=answer.last_revision,
            after_event_id=answer.last_event_id,
            expected_previous_hash=answer.last_hash,
            max_events=page,
        )


async def _behind_the_server(db: asyncpg.Connection, sql: str, *args: object) -> None:
    """Run `sql` as the superuser with the append-only triggers off, as an intruder with
    the database's superuser password could."""
    await db.execute("SET session_replication_role = replica")
    try:
        await db.execute(sql, *args)
    finally:
        await db.execute("RESET session_replication_role")


async def _ids(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch("SELECT event_id FROM events ORDER BY revision, event_id")
    return [row["event_id"] for row in rows]


async def test_update_delete_and_truncate_are_refused_even_for_the_superuser(
    clean: None, stub: Stub, db: asyncpg.Connection
) -> None:
    await _events(stub, 3)
    before = await db.fetch("SELECT * FROM events ORDER BY event_id")
    for sql in (
        "UPDATE events SET actor = 'mallory'",
        "UPDATE events SET hash = NULL, revision = NULL",
        "DELETE FROM events WHERE event_id = (SELECT min(event_id) FROM events)",
        "DELETE FROM events WHERE false",
        "TRUNCATE events",
    ):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await db.execute(sql)
    assert await db.fetch("SELECT * FROM events ORDER BY event_id") == before


async def test_an_intact_log_verifies_across_pages(
    clean: None, stub: Stub, db: asyncpg.Connection, audit: AuditServiceAsyncStub
) -> None:
    await _events(stub, 23)
    answers, last = await verify_all(audit, page=5)
    assert [a.checked for a in answers] == [5, 5, 5, 5, 3]
    assert not any(a.HasField("mismatch") for a in answers)
    head = await db.fetchrow("SELECT * FROM events ORDER BY revision DESC, event_id DESC LIMIT 1")
    assert (last.last_revision, last.last_event_id) == (head["revision"], head["event_id"])
    assert last.last_hash == head["hash"]
    assert len(last.last_hash) == 32
    first = await db.fetchrow("SELECT * FROM events ORDER BY revision, event_id LIMIT 1")
    assert first["prev_hash"] == GENESIS


async def test_a_row_changed_behind_the_server_is_named(
    clean: None, stub: Stub, db: asyncpg.Connection, audit: AuditServiceAsyncStub
) -> None:
    await _events(stub, 12)
    victim = (await _ids(db))[7]
    await _behind_the_server(db, "UPDATE events SET actor = 'mallory' WHERE event_id = $1", victim)
    answers, last = await verify_all(audit, page=3)
    found = last.mismatch
    assert found.kind == au.AUDIT_MISMATCH_KIND_CHANGED
    assert found.event_id == victim
    assert found.resource == "namespaces/default/models/m"
    assert found.stored_hash != found.recomputed_hash
    assert sum(a.checked for a in answers) == 7  # every event before it matched


async def test_a_row_deleted_in_the_middle_is_found(
    clean: None, stub: Stub, db: asyncpg.Connection, audit: AuditServiceAsyncStub
) -> None:
    await _events(stub, 10)
    ids = await _ids(db)
    await _behind_the_server(db, "DELETE FROM events WHERE event_id = $1", ids[4])
    _, last = await verify_all(audit, page=4)
    assert last.mismatch.kind == au.AUDIT_MISMATCH_KIND_UNLINKED
    assert last.mismatch.event_id == ids[5]  # the one that points at the missing hash
    assert last.mismatch.stored_previous_hash != last.mismatch.expected_previous_hash


async def test_a_wrong_previous_hash_is_refused_and_a_stranger_one_mismatches(
    clean: None, stub: Stub, audit: AuditServiceAsyncStub
) -> None:
    await _events(stub, 2)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await audit.VerifyAuditLog(au.VerifyAuditLogRequest(after_revision=1, after_event_id=1))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    answer = await audit.VerifyAuditLog(
        au.VerifyAuditLogRequest(expected_previous_hash=b"\x01" * 32)
    )
    assert answer.mismatch.kind == au.AUDIT_MISMATCH_KIND_UNLINKED
    assert answer.checked == 0
    assert answer.done
