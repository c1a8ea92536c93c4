"""The unit tests' in-memory store answers as PostgresStore does: one script of domain
calls (successes and refusals) runs on both, and the transcripts and event logs match."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from modelreg.domain.aliases import Aliases
from modelreg.domain.errors import InvalidArgument, RegistryError
from modelreg.domain.models import Models
from modelreg.domain.names import AliasKey, ModelKey, Reference, VersionKey
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.ports import Store
from modelreg.domain.types import (
    Model,
    ModelQuery,
    ModelVersion,
    Namespace,
    Page,
    VersionState,
    etag_of,
)
from modelreg.domain.versions import Versions
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresStore, create_pool
from tests.conftest import DatabaseFactory
from tests.unit.fake_store import FakeStore

ACTOR = "alice"
NS = "team"
RESNET, BERT = ModelKey(NS, "resnet"), ModelKey(NS, "bert")
PROD = AliasKey(RESNET, "prod")
READY, PENDING = VersionState.READY, VersionState.PENDING


@pytest.fixture
async def database(new_database: DatabaseFactory) -> str:
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def test_the_fake_store_answers_as_postgres_does(database: str) -> None:
    pool = await create_pool(database, min_size=1, max_size=2)
    try:
        seeded = await PostgresStore(pool).get_namespace(namespace="default")
        real = await _script(PostgresStore(pool))
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM events ORDER BY event_id")
    finally:
        await pool.close()
    fake_store = FakeStore()
    async with fake_store.transaction() as tx:  # what the first migration inserts
        await tx.insert_namespace(namespace=Namespace(seeded.id, seeded.description))
    fake = await _script(fake_store)
    assert len(real) > 40
    for number, (theirs, ours) in enumerate(zip(real, fake, strict=True)):
        assert ours == theirs, f"step {number}"
    logged = [(r["kind"], r["resource"], r["actor"], r["before"], r["after"]) for r in rows]
    ours_logged = [
        (e.event.kind, e.event.resource, e.event.actor, e.event.before, e.event.after)
        for e in fake_store.events
    ]
    assert [_untimed(e) for e in ours_logged] == [_untimed(e) for e in logged]


def _untimed(event: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event row with the times in its snapshots only as 'set' (the clocks differ)."""

    def snapshot(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: "set" if k.endswith("_time") and v else v for k, v in value.items()}

    return (*event[:3], snapshot(event[3]), snapshot(event[4]))


class _Transcript(list[object]):
    async def step(self, call: Awaitable[Any]) -> Any:
        """Await one domain call and record its outcome: a value, or the error it raised."""
        try:
            result = await call
        except RegistryError as exc:
            self.append(_error(exc))
            return None
        self.append(_plain(result))
        return result


async def _script(store: Store) -> list[object]:
    out = _Transcript()
    namespaces, models = Namespaces(store), Models(store)
    versions, aliases = Versions(store), Aliases(store)
    await _namespaces_and_models(out, namespaces, models)
    await _versions(out, versions)
    await _aliases(out, aliases, versions)
    await _lookups_and_lists(out, store, models, versions)
    return out


async def _namespaces_and_models(out: _Transcript, namespaces: Namespaces, models: Models) -> None:
    for _ in range(2):
        await out.step(
            namespaces.create(namespace_id=NS, description="d", actor=ACTOR, request_id="ns")
        )
    await out.step(namespaces.create(namespace_id=NS, description="", actor=ACTOR))
    await out.step(namespaces.create(namespace_id="zed", description="", actor=ACTOR))
    await out.step(namespaces.list(size=1, token=""))
    await out.step(namespaces.get(namespace_id="nope"))
    await out.step(models.create(draft=Model(RESNET, tags=("b", "a")), actor=ACTOR))
    await out.step(models.create(draft=Model(BERT, labels={"k": "v"}), actor=ACTOR))
    await out.step(models.create(draft=Model(RESNET), actor=ACTOR))
    await out.step(models.create(draft=Model(ModelKey("nope", "m")), actor=ACTOR))
    await out.step(
        models.update(
            changes=Model(BERT, description="text"), mask=["description"], etag="", actor=ACTOR
        )
    )
    await out.step(models.update(changes=Model(BERT), mask=["tags"], etag=etag_of(1), actor=ACTOR))


