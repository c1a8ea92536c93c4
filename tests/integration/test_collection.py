"""Orphaned blobs are collected on a schedule, and never out from under an upload that
links the same bytes at the same moment."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from modelreg.config import Settings
from modelreg.domain.names import parse_version_name
from modelreg.domain.uploads import Chunk, UploadHeader, Uploads
from modelreg.v1 import artifact_service_pb2 as art
from tests.integration.conftest import (
    ArtifactServer,
    HookedBlobs,
    blob_settings,
    serve_artifacts,
)
from tests.integration.test_artifacts import (
    assert_store_lacks,
    download,
    entry,
    finalize,
    new_version,
    upload,
)


@pytest.fixture
async def sweeping(
    store: ArtifactServer, database_url: str, s3_endpoint_url: str, tmp_path: Path
) -> AsyncIterator[ArtifactServer]:
    """A server on `store`'s database and blobs that collects orphans every 0.2 s, with
    no grace period."""
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        grace_seconds=1,
        home=tmp_path / "sweeping",
        collect_interval_seconds=0.2,
        orphan_grace_seconds=0,
        **blob_settings(store, s3_endpoint_url),  # type: ignore[arg-type]
    )
    async with AsyncExitStack() as stack:
        yield await serve_artifacts(store.kind, settings, stack, blob_root=store.blob_root)


async def fail(server: ArtifactServer, version: str) -> None:
    await server.artifacts.FailModelVersion(art.FailModelVersionRequest(name=version))


async def test_orphans_are_collected_on_schedule_and_live_blobs_kept(
    store: ArtifactServer, sweeping: ArtifactServer, s3_client: Any
) -> None:
    orphan, shared = b"only in a failed version" * 100, b"also in a ready version" * 100
    doomed = await new_version(sweeping, "doomed")
    for name, data in (("o.bin", orphan), ("s.bin", shared)):
        await upload(sweeping, doomed, entry(name, data), data)
    kept = await new_version(sweeping, "kept")
    await upload(sweeping, kept, entry("s.bin", shared), shared)
    await finalize(sweeping, kept, [entry("s.bin", shared)])

    await fail(sweeping, doomed)

    for _ in range(200):  # generous: a loaded CI machine
        missing = await sweeping.artifacts.FindMissingBlobs(
            art.FindMissingBlobsRequest(sha256=[entry("", orphan).sha256])
        )
        if missing.missing_sha256:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the orphan was never collected")
    await assert_store_lacks(store, s3_client, entry("", orphan).sha256)
    assert (await download(sweeping, kept, "s.bin"))[1] == shared


async def later(delay: float, collect: Any) -> list[str]:
    """Collect after `delay` seconds: the rounds sweep the moment of collection across
    the upload's steps (begin, check the bytes, link)."""
    await asyncio.sleep(delay)
    collected: list[str] = await collect(grace_seconds=0)
    return collected


@pytest.mark.slow
async def test_a_blob_linked_while_it_is_being_collected_is_never_lost(
    store: ArtifactServer,
) -> None:
    """Collection (grace 0) races an upload that finds the bytes present and links them
    without sending data: either the link wins and the bytes stay, or the collection wins
    and the upload sends the bytes after all. Never a READY file without its bytes."""
    collect = store.running.services.artifacts.collect_orphans
    linked = sent = 0
    for round_ in range(12):
        data = random.Random(round_).randbytes(50_000)
        file = entry("w.bin", data)
        first = await new_version(store, f"first{round_}")
        await upload(store, first, file, data)
        await fail(store, first)  # its blob is now an orphan
        second = await new_version(store, f"second{round_}")

        reply, _ = await asyncio.gather(
            upload(store, second, file, data, finish=True), later(round_ / 200, collect)
        )

        assert reply.complete
        linked += reply.deduplicated
        sent += not reply.deduplicated
        await finalize(store, second, [file])
        assert (await download(store, second, "w.bin"))[1] == data
    assert linked + sent == 12


async def test_a_blob_being_uploaded_is_not_collected_between_publish_and_link(
    store: ArtifactServer,
) -> None:
    services = store.running.services

    async def collect_right_after(publish: Callable[[], Awaitable[None]]) -> None:
        await publish()  # the bytes are in, not yet linked to the version
        await services.artifacts.collect_orphans(grace_seconds=0)

    racing = HookedBlobs(services.blobs, publish=collect_right_after)
    uploads = Uploads(store=services.store, leases=services.store, blobs=racing)
    data = random.Random(22).randbytes(300_000)
    file = entry("w.bin", data)
    version = await new_version(store)
    header = UploadHeader(parse_version_name(version), file, "publish-then-link")

    async def chunks() -> AsyncIterator[Chunk]:
        yield Chunk(data, finish=True)

    status = await uploads.upload(header=header, chunks=chunks(), actor="t")

    assert status.complete
    await finalize(store, version, [file])
    assert (await download(store, version, "w.bin"))[1] == data
