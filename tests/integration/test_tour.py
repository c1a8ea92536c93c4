"""The README's five-minute tour, as a new user runs it: `modelreg serve` on the embedded
default (no configuration), and the tour's shell block, read out of README.md and run
line by line in one bash from an empty directory standing for the clone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelreg.client.artifacts import LocalFile
from modelreg.client.push import manifest_digest
from tests.integration.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
RESNET = "namespaces/vision/models/resnet"
_MARK = "@@tour-step"


@dataclass(frozen=True)
class Step:
    """One line of the tour and what it did."""

    line: str
    out: str
    err: str
    status: int


def tour_lines() -> list[str]:
    """The commands of the README's tour block, comments and blank lines left out; the
    `source .venv/bin/activate` line stands for the PATH the test gives bash."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A five-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "source "))]


def run_tour(clone: Path, scratch_parent: Path, target: str, home: Path) -> list[Step]:
    """Run every tour line in one bash (so `cd` carries), from `clone`, each line's output
    and status told apart by markers."""
    lines = tour_lines()
    script = []
    for index, line in enumerate(lines):
        marker = f"printf '\\n{_MARK} %d\\n' {index}"
        # `(exit ...)` gives each line the previous line's $?, as typed in a terminal
        script += [f'{marker}; {marker} >&2; (exit "${{status:-0}}")', line]
        script.append(f"status=$?; printf '\\n{_MARK} status %d\\n' \"$status\"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env |= {
        "MODELREG_TARGET": target,  # `make run`'s address in the README; a free port here
        # the server's home, the default one for a user who ran `make run`: the CLI finds
        # the admin key its first start wrote there (authentication is on)
        "MODELREG_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "TMPDIR": str(scratch_parent),  # where `mktemp -d` makes the scratch directory
    }
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outs, errs = _split(done.stdout), _split(done.stderr)
    return [
        Step(line, outs[i][0], errs[i][0] if i in errs else "", outs[i][1])
        for i, line in enumerate(lines)
    ]


def _split(text: str) -> dict[int, tuple[str, int]]:
    """Marker-separated output -> {step: (its text, its status)}."""
    steps: dict[int, tuple[str, int]] = {}
    parts = re.split(rf"\n{_MARK} (\d+)\n", text)
    for index, chunk in zip(parts[1::2], parts[2::2], strict=True):
        body, _, status = chunk.partition(f"\n{_MARK} status ")
        steps[int(index)] = (body, int(status) if status else -1)
    return steps


def fields(text: str) -> dict[str, str]:
    """`key: value` lines as the CLI prints one message."""
    return {k: v.strip() for k, v in (line.split(": ", 1) for line in text.splitlines())}


def rows(text: str) -> list[list[str]]:
    """A table's rows (header dropped), split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:]]


def digest_of(directory: Path) -> str:
    """The digest the server gives these files (the client computes it as the server does:
    tests/unit/test_cli_parse.py holds the two equal)."""
    files = [
        LocalFile(p.name, str(p), p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in directory.iterdir()
    ]
    return manifest_digest(files)


class Tour:
    """The tour's steps by line, its trailing comment dropped."""

    def __init__(self, steps: list[Step]) -> None:
        self._steps = {step.line.split("  #")[0].strip(): step for step in steps}

    def __getitem__(self, line: str) -> Step:
        return self._steps[line]

    def out(self, line: str) -> str:
        return self._steps[line].out


@pytest.fixture
def home() -> Iterator[Path]:
    """A MODELREG_HOME outside pytest's tmp_path, whose base pytest makes 0700 again at
    every session start: the embedded server runs as its own user and must reach it."""
    parent = Path(tempfile.mkdtemp(prefix="modelreg-test-tour-"))
    yield parent / "home"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_the_readme_tour_runs_literally_and_prints_what_it_says(tmp_path: Path, home: Path) -> None:
    clone, scratch = tmp_path / "clone", tmp_path / "tmp"
    clone.mkdir()
    scratch.mkdir()
    server = ServerProcess(tmp_path / "serve.log", MODELREG_HOME=str(home))
    try:
        server.wait_serving()
        steps = run_tour(clone, scratch, server.target, home)
    finally:
        assert server.stop() == 0, server.output()
    assert "embedded" in server.output()
    for step in steps:
        expected = 4 if step.line.startswith("modelreg batch-get") else 0
        assert step.status == expected, f"{step.line}: {step.err}"
    tour = Tour(steps)
    check_models_and_versions(tour)
    check_aliases(tour)
    check_lookups(tour)
    (work,) = scratch.iterdir()  # the tour's `cd "$(mktemp -d)"`
    check_push_and_pull(tour, work)
    assert list(clone.iterdir()) == [], "the tour writes nothing into the clone"
    check_restart_keeps_data_and_deleting_home_resets_it(home, tmp_path)