async def _versions(out: _Transcript, versions: Versions) -> None:
    def draft(state: VersionState = READY, **fields: Any) -> ModelVersion:
        return dataclasses.replace(ModelVersion(VersionKey(RESNET, 0), state=state), **fields)

    for state in (READY, PENDING, READY):
        await out.step(versions.create(draft=draft(state), actor=ACTOR))
    for _ in range(2):
        await out.step(
            versions.create(draft=draft(metrics={"acc": 0.5}), actor=ACTOR, request_id="v")
        )
    await out.step(versions.create(draft=draft(description="x"), actor=ACTOR, request_id="v"))
    await out.step(versions.create(draft=draft(VersionState.FAILED), actor=ACTOR))
    one = VersionKey(RESNET, 1)
    await out.step(
        versions.update(
            changes=dataclasses.replace(draft(description="new", tags=("t",)), key=one),
            mask=["description", "tags"],
            etag=etag_of(1),
            actor=ACTOR,
        )
    )
    await out.step(versions.archive(key=one, etag=etag_of(1), actor=ACTOR))
    await out.step(versions.archive(key=one, etag=etag_of(2), actor=ACTOR))
    await out.step(versions.archive(key=VersionKey(RESNET, 2), etag="", actor=ACTOR))
    await out.step(versions.restore(key=one, etag="", actor=ACTOR))
    await out.step(versions.archive(key=VersionKey(RESNET, 9), etag="", actor=ACTOR))


async def _aliases(out: _Transcript, aliases: Aliases, versions: Versions) -> None:
    async def point(number: int, *, etag: str = "", expected: int | None = None) -> None:
        await out.step(
            aliases.set(key=PROD, number=number, etag=etag, expected=expected, actor=ACTOR)
        )

    await point(1, expected=0)
    await point(3)
    await point(3, etag=etag_of(1))  # where it points already: a no-op
    await point(4, etag=etag_of(1))
    await point(4, expected=1)
    await point(2)
    await point(9)
    await out.step(aliases.rollback(key=PROD, etag=etag_of(2), actor=ACTOR, request_id="rb"))
    await out.step(aliases.rollback(key=PROD, etag=etag_of(2), actor=ACTOR, request_id="rb"))
    await out.step(versions.archive(key=VersionKey(RESNET, 1), etag="", actor=ACTOR))
    await out.step(aliases.history(key=PROD, size=2, token=""))
    canary = AliasKey(RESNET, "canary")
    await out.step(aliases.set(key=canary, number=4, etag="", expected=None, actor=ACTOR))
    await out.step(aliases.rollback(key=canary, etag="", actor=ACTOR))
    await out.step(aliases.list(model=RESNET))
    await out.step(aliases.delete(key=canary, etag=etag_of(7), actor=ACTOR))
    await out.step(aliases.delete(key=canary, etag=etag_of(1), actor=ACTOR))
    await out.step(aliases.delete(key=canary, etag="", actor=ACTOR))
    await out.step(aliases.history(key=canary, size=0, token=""))
    await out.step(aliases.list(model=ModelKey(NS, "nope")))


async def _lookups_and_lists(
    out: _Transcript, store: Store, models: Models, versions: Versions
) -> None:
    refs = [
        Reference(RESNET),
        Reference(RESNET, number=2),
        Reference(RESNET, number=7),
        Reference(RESNET, alias="prod"),
        Reference(RESNET, alias="gone"),
        Reference(BERT),
        Reference(ModelKey(NS, "nope")),
    ]
    await out.step(store.resolve_many(refs=refs))
    for order, states in (("", ()), ("number", (READY,))):
        page = await out.step(
            versions.list(model=RESNET, order_by=order, states=states, size=2, token="")
        )
        await out.step(
            versions.list(
                model=RESNET, order_by=order, states=states, size=2, token=page.next_token
            )
        )
    await out.step(versions.list(model=BERT, order_by="", states=(), size=0, token="x"))
    await out.step(models.delete(key=RESNET, etag="", actor=ACTOR))
    await out.step(store.resolve(ref=Reference(RESNET, alias="prod")))
    for order in ("name", "create_time", "create_time desc"):
        for deleted in (False, True):
            await out.step(
                models.list(
                    query=ModelQuery(NS, order_by=order, show_deleted=deleted), size=0, token=""
                )
            )
    await out.step(models.list(query=ModelQuery(NS, tags=("a",)), size=1, token=""))
    await out.step(models.undelete(key=RESNET, etag=etag_of(1), actor=ACTOR))
    await out.step(models.undelete(key=RESNET, etag="", actor=ACTOR))
    await out.step(models.undelete(key=RESNET, etag="", actor=ACTOR))


def _error(exc: RegistryError) -> object:
    violations = exc.violations if isinstance(exc, InvalidArgument) else None
    return (type(exc).__name__, exc.reason, exc.message, exc.metadata, violations)


def _plain(value: Any) -> Any:
    """A comparable form: times only as 'set' (the clocks differ), tokens only as present."""
    if isinstance(value, Page):
        return {"items": _plain(value.items), "more": bool(value.next_token)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, RegistryError):
        return _error(value)
    if isinstance(value, datetime):
        return "set"
    return value.name if isinstance(value, enum.Enum) else value
