"""`pull`: download every file of a version into a directory, verified and resumable.

The reference is resolved once (ListManifest) and the version's resource name is used
from then on, so an alias moving mid-pull cannot mix two versions. Each file streams
into `<dest>/<path>.part`, continuing from that file's size after a cut (or a progress
callback that raised), is checked against its sha256, fsynced and renamed into place.
A file already in place with the right bytes is not fetched again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from pathlib import Path

import grpc

from modelreg.client.artifacts import Meter, Progress, Transport, list_manifest, wrong_state
from modelreg.client.errors import RegistryError
from modelreg.client.files import BLOCK, PartFile, run_bounded, safe_destination
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res

RESUMES = 8  # times one file's download may resume after UNAVAILABLE before pull gives up
_PAUSE = 0.2  # seconds before resuming; doubles each time
_READABLE = (res.MODEL_VERSION_STATE_READY, res.MODEL_VERSION_STATE_ARCHIVED)


async def pull(
    client: Transport,
    reference: str,
    dest: Path,
    *,
    concurrency: int,
    progress: Progress | None,
) -> art.ListManifestResponse:
    """Download the version `reference` names into `dest`; returns its manifest."""
    manifest = await client._run(list_manifest(reference))
    if manifest.state not in _READABLE:
        raise wrong_state(manifest.version, manifest.state, "READY", "pulled")
    targets = [safe_destination(dest, f.path) for f in manifest.files]  # all, before any write
    meter = Meter(progress, "download", manifest.total_size)
    fetch = functools.partial(_fetch, client, manifest.version, meter=meter)
    jobs = (functools.partial(fetch, f, t) for f, t in zip(manifest.files, targets, strict=True))
    await run_bounded(jobs, concurrency)
    return manifest


async def _fetch(
    client: Transport, version: str, file: art.ManifestEntry, target: Path, *, meter: Meter
) -> None:
    if await asyncio.to_thread(_in_place, target, file):
        meter.add(file.size)
        return
    part = await PartFile.open(target, file.size)
    try:
        meter.add(part.offset)
        pause = _PAUSE
        for resumes in range(RESUMES + 1):
            try:
                await _receive(client, version, file, part, meter)
                break
            except RegistryError as error:
                if error.code is not grpc.StatusCode.UNAVAILABLE or resumes == RESUMES:
                    raise
                await asyncio.sleep(pause)
                pause *= 2
        await part.finish(file.size, file.sha256)
    finally:
        await part.close()


async def _receive(
    client: Transport, version: str, file: art.ManifestEntry, part: PartFile, meter: Meter
) -> None:
    if part.offset >= file.size:
        return  # whole already (finish verifies it)
    request = art.DownloadFileRequest(reference=version, path=file.path, offset=part.offset)
    async for message in client._download(request):
        await part.write(message.data)
        meter.add(len(message.data))


def _in_place(target: Path, file: art.ManifestEntry) -> bool:
    """Whether `target` already holds exactly the file's bytes."""
    try:
        if target.stat().st_size != file.size:
            return False
    except FileNotFoundError:
        return False
    digest = hashlib.sha256()
    with target.open("rb", buffering=0) as existing:
        while block := existing.read(BLOCK):
            digest.update(block)
    return digest.hexdigest() == file.sha256