def check_models_and_versions(tour: Tour) -> None:
    assert fields(tour.out("modelreg namespaces create vision"))["name"] == "namespaces/vision"
    model = fields(
        tour.out('modelreg models create vision/resnet --description "image classifier" --tag cv')
    )
    assert (model["name"], model["description"], model["tags"]) == (
        RESNET, "image classifier", "cv",
    )  # fmt: skip
    assert model["latest_version_number"] == "(none)"
    first = fields(
        tour.out(
            "modelreg versions create vision/resnet --ready --metric top1=0.76 --run-id run-17"
        )
    )
    assert (first["number"], first["state"], first["metrics"]) == ("1", "READY", "top1=0.76")
    assert first["source.run_id"] == "run-17"
    listed = rows(tour.out("modelreg versions list vision/resnet"))
    assert [(r[0], r[1], r[2]) for r in listed] == [
        (f"{RESNET}/versions/{n}", str(n), "READY") for n in (3, 2, 1)
    ]


def check_aliases(tour: Tour) -> None:
    created = fields(tour.out("modelreg alias set vision/resnet production 2"))
    assert (created["alias.version_number"], created["previous_version_number"]) == ("2", "(none)")
    moved = fields(tour.out("modelreg alias set vision/resnet production 3"))
    assert (moved["alias.version_number"], moved["previous_version_number"]) == ("3", "2")
    back = fields(tour.out("modelreg alias rollback vision/resnet production"))
    assert (back["alias.version_number"], back["previous_version_number"]) == ("2", "3")
    history = rows(tour.out("modelreg alias history vision/resnet production"))
    assert [(r[1], r[2], r[3]) for r in history] == [
        ("3", "2", "admin"), ("2", "3", "admin"), ("(none)", "2", "admin"),
    ]  # fmt: skip


def check_lookups(tour: Tour) -> None:
    serving = json.loads(tour.out("modelreg resolve vision/resnet@production --json"))
    assert (serving["name"], serving["number"]) == (f"{RESNET}/versions/2", "2")
    assert fields(tour.out("modelreg resolve vision/resnet:3"))["number"] == "3"
    assert fields(tour.out("modelreg resolve vision/resnet"))["number"] == "3"
    batch = tour["modelreg batch-get vision/resnet@production vision/resnet:1 vision/nope"]
    assert [r[:3] for r in rows(batch.out)] == [
        ["vision/resnet@production", f"{RESNET}/versions/2", "READY"],
        ["vision/resnet:1", f"{RESNET}/versions/1", "READY"],
        ["vision/nope", "NOT_FOUND: namespaces/vision/models/nope not found"],
    ]
    assert batch.err.splitlines() == [
        "error: vision/nope: NOT_FOUND: namespaces/vision/models/nope not found",
        "batch-get: 1 of 3 references failed (exit status 4)",
    ]
    assert tour.out('echo "exit status $?"') == "exit status 4\n"


def check_push_and_pull(tour: Tour, work: Path) -> None:
    digest = digest_of(work / "resnet-out")
    pushed = tour["modelreg push vision/resnet resnet-out/"]
    assert (pushed.out, pushed.err) == (f"{RESNET}/versions/4  {digest}\n", "")
    again = tour["modelreg push vision/resnet resnet-out/ --if-changed"]
    assert again.out == f"{RESNET}/versions/4  {digest}  unchanged: no new version\n"
    pulled = tour.out("modelreg pull vision/resnet:4 models/resnet")
    assert pulled == f"{RESNET}/versions/4  {digest}  (2 files, 575.1 KiB) -> models/resnet\n"
    for name in ("weights.bin", "config.json"):
        copy, original = work / "models" / "resnet" / name, work / "resnet-out" / name
        assert copy.read_bytes() == original.read_bytes()


def check_restart_keeps_data_and_deleting_home_resets_it(home: Path, logs: Path) -> None:
    restarted = ServerProcess(logs / "again.log", MODELREG_HOME=str(home))
    try:
        restarted.wait_serving()
        reply = json.loads(
            cli(restarted.target, home, "resolve", "vision/resnet@production", "--json")
        )
        assert reply["number"] == "2"
    finally:
        assert restarted.stop() == 0, restarted.output()
    shutil.rmtree(home)  # the README's way to start from an empty registry
    fresh = ServerProcess(logs / "fresh.log", MODELREG_HOME=str(home))
    try:
        fresh.wait_serving()
        gone = cli(fresh.target, home, "namespaces", "get", "vision", status=1)
        assert gone.startswith("error: NOT_FOUND: namespaces/vision")
    finally:
        assert fresh.stop() == 0, fresh.output()


def cli(target: str, home: Path, *args: str, status: int = 0) -> str:
    """Run `modelreg ARGS --target TARGET` with the server's home (where the CLI finds
    its admin key); its stdout (its stderr if it is to fail)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "modelreg", *args, "--target", target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status, f"modelreg {' '.join(args)}: {done.stderr}"
    return done.stdout if status == 0 else done.stderr


def test_make_run_passes_args_to_the_server() -> None:
    """The README's `make run ARGS="--address ..."` (a dry run: nothing starts)."""
    done = subprocess.run(
        ["make", "-n", "run", "ARGS=--address 127.0.0.1:6000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # under another make (CI runs `make test`) make also prints "make[1]: Leaving directory"
    commands = [line for line in done.stdout.splitlines() if not line.startswith("make")]
    assert commands[-1].endswith("/modelreg serve --address 127.0.0.1:6000")
