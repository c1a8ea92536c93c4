"""Another team's client: Node's grpc-js (tests/node/client.mjs) loads the contract the two
ways the README offers — the published descriptor set (`scripts/buf.sh descriptor`, what
`make descriptor` writes) and the .proto sources plus googleapis' — and calls
ResolveReference and BatchGetModelVersions on the test server. Its answers must be the
versions and the per-item errors the Python stubs get, field for field."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import rich_status

if TYPE_CHECKING:  # the stubs' asyncio type exists only in the .pyi
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub as Stub

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
VERSIONS = "namespaces/vision/models/resnet/versions"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not on PATH (CI has them): the Node client cannot run",
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """tests/node/node_modules as package-lock.json pins it: `npm ci` runs only when the
    lock changed since the last install (a stamp holds the lock's hash)."""
    lock = NODE_DIR / "package-lock.json"
    modules = NODE_DIR / "node_modules"
    stamp = modules / ".modelreg-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.is_file() or stamp.read_text() != digest:
        _run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_DIR)
        stamp.write_text(digest)
    return modules


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The client's arguments for each way of loading the contract."""
    descriptor = tmp_path_factory.mktemp("contract") / "modelreg.binpb"
    env = {**os.environ, "PYTHON": sys.executable}
    _run(["bash", str(REPO / "scripts" / "buf.sh"), "descriptor", str(descriptor)], env=env)
    from google.rpc import status_pb2 as wheel  # its .proto sources sit beside it

    googleapis = Path(wheel.__file__).resolve().parents[2]
    assert (googleapis / "google" / "rpc" / "status.proto").is_file()
    return {
        "descriptor": ["--descriptor", str(descriptor)],
        "sources": ["--protos", str(REPO / "protos"), "--include", str(googleapis)],
    }


async def _seed(stub: Stub) -> None:
    """vision/resnet with READY versions 1..3 (labels, metrics, a run id) and
    `production` at 2."""
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="vision"))
    await stub.CreateModel(
        rs.CreateModelRequest(
            parent="namespaces/vision",
            model_id="resnet",
            model=pb.Model(description="image classifier"),
        )
    )
    for top1 in (0.76, 0.78, 0.79):
        version = pb.ModelVersion(
            state=pb.MODEL_VERSION_STATE_READY,
            description=f"top1 {top1}",
            tags=["cv"],
            labels={"team": "vision"},
            metrics={"top1": top1},
            source=pb.VersionSource(run_id=f"run-{int(top1 * 100)}"),
        )
        await stub.CreateModelVersion(
            rs.CreateModelVersionRequest(parent="namespaces/vision/models/resnet", version=version)
        )
    await stub.SetAlias(
        rs.SetAliasRequest(
            name="namespaces/vision/models/resnet/aliases/production", version_number=2
        )
    )


RESOLVE = ["vision/resnet@production", "vision/resnet", "vision/resnet:1", "vision/nope@production"]
BATCH = ["vision/resnet@production", "vision/resnet:9", "vision/resnet:1", "a/b/c", "vision/resnet"]


@pytest.fixture(scope="module")
def node_client(contract: dict[str, list[str]], node_modules: Path) -> NodeClient:
    """Runs client.mjs with the contract loaded one way or the other."""
    return NodeClient(contract)


@pytest.mark.parametrize("loading", ["descriptor", "sources"])
async def test_node_client_gets_what_python_gets(
    loading: str, node_client: NodeClient, stub: Stub, target: str, clean: None
) -> None:
    await _seed(stub)
    args = [f"--resolve={ref}" for ref in RESOLVE] + [f"--batch={ref}" for ref in BATCH]
    answer = await node_client.run(loading, "--target", target, *args)

    assert answer["loaded_from"] == loading
    resolved = {ref: _resolved(reply) for ref, reply in answer["resolve"].items()}
    assert resolved == {ref: await _python_resolve(stub, ref) for ref in RESOLVE}
    batch = [(item["reference"], _resolved(item)) for item in answer["batch"]]
    assert batch == await _python_batch(stub, BATCH)

    # ... and that is what the seed says.
    found = {ref: got.name for ref, got in resolved.items() if isinstance(got, pb.ModelVersion)}
    assert found == {
        "vision/resnet@production": f"{VERSIONS}/2",
        "vision/resnet": f"{VERSIONS}/3",  # the latest READY
        "vision/resnet:1": f"{VERSIONS}/1",
    }
    production = resolved["vision/resnet@production"]
    assert isinstance(production, pb.ModelVersion)
    assert (production.number, production.state) == (2, pb.MODEL_VERSION_STATE_READY)
    assert production.metrics["top1"] == 0.78
    assert production.labels == {"team": "vision"}
    assert production.source.run_id == "run-78"
    assert _codes(resolved) == {"vision/nope@production": grpc.StatusCode.NOT_FOUND}

    assert [ref for ref, _ in batch] == BATCH  # one result per reference, in order
    numbers = {ref: got.number for ref, got in batch if isinstance(got, pb.ModelVersion)}
    assert numbers == {"vision/resnet@production": 2, "vision/resnet:1": 1, "vision/resnet": 3}
    assert _codes(dict(batch)) == {
        "vision/resnet:9": grpc.StatusCode.NOT_FOUND,
        "a/b/c": grpc.StatusCode.INVALID_ARGUMENT,
    }
    bad = dict(batch)["a/b/c"]
    assert isinstance(bad, dict)
    assert [d["type"] for d in bad["details"]] == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]


