"""`push` and `pull` end to end: the SDK (both clients) and the CLI against the real gRPC
server, on the filesystem store and on S3 (moto): byte-identical round trips, dedup,
resumed uploads and downloads, and refusals that leave nothing READY."""

from __future__ import annotations

import asyncio
import filecmp
import hashlib
import itertools
import json
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from modelreg.client import (
    AsyncClient,
    Client,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from modelreg.client.artifacts import Received
from modelreg.client.calls import Call
from modelreg.client.push import push
from modelreg.domain.artifacts import manifest_digest
from modelreg.domain.types import VersionFile
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res
from tests.integration.conftest import ArtifactServer

MiB = 1024 * 1024
BIG = 64 * MiB + 4099  # over 64 MiB, and not a whole number of chunks or S3 parts
T = TypeVar("T")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory: a large file, nested directories, an empty file."""
    root = tmp_path_factory.mktemp("tree")
    seed = random.randrange(2**32)  # bytes other modules' tests (sharing a bucket) never store
    _write_random(root / "weights" / "model.bin", BIG, seed=seed)
    _write_random(root / "tokenizer" / "vocab.bin", 3 * MiB + 1, seed=seed + 1)
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "config.json").write_text('{"layers": 12}\n')
    (root / "empty").touch()
    return root


@pytest.fixture(params=["fs", "s3"])
def registry(request: pytest.FixtureRequest, clean: None) -> str:
    """The address of a registry with its blobs on the filesystem, or on S3."""
    if request.param == "fs":
        target: str = request.getfixturevalue("target")
        return target
    s3: ArtifactServer = request.getfixturevalue("s3_server")
    if s3.running.services.local is not None:
        s3.running.services.local.clear()  # `clean` empties the other server's cache only
    return s3.target


@pytest.fixture
async def client(registry: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(registry) as sdk:
        yield sdk


async def new_model(client: AsyncClient) -> str:
    model = f"default/m{uuid.uuid4().hex[:10]}"
    await client.create_model(model)
    return model


# --- round trips ----------------------------------------------------------------------------


async def test_push_then_pull_a_directory_byte_identical(
    client: AsyncClient, tree: Path, tmp_path: Path
) -> None:
    model = await new_model(client)
    phases: dict[str, tuple[int, int]] = {}

    def progress(phase: str, done: int, total: int) -> None:
        phases[phase] = (done, total)

    version = await client.push(model, tree, progress=progress)

    assert version.state == res.MODEL_VERSION_STATE_READY
    assert version.digest == manifest_digest(local_manifest(tree))
    assert version.total_size == tree_size(tree)
    assert phases["hash"] == (tree_size(tree), tree_size(tree))
    assert phases["upload"][0] == phases["upload"][1]  # all it had to send (none if stored)
    manifest = await client.pull(model, tmp_path / "out")
    assert manifest.version == version.name
    assert manifest.digest == version.digest
    assert_same_tree(tree, tmp_path / "out")


async def test_the_blocking_client_runs_push_and_pull_in_a_private_loop(
    registry: str, client: AsyncClient, tree: Path, tmp_path: Path
) -> None:
    model = await new_model(client)
    with Client(registry) as blocking:  # in a thread: this one runs the server's loop
        version = await asyncio.to_thread(blocking.push, model, tree / "config.json")
        await asyncio.to_thread(blocking.pull, f"{model}:{version.number}", tmp_path)
    assert version.state == res.MODEL_VERSION_STATE_READY
    assert (tmp_path / "config.json").read_bytes() == (tree / "config.json").read_bytes()


async def test_push_and_pull_through_the_cli(
    registry: str, client: AsyncClient, tree: Path, tmp_path: Path
) -> None:
    model = await new_model(client)
    pushed = await modelreg("push", model, str(tree), "--concurrency", "2", target=registry)
    name, digest = pushed.split()
    assert digest == manifest_digest(local_manifest(tree))
    await modelreg("pull", model, str(tmp_path / "out"), "--quiet", target=registry)
    assert_same_tree(tree, tmp_path / "out")
    assert name == (await client.resolve(model)).name


# --- dedup and resume -----------------------------------------------------------------------


async def test_the_same_files_under_a_second_model_upload_no_data(
    client: AsyncClient, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)  # bytes no earlier test stored
    _write_random(tmp_path / "weights.bin", 9 * MiB + 5, seed=seed)
    _write_random(tmp_path / "sub" / "head.bin", 70_001, seed=seed + 1)
    (tmp_path / "empty").touch()
    first = Recorder(client)
    await push_with(first, await new_model(client), tmp_path)
    assert first.data_sent == tree_size(tmp_path)
    second = Recorder(client)
    version = await push_with(second, await new_model(client), tmp_path)
    assert version.state == res.MODEL_VERSION_STATE_READY
    assert second.data_sent == 0
    assert len(second.replies) == 3
    assert all(r.complete and (r.deduplicated or r.file.size == 0) for r in second.replies)


async def test_a_push_cut_mid_file_resumes_from_the_committed_size(
    client: AsyncClient, tmp_path: Path
) -> None:
    size, cut = 20 * MiB + 7, 12 * MiB
    source = tmp_path / "model.bin"
    _write_random(source, size, seed=random.randrange(2**32))  # bytes no earlier test stored
    cutting = Recorder(client, cut_after=cut)
    version = await push_with(cutting, await new_model(client), source)
    assert cutting.cuts == 1
    resumed_at = [r.committed_size for r in cutting.replies if not r.complete]
    assert resumed_at
    assert 0 < resumed_at[0] <= cut  # what the server held (S3: whole parts), not 0
    assert cutting.data_sent == cut + size - resumed_at[0]  # the resume did not start over
    await client.pull(version.name, tmp_path / "out")
    assert filecmp.cmp(source, tmp_path / "out" / "model.bin", shallow=False)


async def test_a_pull_cut_mid_file_resumes_from_its_part_file(
    client: AsyncClient, tree: Path, tmp_path: Path
) -> None:
    model = await new_model(client)
    await client.push(model, tree)
    out = tmp_path / "out"

    def stop_after_20_mib(phase: str, done: int, total: int) -> None:
        if done > 20 * MiB:
            raise Stop  # e.g. a UI's cancel button, mid-download

    with pytest.raises(Stop):
        await client.pull(model, out, concurrency=1, progress=stop_after_20_mib)
    part = out / "weights" / "model.bin.part"
    assert 0 < part.stat().st_size < BIG
    assert not (out / "weights" / "model.bin").exists()
    kept = part.stat().st_size - 12_345  # resume from an offset no message boundary meets
    os.truncate(part, kept)
    seen = [0]
    await client.pull(model, out, concurrency=1, progress=lambda _, done, __: seen.append(done))
    jumps = [after - before for before, after in itertools.pairwise(seen)]
    assert max(jumps) >= kept  # the kept bytes were counted at once, not fetched again
    assert_same_tree(tree, out)


async def test_a_corrupt_part_file_is_refused_then_fetched_again(
    client: AsyncClient, tree: Path, tmp_path: Path
) -> None:
    model = await new_model(client)
    await client.push(model, tree / "tokenizer")
    part = tmp_path / "vocab.bin.part"
    part.write_bytes(b"\0" * (3 * MiB + 1))  # whole length, wrong bytes
    with pytest.raises(DataLossError) as caught:
        await client.pull(model, tmp_path)
    assert caught.value.reason == "DIGEST_MISMATCH"
    assert not part.exists()
    await client.pull(model, tmp_path)
    assert filecmp.cmp(tree / "tokenizer" / "vocab.bin", tmp_path / "vocab.bin", shallow=False)


# --- the same files again ------------------------------------------------------------------


async def test_if_changed_makes_no_version_for_the_files_of_the_latest_ready_one(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client)
    (tmp_path / "config.json").write_text('{"layers": 12}\n')
    first = await client.push_report(model, tmp_path, if_changed=True)
    assert (first.version.number, first.created, first.previous) == (1, True, None)
    again = await client.push_report(model, tmp_path, if_changed=True)
    assert (again.version.name, again.created) == (first.version.name, False)
    assert again.version.digest == manifest_digest(local_manifest(tmp_path))
    (tmp_path / "config.json").write_text('{"layers": 24}\n')
    changed = await client.push(model, tmp_path, if_changed=True)
    assert (changed.number, changed.state) == (2, res.MODEL_VERSION_STATE_READY)
    await client.create_version(model, ready=True)  # now the latest READY one: no files
    after = await client.push_report(model, tmp_path, if_changed=True)
    assert (after.version.number, after.created) == (4, True)  # compared with 3, not 2
    numbers = [v.number async for v in client.list_versions(model, order_by="number")]
    assert numbers == [1, 2, 3, 4]


async def test_without_if_changed_the_same_files_make_a_version_and_say_so(
    registry: str, client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client)
    (tmp_path / "config.json").write_text('{"layers": 12}\n')
    first = await client.push(model, tmp_path)
    again = await client.push_report(model, tmp_path)
    assert (again.version.number, again.created, again.repeats_previous) == (2, True, True)
    assert again.previous is not None
    assert again.previous.name == first.name
    status, out, err = await run_cli("push", model, str(tmp_path), target=registry)
    version = await client.resolve(model)
    assert (status, out) == (0, f"{version.name}  {version.digest}\n")
    assert err == (
        f"note: {version.name} holds the same files as {again.version.name};"
        " with --if-changed, push makes no new version then\n"
    )
    status, out, err = await run_cli("push", model, str(tmp_path), "--if-changed", target=registry)
    assert (status, out, err) == (
        0,
        f"{version.name}  {version.digest}  unchanged: no new version\n",
        "",
    )
    status, out, err = await run_cli(
        "push", model, str(tmp_path), "--if-changed", "--json", target=registry
    )
    assert (status, json.loads(out)["name"]) == (0, version.name)
    assert err == f"note: {version.name}  {version.digest}  unchanged: no new version\n"
    assert (await client.resolve(model)).number == 3


async def test_if_changed_refuses_a_version_and_leaves_it_as_it_was(
    client: AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text("{}\n")
    model = await new_model(client)
    pending = await client.create_version(model)
    with pytest.raises(InvalidArgumentError) as caught:
        await client.push(f"{model}:{pending.number}", tmp_path, if_changed=True)
    assert caught.value.reason == "IF_CHANGED_NEEDS_MODEL"
    manifest = await client.list_manifest(pending.name)
    assert (manifest.state, len(manifest.files)) == (res.MODEL_VERSION_STATE_PENDING, 0)


# --- refusals -------------------------------------------------------------------------------


async def test_push_into_a_ready_version_fails_and_changes_nothing(
    client: AsyncClient, tree: Path
) -> None:
    model = await new_model(client)
    ready = await client.create_version(model, ready=True)
    with pytest.raises(FailedPreconditionError) as caught:
        await client.push(f"{model}:{ready.number}", tree)
    assert caught.value.reason == "VERSION_NOT_PENDING"
    manifest = await client.list_manifest(ready.name)
    assert (manifest.state, len(manifest.files)) == (res.MODEL_VERSION_STATE_READY, 0)


async def test_a_refused_file_leaves_the_version_pending_or_failed_on_request(
    client: AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "bad\\name").write_bytes(b"x")  # a legal name here, refused by the registry
    model = await new_model(client)
    with pytest.raises(InvalidArgumentError):
        await client.push(model, tmp_path)
    with pytest.raises(InvalidArgumentError):
        await client.push(model, tmp_path, fail_on_error=True)
    first, second = [v async for v in client.list_versions(model, order_by="number")]
    assert first.state == res.MODEL_VERSION_STATE_PENDING
    assert second.state == res.MODEL_VERSION_STATE_FAILED


async def test_pull_refuses_a_version_that_is_not_ready(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client)
    pending = await client.create_version(model)
    with pytest.raises(FailedPreconditionError) as caught:
        await client.pull(pending.name, tmp_path / "out")
    assert caught.value.reason == "VERSION_NOT_READY"
    assert not (tmp_path / "out").exists()


# --- helpers --------------------------------------------------------------------------------


class Stop(Exception):
    """Raised by a progress callback to stop a transfer."""


class Recorder:
    """The port push talks through (modelreg.client.artifacts.Transport), forwarding to a
    real AsyncClient and recording each upload's reply and the data bytes sent. With
    `cut_after`, the first stream to reach that many bytes ends there and its reply is
    lost (UNAVAILABLE), as when a connection drops."""

    def __init__(self, client: AsyncClient, cut_after: int | None = None) -> None:
        self._client, self._cut_after = client, cut_after
        self.replies: list[art.UploadFileResponse] = []
        self.data_sent = 0
        self.cuts = 0

    async def _run(self, call: Call[T]) -> T:
        return await self._client._run(call)

    async def _upload(
        self, requests: AsyncIterator[art.UploadFileRequest]
    ) -> art.UploadFileResponse:
        cut = self._cut_after is not None and self.cuts == 0
        reply = await self._client._upload(self._counted(requests, cut))
        self.replies.append(reply)
        if cut and not reply.complete:
            self.cuts += 1
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "connection dropped")
        return reply

    async def _counted(
        self, requests: AsyncIterator[art.UploadFileRequest], cut: bool
    ) -> AsyncIterator[art.UploadFileRequest]:
        streamed = 0
        async for request in requests:
            if cut and self._cut_after is not None and streamed >= self._cut_after:
                return  # the stream ends early: the server keeps what it committed
            streamed += len(request.data)
            self.data_sent += len(request.data)
            yield request

    def _download(self, request: art.DownloadFileRequest) -> AsyncIterator[Received]:
        return self._client._download(request)


async def push_with(transport: Recorder, model: str, path: Path) -> res.ModelVersion:
    return await push(
        transport,
        model,
        path,
        finalize=True,
        concurrency=4,
        chunk_size=256 * 1024,
        progress=None,
        fail_on_error=False,
    )


async def modelreg(*args: str, target: str) -> str:
    """Run the CLI in a child process (this one's loop serves the registry meanwhile)."""
    status, out, err = await run_cli(*args, target=target)
    assert status == 0, f"modelreg {' '.join(args)}: {err}"
    assert not err, "no progress bar when stderr is not a terminal"
    return out


async def run_cli(*args: str, target: str) -> tuple[int, str, str]:
    """The CLI in a child process: its exit status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelreg",
        *args,
        "--target",
        target,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def local_manifest(root: Path) -> list[VersionFile]:
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while block := source.read(MiB):
                digest.update(block)
        files.append(
            VersionFile(path.relative_to(root).as_posix(), path.stat().st_size, digest.hexdigest())
        )
    return files


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def assert_same_tree(expected: Path, actual: Path) -> None:
    def files(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    assert files(actual) == files(expected)  # no .part left behind
    for name in files(expected):
        assert filecmp.cmp(expected / name, actual / name, shallow=False), name


def _write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for start in range(0, size, MiB):
            out.write(rng.randbytes(min(MiB, size - start)))
