"""deploy/kserve/cluster-storage-container.yaml cannot be applied here (no cluster), so it
is validated offline, in two parts:

- its `spec.container` against Kubernetes' own core/v1 Container schema, with
  kubernetes-validate in strict mode (unknown fields fail), by wrapping it in a Pod;
  kubernetes-validate ships no schema for KServe's CRD (SchemaNotFoundError), so
- the resource around it against the shape of KServe's CRD (serving.kserve.io,
  ClusterStorageContainer v1alpha1, config/crd/full/serving.kserve.io_clusterstoragecontainers.yaml
  in kserve/kserve, Apache-2.0), transcribed below as a JSON Schema: required `container`
  and `supportedUriFormats` (items of `prefix` / `regex` strings), optional
  `workloadType`, `objectSelector`, and `disabled` at the top. additionalProperties is
  false here where the CRD's structural schema would silently prune a misspelt field.

Then what KServe and our entry point need: the init container's name, the URI prefix, and
a command that is a console script this package installs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelreg.cli.initializer import SCHEME

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kserve" / "cluster-storage-container.yaml"
KUBERNETES = "1.30.0"  # a version KServe 0.11+ supports

CLUSTER_STORAGE_CONTAINER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ClusterStorageContainer"},
        "disabled": {"type": "boolean"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
            },
        },
        "spec": {
            "type": "object",
            "required": ["container", "supportedUriFormats"],
            "additionalProperties": False,
            "properties": {
                "container": {"type": "object", "required": ["name"]},
                "supportedUriFormats": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"prefix": {"type": "string"}, "regex": {"type": "string"}},
                    },
                },
                "workloadType": {"type": "string"},
                "objectSelector": {"type": "object"},
            },
        },
    },
}


def _manifest() -> Any:
    return yaml.safe_load(MANIFEST.read_text())


def test_the_resource_has_the_shape_of_kserves_crd() -> None:
    jsonschema.validate(_manifest(), CLUSTER_STORAGE_CONTAINER)


def test_a_misspelt_field_would_be_caught() -> None:
    broken = _manifest()
    broken["spec"]["supportedUriFormat"] = broken["spec"].pop("supportedUriFormats")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CLUSTER_STORAGE_CONTAINER)


def test_kubernetes_validate_has_no_schema_for_the_crd_itself() -> None:
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(_manifest(), KUBERNETES, strict=True)


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "storage-initializer-check"},
        "spec": {"initContainers": [container], "containers": [{"name": "m", "image": "x"}]},
    }


def test_the_container_is_a_valid_kubernetes_container() -> None:
    kubernetes_validate.validate(_pod(_manifest()["spec"]["container"]), KUBERNETES, strict=True)


def test_a_bad_container_field_would_be_caught() -> None:
    container = _manifest()["spec"]["container"] | {"comand": ["x"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(_pod(container), KUBERNETES, strict=True)


def test_it_names_our_entry_point_for_modelreg_uris() -> None:
    spec = _manifest()["spec"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert spec["container"]["name"] == "storage-initializer"  # how KServe finds it
    assert spec["supportedUriFormats"] == [{"prefix": SCHEME}]
    assert spec["container"]["command"] == ["modelreg-storage-initializer"]
    assert scripts["modelreg-storage-initializer"] == "modelreg.cli.initializer:main"
    assert "args" not in spec["container"]  # KServe appends SRC_URI DEST_DIR itself
    assert {e["name"] for e in spec["container"]["env"]} == {"MODELREG_TARGET"}