def _codes(outcomes: dict[str, Outcome]) -> dict[str, grpc.StatusCode]:
    """The errors among `outcomes` by code, each checked to carry our ErrorInfo first."""
    codes = {code.value[0]: code for code in grpc.StatusCode}
    errors = {ref: got for ref, got in outcomes.items() if isinstance(got, dict)}
    for error in errors.values():
        info = error["details"][0]
        assert (info["type"], info["domain"]) == ("google.rpc.ErrorInfo", "modelreg.v1")
        assert info["reason"].isupper()
    return {ref: codes[error["code"]] for ref, error in errors.items()}


class NodeClient:
    """tests/node/client.mjs, run as a subprocess while the server answers on this loop."""

    def __init__(self, contract: dict[str, list[str]]) -> None:
        self._contract = contract

    async def run(self, loading: str, *args: str) -> dict[str, Any]:
        """The client's JSON answer, having loaded the contract the `loading` way."""
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "client.mjs"),
            *self._contract[loading],
            *args,
            cwd=NODE_DIR,
            # The session's admin key, which client.mjs sends as a bearer token.
            env={**os.environ, "MODELREG_TOKEN": os.environ["MODELREG_TOKEN"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 0, f"client.mjs exited {proc.returncode}:\n{err.decode()}"
        answer: dict[str, Any] = json.loads(out)
        return answer


Outcome = pb.ModelVersion | dict[str, Any]


def _resolved(reply: dict[str, Any]) -> Outcome:
    """A version as grpc-js decoded it, parsed back into the Python message; an error as is."""
    if "error" in reply:
        error: dict[str, Any] = _maps(reply["error"])
        return error
    fields = _maps(reply["version"])
    for name in ("create_time", "update_time"):  # grpc-js gives {seconds, nanos}
        when = fields[name]
        fields[name] = timestamp_pb2.Timestamp(
            seconds=int(when["seconds"]), nanos=when["nanos"]
        ).ToJsonString()
    return json_format.ParseDict(fields, pb.ModelVersion())


# The map fields of the answers (ModelVersion's, ErrorInfo's).
MAPS = frozenset({"labels", "metrics", "params", "metadata"})


def _maps(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with each map an object. protobufjs 7 (what proto-loader 0.8 runs on) reads
    a map from a descriptor set as the list of its [{key, value}] entries (protobufjs#2232
    fixed that in 8); from .proto sources it gives an object. Both carry the same map."""
    return {name: _field(name, value) for name, value in fields.items()}


def _field(name: str, value: Any) -> Any:
    if name in MAPS and isinstance(value, list):
        return {entry["key"]: entry["value"] for entry in value}
    if isinstance(value, dict):
        return _maps(value)
    if isinstance(value, list):
        return [_maps(item) if isinstance(item, dict) else item for item in value]
    return value


def _status(status: status_pb2.Status) -> dict[str, Any]:
    """A google.rpc.Status in the client's shape: details unpacked, with their type."""
    details = []
    for packed in status.details:
        kind = {
            "google.rpc.ErrorInfo": error_details_pb2.ErrorInfo,
            "google.rpc.BadRequest": error_details_pb2.BadRequest,
        }[packed.TypeName()]
        detail = kind()
        assert packed.Unpack(detail)
        fields = json_format.MessageToDict(detail, preserving_proto_field_name=True)
        details.append({"type": packed.TypeName(), **fields})
    return {"code": status.code, "message": status.message, "details": details}


async def _python_resolve(stub: Stub, reference: str) -> Outcome:
    try:
        reply = await stub.ResolveReference(rs.ResolveReferenceRequest(reference=reference))
    except grpc.aio.AioRpcError as err:
        return _status(rich_status(err))
    return reply.version


async def _python_batch(stub: Stub, references: list[str]) -> list[tuple[str, Outcome]]:
    reply = await stub.BatchGetModelVersions(rs.BatchGetModelVersionsRequest(references=references))
    return [
        (r.reference, r.version if r.WhichOneof("result") == "version" else _status(r.error))
        for r in reply.results
    ]


def _run(argv: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
