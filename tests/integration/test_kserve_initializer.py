"""`modelreg-storage-initializer SRC_URI DEST_DIR`, KServe's calling convention, as a child
process against the real server: each URI form pins a version, every file arrives
verified, the pinned version is printed, and failures exit with their documented status."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelreg.cli.initializer import reference_of
from modelreg.client import AsyncClient, InvalidArgumentError

pytestmark = pytest.mark.slow


@pytest.fixture
async def client(target: str, clean: None) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as sdk:
        yield sdk


async def initializer(target: str, *args: str) -> tuple[int, str, str]:
    """The initializer in a child process, as KServe's init container runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TARGET"] = target
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    script = Path(sys.executable).with_name("modelreg-storage-initializer")
    proc = await asyncio.create_subprocess_exec(
        str(script), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def tree(root: Path, tag: str) -> dict[str, str]:
    (root / "sub").mkdir(parents=True)
    (root / "model.bin").write_bytes(tag.encode() * 300_000)
    (root / "sub" / "config.json").write_text(f'{{"tag": "{tag}"}}')
    return digests(root)


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


async def test_every_uri_form_pins_a_version_and_writes_its_verified_files(
    client: AsyncClient, target: str, tmp_path: Path
) -> None:
    model = f"default/kserve{uuid.uuid4().hex[:8]}"
    await client.create_model(model)
    files = {}
    for n in (1, 2):
        files[n] = tree(tmp_path / f"src{n}", f"v{n}")
        await client.push(model, tmp_path / f"src{n}")
    await client.set_alias(model, "production", 1)
    cases = {
        f"modelreg://{model}@production": 1,
        f"modelreg://{model}@1": 1,
        f"modelreg://{model}:2": 2,
        f"modelreg://{model}@latest": 2,
        f"modelreg://{model}/": 2,
    }
    for index, (uri, number) in enumerate(cases.items()):
        dest = tmp_path / f"mnt{index}"
        status, out, err = await initializer(target, uri, str(dest))
        version = await client.get_version(f"{model}:{number}")
        assert (status, err) == (0, ""), uri
        assert out == f"{version.name} {version.digest}\n", uri
        assert digests(dest) == files[number], uri


async def test_several_pairs_as_kserve_appends_them(
    client: AsyncClient, target: str, tmp_path: Path
) -> None:
    model = f"default/kserve{uuid.uuid4().hex[:8]}"
    await client.create_model(model)
    files = tree(tmp_path / "src", "only")
    await client.push(model, tmp_path / "src")
    args = (
        f"modelreg://{model}",
        str(tmp_path / "a"),
        f"modelreg://{model}@1",
        str(tmp_path / "b"),
    )
    status, out, _ = await initializer(target, *args)
    assert status == 0
    assert len(out.splitlines()) == 2
    assert digests(tmp_path / "a") == digests(tmp_path / "b") == files


async def test_failures_exit_with_their_status_and_write_nothing(
    client: AsyncClient, target: str, tmp_path: Path
) -> None:
    model = f"default/kserve{uuid.uuid4().hex[:8]}"
    await client.create_model(model)
    await client.create_version(model)  # PENDING: not servable
    dest = tmp_path / "mnt"
    status, _, err = await initializer(target, f"modelreg://{model}@gone", str(dest))
    assert (status, "NOT_FOUND" in err) == (1, True)
    status, _, err = await initializer(target, f"modelreg://{model}:1", str(dest))
    assert (status, "PENDING" in err) == (1, True)
    status, _, err = await initializer(target, f"s3://{model}", str(dest))
    assert (status, "is not a modelreg://" in err) == (2, True)
    assert (await initializer(target, f"modelreg://{model}"))[0] == 2  # no DEST_DIR
    status, _, err = await initializer("127.0.0.1:1", f"modelreg://{model}", str(dest))
    assert (status, "no registry answered" in err) == (3, True)
    assert not dest.exists()


@pytest.mark.parametrize(
    ("uri", "reference"),
    [
        ("modelreg://vision/resnet@production", "vision/resnet@production"),
        ("modelreg://vision/resnet@7", "vision/resnet:7"),
        ("modelreg://vision/resnet:7", "vision/resnet:7"),
        ("modelreg://vision/resnet@latest", "vision/resnet@latest"),
        ("modelreg://vision/resnet", "vision/resnet"),
        ("modelreg://resnet@prod/", "resnet@prod"),
    ],
)
def test_uri_to_reference(uri: str, reference: str) -> None:
    assert reference_of(uri) == reference


@pytest.mark.parametrize(
    "uri",
    ["", "modelreg://", "s3://b/k", "modelreg://a/b/c@x", "modelreg://m@x?y=1", "modelreg://M@x"],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidArgumentError):
        reference_of(uri)
