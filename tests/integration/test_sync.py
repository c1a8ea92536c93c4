"""`modelreg sync` and its Syncer against the real server: `current` flips once per move,
the hook sees the new path, a concurrent reader never sees a half-written version, and a
failing hook or a cut download leaves the previous version serving."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelreg.client import AsyncClient, NotFoundError
from modelreg.client.sync import HookFailed, Syncer, SyncError
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture
async def client(target: str, clean: None) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as sdk:
        yield sdk


@dataclass
class Model:
    """A model with versions pushed from local trees: number -> {path: sha256}."""

    name: str
    files: dict[int, dict[str, str]] = field(default_factory=dict)

    async def push(self, client: AsyncClient, tree: Path) -> res.ModelVersion:
        version = await client.push(self.name, tree)
        self.files[version.number] = digests(tree)
        return version


def write_tree(root: Path, tag: str, *, shared: bytes = b"shared tokenizer\n") -> Path:
    """A model directory: a weights file of 2 MiB unique to `tag`, a nested config, and a
    file whose bytes every tree shares (so later versions reuse it)."""
    (root / "conf").mkdir(parents=True)
    (root / "weights.bin").write_bytes(hashlib.sha256(tag.encode()).digest() * (2 * MiB // 32))
    (root / "conf" / "config.json").write_text(json.dumps({"tag": tag}))
    (root / "tokenizer.txt").write_bytes(shared)
    return root


async def new_model(client: AsyncClient, tmp_path: Path, versions: int) -> Model:
    model = Model(f"default/sync{uuid.uuid4().hex[:8]}")
    await client.create_model(model.name)
    for n in range(versions):
        await model.push(client, write_tree(tmp_path / f"tree{n}", f"{model.name}-{n}"))
    return model


class Reader(threading.Thread):
    """Opens `current` over and over, as a model server would, and checks that every file
    of the version it names holds exactly that version's bytes, with none missing or extra.
    The directory is opened once per round, so one round reads one version."""

    def __init__(self, root: Path, model: Model) -> None:
        super().__init__(daemon=True)
        self.root, self.model = root, model
        self.stop = threading.Event()
        self.rounds: dict[int, int] = {}  # version number -> whole rounds read
        self.violations: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.root / "current", os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # before the first sync
            try:
                self._check(fd)
            finally:
                os.close(fd)

    def _check(self, fd: int) -> None:
        number = int(os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[1])
        expected = self.model.files[number]
        seen = {}
        for folder, _, names in os.walk(f"/proc/self/fd/{fd}"):
            for name in names:
                path = Path(folder, name)
                relative = path.relative_to(f"/proc/self/fd/{fd}").as_posix()
                seen[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        if seen != expected:
            self.violations.append(f"version {number}: {sorted(seen)} vs {sorted(expected)}")
        self.rounds[number] = self.rounds.get(number, 0) + 1


async def test_two_moves_flip_current_twice_run_the_hook_and_never_show_a_half_version(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client, tmp_path, versions=3)
    root, calls = tmp_path / "serve", tmp_path / "hook.log"
    hook = f'echo "$1 $MODELREG_SYNC_NUMBER $MODELREG_SYNC_PREVIOUS" >> {calls}'
    reader = Reader(root, model)
    targets = []
    with Syncer(client, f"{model.name}@prod", root, hook=hook, keep=3) as syncer:
        await client.set_alias(model.name, "prod", 1)
        first = await syncer.sync(await client.resolve(f"{model.name}@prod", strong=True))
        reader.start()
        for number in (2, 3):  # the alias moves twice
            await client.set_alias(model.name, "prod", number)
            synced = await syncer.sync(await client.resolve(f"{model.name}@prod", strong=True))
            targets.append(os.readlink(root / "current"))
            assert synced.reused_files == 1  # tokenizer.txt, linked from the version before
            assert synced.path.joinpath("tokenizer.txt").stat().st_ino == (
                first.path.joinpath("tokenizer.txt").stat().st_ino
            )
        await asyncio.to_thread(_read_once_more, reader)
    assert targets == ["versions/2", "versions/3"]
    lines = calls.read_text().splitlines()
    assert lines == [
        f"{root / 'versions/1'} 1 ",
        f"{root / 'versions/2'} 2 {root / 'versions/1'}",
        f"{root / 'versions/3'} 3 {root / 'versions/2'}",
    ]
    assert reader.violations == []
    assert sum(reader.rounds.values()) > 0


def _read_once_more(reader: Reader) -> None:
    """Stop the reader after it has read at least one more whole round."""
    done = sum(reader.rounds.values())
    while sum(reader.rounds.values()) == done and reader.is_alive():
        pass  # spins on the reader's progress (it reads the current version every round)
    reader.stop.set()
    reader.join()


async def test_a_failing_hook_swaps_current_back_and_keeps_the_download(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client, tmp_path, versions=2)
    root = tmp_path / "serve"
    flag = tmp_path / "fail"
    hook = f"test ! -e {flag}"  # fails while the flag file exists
    with Syncer(client, f"{model.name}:1", root, hook=hook) as syncer:
        flag.touch()
        with pytest.raises(HookFailed) as failed:
            await syncer.sync(await client.resolve(f"{model.name}:1"))
        assert failed.value.returncode == 1
        assert not (root / "current").exists()  # there was none before: there is none
        flag.unlink()
        assert (await syncer.sync(await client.resolve(f"{model.name}:1"))).pulled is False
        flag.touch()
        with pytest.raises(HookFailed):
            await syncer.sync(await client.resolve(f"{model.name}:2"))
        assert os.readlink(root / "current") == "versions/1"
        assert (root / "versions" / "2" / "weights.bin").is_file()  # a retry needs no pull
        flag.unlink()
        retried = await syncer.sync(await client.resolve(f"{model.name}:2"))
    assert (retried.pulled, os.readlink(root / "current")) == (False, "versions/2")


class CutPuller:
    """The Syncer's Puller port around the real client, whose pulls stop (as a cut stream
    or a killed process would) once `cut_after` bytes arrived."""

    def __init__(self, client: AsyncClient, cut_after: int) -> None:
        self._client, self._cut_after = client, cut_after
        self.cuts = 0

    async def list_manifest(self, reference: str) -> art.ListManifestResponse:
        return await self._client.list_manifest(reference)

    async def pull(self, reference: str, dest: str | os.PathLike[str]) -> Any:
        def progress(phase: str, done: int, total: int) -> None:
            if done >= self._cut_after:
                self.cuts += 1
                raise ConnectionResetError("the download was cut")

        return await self._client.pull(reference, dest, concurrency=1, progress=progress)


async def test_a_cut_download_leaves_the_previous_version_serving_and_resumes(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client, tmp_path, versions=2)
    root = tmp_path / "serve"
    with Syncer(client, f"{model.name}@prod", root) as syncer:
        await syncer.sync(await client.resolve(f"{model.name}:1"))
    cut = CutPuller(client, cut_after=MiB)
    with Syncer(cut, f"{model.name}@prod", root) as syncer:
        with pytest.raises(ConnectionResetError):
            await syncer.sync(await client.resolve(f"{model.name}:2"))
        assert cut.cuts == 1
        assert os.readlink(root / "current") == "versions/1"
        assert not (root / "versions" / "2").exists()
        staged = list((root / ".modelreg-sync" / "staging" / "2").rglob("*.part"))
        assert staged  # kept, for the resume
    with Syncer(client, f"{model.name}@prod", root) as syncer:
        await syncer.sync(await client.resolve(f"{model.name}:2"))
    assert os.readlink(root / "current") == "versions/2"
    _assert_holds(root / "current", model.files[2])


async def test_keep_prunes_all_but_the_most_recent_versions(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client, tmp_path, versions=3)
    root = tmp_path / "serve"
    with Syncer(client, model.name, root, keep=2) as syncer:
        for number in (1, 2, 3):
            await syncer.sync(await client.resolve(f"{model.name}:{number}"))
        rollback = await syncer.sync(await client.resolve(f"{model.name}:2"))
    assert rollback.pulled is False  # the previous version was kept: an instant rollback
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["2", "3"]
    assert sorted(p.name for p in (root / ".modelreg-sync" / "manifests").iterdir()) == [
        "2.json",
        "3.json",
    ]
    _assert_holds(root / "current", model.files[2])


async def test_one_syncer_per_directory_and_one_model_per_directory(
    client: AsyncClient, tmp_path: Path
) -> None:
    model = await new_model(client, tmp_path, versions=1)
    root = tmp_path / "serve"
    with Syncer(client, model.name, root) as syncer:
        await syncer.sync(await client.resolve(model.name))
        with pytest.raises(SyncError, match="another sync"), Syncer(client, model.name, root):
            pass
    with pytest.raises(SyncError, match="holds versions of"), Syncer(client, "other/m", root):
        pass


async def test_sync_once_through_the_cli(client: AsyncClient, tmp_path: Path, target: str) -> None:
    model = await new_model(client, tmp_path, versions=2)
    await client.set_alias(model.name, "prod", 1)
    root = tmp_path / "serve"
    status, out, err = await run_cli("sync", f"{model.name}@prod", str(root), "--once", target)
    assert (status, err) == (0, "")
    assert out.startswith(f"synced namespaces/default/models/{model.name.split('/')[1]}/versions/1")
    await client.set_alias(model.name, "prod", 2)
    args = ("sync", f"{model.name}@prod", str(root), "--once", "--exec", "exit 3")
    status, out, err = await run_cli(*args, target)
    assert status == 1
    assert "the hook exited 3" in err
    assert os.readlink(root / "current") == "versions/1"
    status, _, err = await run_cli("sync", f"{model.name}@gone", str(root), "--once", target)
    assert status == 1
    assert "NOT_FOUND" in err
    with pytest.raises(NotFoundError):
        await client.resolve(f"{model.name}@gone")


def digests(tree: Path) -> dict[str, str]:
    """path inside the tree -> sha256 of every file below `tree`."""
    tree = tree.resolve()
    return {
        p.relative_to(tree).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file()
    }


def _assert_holds(directory: Path, files: dict[str, str]) -> None:
    assert digests(directory) == files


async def run_cli(*args: str) -> tuple[int, str, str]:
    """`modelreg ARGS --target TARGET` in a child process (this loop serves the registry)."""
    *command, target = args
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelreg",
        *command,
        "--target",
        target,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_sync_follows_moves_through_the_live_cache(
    client: AsyncClient, tmp_path: Path, target: str
) -> None:
    model = await new_model(client, tmp_path, versions=4)
    await client.set_alias(model.name, "prod", 1)
    root, calls, flag = tmp_path / "serve", tmp_path / "hook.log", tmp_path / "fail"
    hook = f'echo "$1" >> {calls}; test ! -e {flag}'
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelreg", "sync", f"{model.name}@prod", str(root),
        "--exec", hook, "--keep", "4", "--target", target,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    reader = Reader(root, model)
    try:
        assert "/versions/1 " in await _line(proc.stdout)
        reader.start()
        for number in (2, 3):  # two moves: two flips, each announced once it is done
            await client.set_alias(model.name, "prod", number)
            assert f"/versions/{number} " in await _line(proc.stdout)
            assert os.readlink(root / "current") == f"versions/{number}"
        flag.touch()
        await client.set_alias(model.name, "prod", 4)
        assert "the hook exited 1" in await _line(proc.stderr)
        assert os.readlink(root / "current") == "versions/3"
    finally:
        proc.terminate()
        await proc.wait()
        await asyncio.to_thread(_read_once_more, reader)
    assert calls.read_text().splitlines() == [str(root / f"versions/{n}") for n in (1, 2, 3, 4)]
    assert reader.violations == []


async def _line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(60):
        return (await stream.readline()).decode()
