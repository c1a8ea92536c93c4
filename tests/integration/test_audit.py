"""The audit log: events are append-only in PostgreSQL itself, hash-chained in change-log
order, and VerifyAuditLog (and `modelreg audit verify`) names the first event that was
changed or removed behind the server's back."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.app import RunningServer
from modelreg.domain.names import ModelKey
from modelreg.domain.principals import Denial
from modelreg.store.audit import PostgresDenialLog
from modelreg.store.postgres import create_pool
from modelreg.v1 import audit_service_pb2 as au
from modelreg.v1 import audit_service_pb2_grpc as au_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb
from tests.conftest import DatabaseFactory
from tests.helpers import bearer_of, make_model
from tests.integration.writers import Writer, write

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
                model=pb.Model(name=f"namespaces/default/models/{model}", description=f"d{n}"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
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


def _cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    return subprocess.run(
        [sys.executable, "-m", "modelreg", *args, "--target", target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_audit_verify_on_the_command_line_names_the_changed_event(
    clean: None, stub: Stub, db: asyncpg.Connection, target: str
) -> None:
    await _events(stub, 9)
    intact = await asyncio.to_thread(_cli, target, "audit", "verify", "--page", "4")
    assert intact.returncode == 0, intact.stderr
    head = await db.fetchval(
        "SELECT hash FROM events ORDER BY revision DESC, event_id DESC LIMIT 1"
    )
    assert "verified 9 events" in intact.stdout
    assert head.hex() in intact.stdout
    victim = (await _ids(db))[5]
    await _behind_the_server(
        db,
        'UPDATE events SET after = after || \'{"description": "forged"}\' WHERE event_id = $1',
        victim,
    )
    tampered = await asyncio.to_thread(_cli, target, "audit", "verify", "--page", "4")
    assert tampered.returncode == 1, tampered.stderr
    assert f"event {victim} " in tampered.stdout
    assert "namespaces/default/models/m" in tampered.stdout
    assert "5 events before it matched" in tampered.stdout


async def test_events_list_on_the_command_line(clean: None, stub: Stub, target: str) -> None:
    await _events(stub, 3)
    done = await asyncio.to_thread(
        _cli, target, "events", "list", "--model", "m", "--kind", "model.updated", "--json"
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [e["kind"] for e in listed] == ["model.updated", "model.updated"]
    assert all(len(base64.b64decode(e["hash"])) == 32 for e in listed)
    newest = await asyncio.to_thread(_cli, target, "events", "list", "--newest-first", "--json")
    revisions = [int(e["revision"]) for e in json.loads(newest.stdout)]
    assert revisions == sorted(revisions, reverse=True)
    assert len(revisions) == 3


async def test_list_events_filters(
    clean: None,
    channel: grpc.aio.Channel,
    stub: Stub,
    db: asyncpg.Connection,
    audit: AuditServiceAsyncStub,
) -> None:
    # the actor recorded is the authenticated principal: ann and bob call with keys of
    # their own (admins, since creating a namespace takes a global role)
    ann = await bearer_of(channel, "ann", role="admin")
    bob = await bearer_of(channel, "bob", role="admin")
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="team"), metadata=ann)
    await make_model(stub, "a")
    await stub.CreateModel(
        rs.CreateModelRequest(parent="namespaces/team", model_id="b"), metadata=bob
    )
    await stub.CreateModel(
        rs.CreateModelRequest(parent="namespaces/team", model_id="c"), metadata=ann
    )
    await stub.DeleteModel(rs.DeleteModelRequest(name="namespaces/team/models/b"), metadata=ann)

    async def listed(**filters: object) -> list[str]:
        reply = await audit.ListEvents(au.ListEventsRequest(**filters))  # type: ignore[arg-type]
        return [f"{e.kind} {e.resource} {e.actor}" for e in reply.events]

    assert await listed(namespace="namespaces/team") == [
        "namespace.created namespaces/team ann",
        "model.created namespaces/team/models/b bob",
        "model.created namespaces/team/models/c ann",
        "model.deleted namespaces/team/models/b ann",
    ]
    assert await listed(model="namespaces/team/models/b") == [
        "model.created namespaces/team/models/b bob",
        "model.deleted namespaces/team/models/b ann",
    ]
    assert await listed(actor="bob") == ["model.created namespaces/team/models/b bob"]
    assert await listed(kinds=["model.deleted", "namespace.created"], newest_first=True) == [
        "model.deleted namespaces/team/models/b ann",
        "namespace.created namespaces/team ann",
    ]
    times = [  # the keys and bindings made above are events too: these are the rest
        r["time"]
        for r in await db.fetch(
            "SELECT time FROM events WHERE resource LIKE 'namespaces/%' ORDER BY revision"
        )
    ]
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(times[1])
    end.FromDatetime(times[3])
    ranged = await audit.ListEvents(au.ListEventsRequest(start_time=start, end_time=end))
    assert [e.resource for e in ranged.events] == [
        "namespaces/default/models/a",
        "namespaces/team/models/b",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await audit.ListEvents(
            au.ListEventsRequest(namespace="namespaces/default", model="namespaces/team/models/b")
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("newest_first", [False, True])
async def test_list_events_pages_neither_skip_nor_repeat_under_concurrent_writes(  # noqa: PLR0917
    clean: None,
    stub: Stub,
    server: RunningServer,
    audit: AuditServiceAsyncStub,
    db: asyncpg.Connection,
    newest_first: bool,
) -> None:
    await _events(stub, 6)
    # a transaction that takes its event id now and commits while the listing runs: by
    # event id it would fall behind the pages already read
    held = Writer(0, events=2, rollback=False)
    writing = asyncio.create_task(
        write(server.services.store, held, itertools.count(), ModelKey("default", "m"))
    )
    await held.ready.wait()
    await _events(stub, 4, model="n")
    before = {r["event_id"] for r in await db.fetch("SELECT event_id FROM events")}
    seen: list[tuple[int, int]] = []
    request = au.ListEventsRequest(page_size=2, newest_first=newest_first)
    pages = 0
    while True:
        reply = await audit.ListEvents(request)
        seen += [(e.revision, e.event_id) for e in reply.events]
        pages += 1
        if pages == 1:
            held.go.set()
            await writing
        await stub.UpdateModel(  # another write between every two pages
            rs.UpdateModelRequest(
                model=pb.Model(name="namespaces/default/models/n", description=f"p{pages}"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    ids = [event_id for _, event_id in seen]
    assert len(ids) == len(set(ids)), "an event was listed twice"
    assert before <= set(ids), f"skipped: {sorted(before - set(ids))}"
    assert seen == sorted(seen, reverse=newest_first)
    held_ids = {
        r["event_id"] for r in await db.fetch("SELECT event_id FROM events WHERE actor = 't'")
    }
    if newest_first:  # written above where the listing started: not part of it
        assert not held_ids & set(ids)
    else:  # committed after its id was overtaken, yet listed (in commit order)
        assert held_ids <= set(ids)
        assert min(held_ids) < max(before)


async def test_denials_are_recorded_listed_and_survive_a_backend_failure(
    clean: None,
    server: RunningServer,
    audit: AuditServiceAsyncStub,
    new_database: DatabaseFactory,
) -> None:
    denials = server.services.denials
    assert denials is not None
    method = "/modelreg.v1.RegistryService/SetAlias"
    for n, actor in enumerate(["eve", "mallory", "eve"]):
        await denials.record(
            Denial(actor, method, f"namespaces/default/models/m{n}", "editor", "not an editor")
        )
    reply = await audit.ListDenials(au.ListDenialsRequest(actor="eve", newest_first=True))
    assert [d.resource for d in reply.denials] == [
        "namespaces/default/models/m2",
        "namespaces/default/models/m0",
    ]
    assert reply.denials[0].permission == "editor"
    paged = await audit.ListDenials(au.ListDenialsRequest(page_size=2))
    rest = await audit.ListDenials(
        au.ListDenialsRequest(page_size=2, page_token=paged.next_page_token)
    )
    assert [d.actor for d in [*paged.denials, *rest.denials]] == ["eve", "mallory", "eve"]
    # a database without the table (a PostgreSQL error), then a closed pool (a driver error)
    pool = await create_pool(await new_database(seeded=False), min_size=1, max_size=1)
    broken = PostgresDenialLog(pool)
    await broken.record(Denial("eve", method, "", "editor", "no"))
    await pool.close()
    await broken.record(Denial("eve", method, "", "editor", "no"))
    assert broken.dropped == 2
    swept = await denials.sweep(keep_days=0)
    assert swept == 3
