"""Lineage beyond the graph itself, against the real server: datasets found by URI (what
OpenLineage names), `modelreg lineage import` of OpenLineage run events (idempotent, a bad
line records nothing), and the command line's tree, diff and add."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from modelreg.cli.lineage import shorthand, tree
from modelreg.client import lineage as calls
from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import lineage_service_pb2_grpc as ln_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import rich_status, violations_of

pytestmark = pytest.mark.usefixtures("clean")
M = "namespaces/default/models/m"
READY = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
DOWN = ln.LINEAGE_DIRECTION_DOWN


@pytest.fixture
def lineage(channel: grpc.aio.Channel) -> ln_grpc.LineageServiceAsyncStub:
    return ln_grpc.LineageServiceStub(channel)


async def _versions(stub: rs_grpc.RegistryServiceAsyncStub, count: int) -> list[str]:
    await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="m"))
    names = []
    for _ in range(count):
        made = await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=M, version=READY))
        names.append(made.version.name)
    return names


def _uri_dataset(uri: str) -> ln.LineageNode:
    return ln.LineageNode(dataset=ln.LineageDataset(uri=uri))


def _cli(target: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = os.environ["MODELREG_TOKEN"]  # the session's admin key
    return subprocess.run(
        [sys.executable, "-m", "modelreg", *args, "--target", target],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_a_dataset_without_a_digest_is_one_node_found_by_its_uri(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub
) -> None:
    v1, v2, v3 = await _versions(stub, 3)
    trained = ln.LINEAGE_EDGE_KIND_TRAINED_ON
    for version in (v1, v2):
        spec = ln.LineageEdgeSpec(kind=trained, target=_uri_dataset("s3://data/clicks"))
        await lineage.AddLineage(ln.AddLineageRequest(version=version, edges=[spec]))
    # the same URI with a digest is another dataset (a snapshot of what is there)
    snapshot = calls.dataset("sha256:" + "ab" * 32, uri="s3://data/clicks")
    await lineage.AddLineage(
        ln.AddLineageRequest(version=v3, edges=[ln.LineageEdgeSpec(kind=trained, target=snapshot)])
    )
    by_uri = await lineage.GetLineage(
        ln.GetLineageRequest(dataset_uri="s3://data/clicks", direction=DOWN)
    )
    assert sorted(e.version.version for e in by_uri.edges) == [v1, v2, v3]
    digestless = {e.target.dataset.digest for e in by_uri.edges if e.version.version != v3}
    assert digestless == {""}, "a digest-less dataset answers without one"
    by_digest = await lineage.GetLineage(
        ln.GetLineageRequest(dataset_digest="sha256:" + "ab" * 32, direction=DOWN)
    )
    assert [e.version.version for e in by_digest.edges] == [v3]
    # neither a digest nor a URI: refused, naming the field; nothing recorded
    bare = ln.LineageEdgeSpec(kind=trained, target=ln.LineageNode(dataset=ln.LineageDataset()))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await lineage.AddLineage(ln.AddLineageRequest(version=v1, edges=[bare]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "edges[0].target.dataset" in violations_of(rich_status(refused.value))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await lineage.GetLineage(ln.GetLineageRequest(dataset_uri="s3://nowhere", direction=DOWN))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def _event(kind: str, run_id: str, *, inputs: list[str], outputs: list[str]) -> str:
    def datasets(names: list[str]) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        for name in names:
            namespace, _, rest = name.partition("|")
            found.append({"namespace": namespace, "name": rest, "facets": {}})
        return found

    return json.dumps({
        "eventType": kind, "eventTime": "2026-12-04T10:00:00.000Z",
        "producer": "https://example.com/trainer", "schemaURL":
        "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id, "facets": {}},
        "job": {"namespace": "airflow-prod", "name": "train_ranker"},
        "inputs": datasets(inputs), "outputs": datasets(outputs),
    })  # fmt: skip


async def test_openlineage_import_records_inputs_and_run_once_and_a_bad_line_records_nothing(
    stub: rs_grpc.RegistryServiceAsyncStub,
    lineage: ln_grpc.LineageServiceAsyncStub,
    target: str,
    tmp_path: Path,
) -> None:
    v1, v2 = await _versions(stub, 2)
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    short_v2 = "default/m:2"
    lines = [  # inputs on START, the version on COMPLETE; a failed run records nothing
        _event("START", run_a, inputs=["s3://data|clicks/2026-12"], outputs=[]),
        _event("COMPLETE", run_a, inputs=[], outputs=[f"modelreg|{v1}", "s3://out|scores"]),
        _event(
            "COMPLETE",
            run_b,
            inputs=["s3://data|clicks/2026-12", "modelreg|" + v1],
            outputs=[f"modelreg://registry:50051|{short_v2}"],
        ),
        _event("FAIL", str(uuid.uuid4()), inputs=["s3://data|x"], outputs=[f"modelreg|{v2}"]),
        "",
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines))
    first = await asyncio.to_thread(_cli, target, "lineage", "import", str(events))
    assert first.returncode == 0, first.stderr
    assert "2 completed runs, 2 versions: 5 edges added" in first.stdout
    impact = await lineage.GetLineage(
        ln.GetLineageRequest(dataset_uri="s3://data/clicks/2026-12", direction=DOWN, max_depth=1)
    )
    assert sorted(e.version.version for e in impact.edges) == [v1, v2]
    upstream = await lineage.GetLineage(ln.GetLineageRequest(reference=v2, max_depth=1))
    kinds = sorted(ln.LineageEdgeKind.Name(e.kind) for e in upstream.edges)
    assert kinds == ["LINEAGE_EDGE_KIND_DERIVED_FROM", "LINEAGE_EDGE_KIND_PRODUCED_BY",
                     "LINEAGE_EDGE_KIND_TRAINED_ON"]  # fmt: skip
    run = next(e.target.run for e in upstream.edges if e.target.WhichOneof("node") == "run")
    assert (run.system, run.external_id) == ("openlineage", run_b)
    assert run.parameters["job.name"] == "train_ranker"
    again = await asyncio.to_thread(
        _cli, target, "lineage", "import", "-", stdin=events.read_text()
    )
    assert again.returncode == 0, again.stderr
    assert "0 edges added" in again.stdout, "importing the same events twice adds nothing"
    # one bad line anywhere: the import names it and records nothing of the file
    bad = tmp_path / "bad.jsonl"
    fresh = _event("COMPLETE", str(uuid.uuid4()), inputs=["s3://data|new"],
                   outputs=[f"modelreg|{v2}"])  # fmt: skip
    broken = json.loads(fresh.replace("s3://data", "s3://other"))
    broken["run"]["runId"] = "not-a-uuid"
    bad.write_text("\n".join([fresh, json.dumps(broken), "{"]))
    refused = await asyncio.to_thread(_cli, target, "lineage", "import", str(bad))
    assert refused.returncode == 1
    assert "line 2:" in refused.stderr
    assert "nothing was recorded" in refused.stderr
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await lineage.GetLineage(ln.GetLineageRequest(dataset_uri="s3://data/new", direction=DOWN))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_cli_prints_a_tree_diffs_two_versions_and_adds_edges(
    stub: rs_grpc.RegistryServiceAsyncStub, target: str
) -> None:
    v1, v2, v3 = await _versions(stub, 3)
    await stub.SetAlias(rs.SetAliasRequest(name=f"{M}/aliases/production", version_number=3))
    digest = "sha256:" + "cd" * 32
    steps = [
        (v1, [f"trained_on=dataset:{digest}@s3://data/base", "built_from=code:git@x:r@abc123"]),
        (v2, ["fine_tuned_from=version:default/m:1", "trained_on=dataset-uri:s3://data/extra"]),
        (v3, ["fine_tuned_from=version:default/m:2", "produced_by=run:mlflow/r3"]),
    ]
    for version, edges in steps:
        added = await asyncio.to_thread(_cli, target, "lineage", "add", version, *edges)
        assert added.returncode == 0, added.stderr
        assert f"added {len(edges)} of {len(edges)}" in added.stdout
    shown = await asyncio.to_thread(_cli, target, "lineage", "default/m@production")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "default/m:3 [production]",
        "├── fine_tuned_from default/m:2",
        "│   ├── fine_tuned_from default/m:1",
        "│   │   ├── trained_on dataset s3://data/base (sha256:cdcdcdcdcdcd…)",
        "│   │   └── built_from code git@x:r@abc123",
        "│   └── trained_on dataset s3://data/extra",
        "└── produced_by run mlflow r3",
    ]
    depth = await asyncio.to_thread(
        _cli, target, "lineage", "default/m:3", "--depth", "1", "--json"
    )
    answer = json.loads(depth.stdout)
    assert {e["depth"] for e in answer["edges"]} == {1}
    assert len(answer["edges"]) == 2
    impact = await asyncio.to_thread(
        _cli, target, "lineage", "show", "--dataset-digest", digest, "--down"
    )
    assert impact.returncode == 0, impact.stderr
    assert "fine_tuned_from by default/m:3 [production]" in impact.stdout
    diff = await asyncio.to_thread(_cli, target, "lineage", "diff", "default/m:3", "default/m:2")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines()[2:] == [
        "- fine_tuned_from default/m:2  (from default/m:3)",
        "- produced_by run mlflow r3  (from default/m:3)",
    ]
    wrong = await asyncio.to_thread(
        _cli, target, "lineage", "add", v1, "fine_tuned_from=version:default/m:3"
    )
    assert wrong.returncode == 1
    assert "INVALID_ARGUMENT" in wrong.stderr
    assert "its own ancestor" in wrong.stderr


def test_lineage_ref_is_short_for_lineage_show_ref() -> None:
    assert shorthand(["lineage", "ns/m@production", "--down"]) == [
        "lineage", "show", "ns/m@production", "--down"
    ]  # fmt: skip
    for untouched in (["lineage", "diff", "a", "b"], ["lineage", "--help"], ["models", "list"]):
        assert shorthand(untouched) == untouched


def test_a_tree_expands_a_version_reached_twice_once() -> None:
    start = ln.LineageNode(version="namespaces/d/models/m/versions/3")
    base = ln.LineageNode(version="namespaces/d/models/m/versions/1")
    mid = ln.LineageNode(version="namespaces/d/models/m/versions/2")
    data = calls.dataset("sha256:" + "ef" * 32, uri="s3://d")
    tune = ln.LINEAGE_EDGE_KIND_FINE_TUNED_FROM
    edges = [
        ln.LineageEdge(version=start, kind=tune, target=mid, depth=1),
        ln.LineageEdge(
            version=start, kind=ln.LINEAGE_EDGE_KIND_DISTILLED_FROM, target=base, depth=1
        ),
        ln.LineageEdge(version=mid, kind=tune, target=base, depth=2),
        ln.LineageEdge(version=base, kind=ln.LINEAGE_EDGE_KIND_TRAINED_ON, target=data, depth=2),
    ]
    lines = list(tree(start, edges, down=False))
    assert lines == [
        "d/m:3",
        "├── fine_tuned_from d/m:2",
        "│   └── fine_tuned_from d/m:1",
        "│       └── trained_on dataset s3://d (sha256:efefefefefef…)",
        "└── distilled_from d/m:1  (shown above)",
    ]
