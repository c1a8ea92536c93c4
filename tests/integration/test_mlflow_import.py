"""`modelreg import mlflow` against a real MLflow tracking server, started here in its own
venv (benchmarks/.data/mlflow-venv, built on first use: MLflow pins protobuf and grpcio
of its own) unless MODELREG_TEST_MLFLOW_URL names one. Numbers, aliases, tags and
creation times come across identical, files byte-identical to MLflow's; a second run
copies nothing; a run killed midway completes on rerun. ImportModelVersion's own rules
are checked on the server directly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelreg.client import Client
from modelreg.client.mlflow import MlflowRest
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import free_port, rich_status

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "benchmarks" / ".data" / "mlflow-venv"
POPULATE = Path(__file__).with_name("mlflow") / "populate.py"
RANKER_VERSIONS = 24
FILE_SIZE = 1 << 20
pytestmark = pytest.mark.usefixtures("clean")


def _mlflow_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "mlflow>=3"],
                       check=True, timeout=900)  # fmt: skip
        (VENV / ".installed").touch()
    return python


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An MLflow tracking server with the populate script's models; what it made."""
    python = _mlflow_python()
    given = os.environ.get("MODELREG_TEST_MLFLOW_URL")
    root = tmp_path_factory.mktemp("mlflow")
    process = None
    log = (root / "server.log").open("wb")
    if given:
        url = given.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait_healthy(url, process, root / "server.log")
    try:
        made = subprocess.run(
            [str(python), str(POPULATE), url, str(FILE_SIZE), str(RANKER_VERSIONS)],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        yield {"url": url, "made": json.loads(made.stdout.strip().splitlines()[-1])}
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within 120 s: {log.read_text()[-2000:]}")


def _cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(target, *args), env=_env(), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def _argv(target: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "modelreg", *args, "--target", target, "--timeout", "60"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    return env


def _mlflow_versions(rest: MlflowRest, name: str) -> dict[int, dict[str, Any]]:
    found = rest.pages("mlflow/model-versions/search", "model_versions", filter=f"name='{name}'")
    return {int(v["version"]): v for v in found}


async def test_import_keeps_numbers_times_tags_aliases_and_files_and_resumes_a_killed_run(
    mlflow_server: dict[str, Any], target: str, tmp_path: Path
) -> None:
    url = mlflow_server["url"]
    importing = ["import", "mlflow", "--tracking-uri", url, "--with-artifacts"]
    dry = await asyncio.to_thread(_cli, target, *importing, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "create model default/fraud-detector (MLflow 'Fraud Detector')" in dry.stdout
    assert "import 6 versions of default/fraud-detector (1-6, 1 deleted in MLflow" in dry.stdout
    assert f"import {RANKER_VERSIONS} versions of default/ranker" in dry.stdout
    assert await asyncio.to_thread(_models, target, "default") == [], "a dry run writes nothing"
    # a run killed while it copies the ranker's files (some READY, some still PENDING)
    states = await asyncio.to_thread(_kill_midway, _argv(target, *importing), target)
    assert pb.MODEL_VERSION_STATE_READY in states, states
    assert pb.MODEL_VERSION_STATE_PENDING in states, f"the run was not cut midway: {states}"
    rerun = await asyncio.to_thread(_cli, target, *importing)
    assert rerun.returncode == 0, rerun.stderr
    again = await asyncio.to_thread(_cli, target, *importing)
    assert again.returncode == 0, again.stderr
    assert "nothing copied" in again.stdout, again.stdout
    assert "0 versions imported" in again.stdout
    run_id = mlflow_server["made"]["Fraud Detector"][3]["run_id"]
    await asyncio.to_thread(_imported_all, url, target, run_id, tmp_path)


def _models(target: str, namespace: str) -> list[str]:
    with Client(target) as client:  # blocking: from a thread, the server runs on the loop
        return [m.name for m in client.list_models(namespace)]


def _imported_all(url: str, target: str, run_id: str, tmp_path: Path) -> None:
    rest = MlflowRest(url)
    with Client(target) as client:
        _same_registry(rest, client, "Fraud Detector", "default/fraud-detector", files=True)
        _same_registry(rest, client, "ranker", "default/ranker", files=True)
        for number in (1, 5, RANKER_VERSIONS):  # byte-identical files, version 5's run deleted
            model, mlflow_name = (("default/ranker", "ranker") if number == RANKER_VERSIONS
                                  else ("default/fraud-detector", "Fraud Detector"))  # fmt: skip
            _same_files(rest, client, (mlflow_name, model, number), tmp_path / f"{number}")
        lineage = list(client.lineage("default/fraud-detector:4", max_depth=1))
        assert [(e.target.run.system, e.target.run.external_id) for e in lineage] == [
            ("mlflow", run_id)
        ]


def _kill_midway(argv: list[str], target: str) -> list[int]:
    """Start the import; SIGKILL it once three ranker versions are READY; their states."""
    process = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    with Client(target) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                states = [v.state for v in client.list_versions("default/ranker")]
            except Exception:
                states = []
            if states.count(pb.MODEL_VERSION_STATE_READY) >= 3:
                process.kill()
                process.wait()
                return [v.state for v in client.list_versions("default/ranker")]
            time.sleep(0.02)
    process.kill()
    raise AssertionError("the import ended before it could be cut")


def _same_registry(
    rest: MlflowRest, client: Client, mlflow_name: str, model: str, *, files: bool
) -> None:
    theirs = _mlflow_versions(rest, mlflow_name)
    ours = {v.number: v for v in client.list_versions(model, order_by="number")}
    assert sorted(ours) == list(range(1, max(theirs) + 1)), "every number, gaps kept as theirs"
    for number, version in ours.items():
        mine = theirs.get(number)
        if mine is None:  # deleted in MLflow: a FAILED placeholder keeps the number
            assert version.state == pb.MODEL_VERSION_STATE_FAILED
            assert version.labels["mlflow.deleted"] == "true"
            continue
        assert version.create_time.ToMilliseconds() == int(mine["creation_timestamp"])
        if not files:  # with files the update time is the import's finalize
            assert version.update_time.ToMilliseconds() == int(mine["last_updated_timestamp"])
        assert version.state == pb.MODEL_VERSION_STATE_READY
        tags = {t["key"]: t["value"] for t in mine.get("tags", [])}
        assert {k: v for k, v in version.labels.items() if not k.startswith("mlflow.")} == tags
        assert version.description == mine.get("description", "")
        assert version.source.run_id == mine["run_id"]
        stage = mine.get("current_stage", "None")
        assert version.labels.get("mlflow.stage", "None") == stage
    registered = rest.get("mlflow/registered-models/get", name=mlflow_name)["registered_model"]
    aliases = {a["alias"]: int(a["version"]) for a in registered.get("aliases", [])}
    assert {a.name.rsplit("/", 1)[-1]: a.version_number for a in client.list_aliases(model)} == (
        aliases
    )
    got = client.get_model(model)
    assert got.labels["mlflow.name"] == mlflow_name
    assert got.description == registered.get("description", "")


def _same_files(
    rest: MlflowRest, client: Client, version: tuple[str, str, int], where: Path
) -> None:
    mlflow_name, model, number = version
    client.pull(f"{model}:{number}", where / "ours")
    run_id = _mlflow_versions(rest, mlflow_name)[number]["run_id"]
    base = rest.get("mlflow/runs/get", run_id=run_id)["run"]["info"]["artifact_uri"]
    root = base.split(":", 1)[1].strip("/") + "/model"
    for relative in ("weights.bin", "sub/config.json"):
        rest.download(f"{root}/{relative}", where / "theirs" / relative)
        ours = (where / "ours" / relative).read_bytes()
        assert ours == (where / "theirs" / relative).read_bytes(), relative
    assert sorted(p.relative_to(where / "ours").as_posix() for p in (where / "ours").rglob("*")
                  if p.is_file()) == ["sub/config.json", "weights.bin"]  # fmt: skip


async def test_an_import_without_files_keeps_update_times_too(
    mlflow_server: dict[str, Any], target: str, stub: rs_grpc.RegistryServiceAsyncStub
) -> None:
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="plain"))
    args = ["import", "mlflow", "--tracking-uri", mlflow_server["url"], "--namespace", "plain",
            "--models", "Fraud*"]  # fmt: skip
    done = await asyncio.to_thread(_cli, target, *args)
    assert done.returncode == 0, done.stderr
    assert "1 MLflow models: 1 models created, 6 versions imported (1 placeholders" in done.stdout
    await asyncio.to_thread(_plain_imported, mlflow_server["url"], target)


def _plain_imported(url: str, target: str) -> None:
    with Client(target) as client:
        _same_registry(MlflowRest(url), client, "Fraud Detector", "plain/fraud-detector",
                       files=False)  # fmt: skip
        assert [m.name for m in client.list_models("plain")] == [
            "namespaces/plain/models/fraud-detector"
        ]


async def test_an_unreachable_mlflow_names_the_setting(target: str) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    failed = await asyncio.to_thread(_cli, target, "import", "mlflow", "--tracking-uri", gone)
    assert failed.returncode == 1
    assert "no MLflow tracking server answered" in failed.stderr
    assert "--tracking-uri" in failed.stderr


async def test_import_model_version_keeps_times_and_numbers_in_order(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    model = "namespaces/default/models/old"
    await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="old"))

    def version(number: int, created: int, updated: int = 0) -> pb.ModelVersion:
        made = pb.ModelVersion(number=number, state=pb.MODEL_VERSION_STATE_READY,
                               labels={"from": "elsewhere"})  # fmt: skip
        made.create_time.FromMilliseconds(created)
        if updated:
            made.update_time.FromMilliseconds(updated)
        return made

    first = await stub.ImportModelVersion(
        rs.ImportModelVersionRequest(parent=model, version=version(1, 1_600_000_000_123,
                                                                   1_600_000_500_456))
    )  # fmt: skip
    assert first.version.create_time.ToMilliseconds() == 1_600_000_000_123
    assert first.version.update_time.ToMilliseconds() == 1_600_000_500_456
    assert first.revision > 0
    with pytest.raises(grpc.aio.AioRpcError) as skipped:
        await stub.ImportModelVersion(
            rs.ImportModelVersionRequest(parent=model, version=version(3, 1_600_000_000_000))
        )
    assert skipped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the next version of" in (skipped.value.details() or "")
    info = rich_status(skipped.value)
    assert info is not None
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await stub.ImportModelVersion(
            rs.ImportModelVersionRequest(parent=model, version=version(1, 1_600_000_000_000))
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # a refused import changed nothing; CreateModelVersion goes on from the imported number
    made = await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=model))
    assert made.version.number == 2
    assert made.version.create_time.ToMilliseconds() > 1_700_000_000_000
