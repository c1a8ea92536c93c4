"""The events every mutation commits: typed subjects, `latest_moved` as the domain rules
decide it, and rows stored as earlier releases wrote them (kind and resource strings)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from modelreg.blobs.fs import FilesystemBlobStore
from modelreg.cache import keys
from modelreg.domain.aliases import Aliases
from modelreg.domain.artifacts import Artifacts
from modelreg.domain.events import Event, EventKind, Subject
from modelreg.domain.models import Models
from modelreg.domain.names import AliasKey, ModelKey, NamespaceKey, VersionKey
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.types import Model, ModelVersion, VersionState
from modelreg.domain.versions import Versions
from modelreg.store.postgres import PostgresStore, create_pool

MODEL = ModelKey("team", "resnet")
V1, V2 = VersionKey(MODEL, 1), VersionKey(MODEL, 2)
PROD = AliasKey(MODEL, "production")


class Recorder:
    """A CommitListener (our own port) that keeps what it hears."""

    def __init__(self) -> None:
        self.heard: list[Event] = []

    async def __call__(self, events: Sequence[Event]) -> None:
        self.heard += events


@pytest.fixture
async def pool(database_url: str, clean: None) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _mutate_everything(store: PostgresStore, blob_root: Path) -> None:
    models, versions, aliases = Models(store), Versions(store), Aliases(store)
    artifacts = Artifacts(store=store, blobs=FilesystemBlobStore(blob_root))
    await Namespaces(store).create(namespace_id="team", description="", actor="alice")
    await models.create(draft=Model(key=MODEL), actor="alice")
    await models.update(changes=Model(key=MODEL), mask=["description"], etag="", actor="alice")
    ready = ModelVersion(key=V1, state=VersionState.READY)
    await versions.create(draft=ready, actor="alice")
    await versions.create(draft=ModelVersion(key=V2), actor="alice")  # PENDING
    await versions.update(changes=ModelVersion(key=V2), mask=["tags"], etag="", actor="alice")
    await artifacts.finalize(key=V2, files=[], etag="", actor="alice")
    await versions.archive(key=V2, etag="", actor="alice")
    await versions.restore(key=V2, etag="", actor="alice")
    await aliases.set(key=PROD, number=1, etag="", expected=None, actor="alice")
    await aliases.delete(key=PROD, etag="", actor="alice")
    await models.delete(key=MODEL, etag="", actor="alice")
    await models.undelete(key=MODEL, etag="", actor="alice")
    await versions.create(draft=ModelVersion(key=V2), actor="alice")  # v3, PENDING
    await artifacts.fail(key=VersionKey(MODEL, 3), etag="", actor="alice")


# what each mutation above commits: kind, subject, latest_moved
EXPECTED: list[tuple[EventKind, Subject, bool]] = [
    (EventKind.NAMESPACE_CREATED, NamespaceKey("team"), False),
    (EventKind.MODEL_CREATED, MODEL, False),
    (EventKind.MODEL_UPDATED, MODEL, False),
    (EventKind.VERSION_CREATED, V1, True),  # created READY
    (EventKind.VERSION_CREATED, V2, False),  # created PENDING
    (EventKind.VERSION_UPDATED, V2, False),
    (EventKind.VERSION_FINALIZED, V2, True),
    (EventKind.VERSION_ARCHIVED, V2, True),
    (EventKind.VERSION_RESTORED, V2, True),
    (EventKind.ALIAS_SET, PROD, False),
    (EventKind.ALIAS_DELETED, PROD, False),
    (EventKind.MODEL_DELETED, MODEL, True),
    (EventKind.MODEL_UNDELETED, MODEL, True),
    (EventKind.VERSION_CREATED, VersionKey(MODEL, 3), False),
    (EventKind.VERSION_FAILED, VersionKey(MODEL, 3), False),
]


async def test_each_mutation_commits_a_typed_event_stored_as_before(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    recorder = Recorder()
    await _mutate_everything(PostgresStore(pool, on_commit=recorder), tmp_path)
    heard = [(e.kind, e.subject, e.latest_moved) for e in recorder.heard]
    assert heard == EXPECTED
    rows = await db.fetch("SELECT ns, kind, resource, model_id FROM events ORDER BY event_id")
    assert [(r["ns"], r["kind"], r["resource"]) for r in rows] == [
        ("team", kind.value, subject.name) for kind, subject, _ in EXPECTED
    ]
    assert rows[0]["model_id"] is None
    assert all(r["model_id"] is not None for r in rows[1:])


async def test_committed_events_stale_the_keys_a_walk_reads(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    recorder = Recorder()
    await _mutate_everything(PostgresStore(pool, on_commit=recorder), tmp_path)
    stale = set(keys.invalidated_by(recorder.heard)["team/resnet"])
    assert stale == {
        keys.state_key(MODEL),
        keys.model_key(MODEL),
        keys.pointer_key(MODEL, "latest"),
        keys.pointer_key(MODEL, "production"),
        *(keys.version_key(MODEL, n) for n in (1, 2, 3)),
    }
