"""deploy/kubernetes/modelreg.yaml, validated offline (no cluster here): every document
against Kubernetes' own schemas in strict mode (kubernetes-validate: an unknown or
misspelt field fails), then what must hold between them and the server — probes that ask
gRPC health the names the server sets, selectors that match the pods, ports that exist,
and settings the server accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelreg.app import LIVENESS
from modelreg.config import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "modelreg.yaml"
KUBERNETES = "1.30.0"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


@pytest.mark.parametrize("kind", ["Deployment", "Service", "PodDisruptionBudget",
                                  "HorizontalPodAutoscaler"])  # fmt: skip
def test_each_document_is_valid_kubernetes(kind: str) -> None:
    kubernetes_validate.validate(documents()[kind], KUBERNETES, strict=True)


def test_the_pieces_fit_the_pods_and_the_server() -> None:
    docs = documents()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget",):
        assert docs[kind]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment[
        "metadata"]["name"]  # fmt: skip
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in docs["Service"]["spec"]["ports"]:
        assert port["targetPort"] in ports
    env = {e["name"]: e.get("value", "postgresql://from-the-secret/db") for e in container["env"]}
    settings = Settings.from_env(env)  # every variable is one the server takes, and valid
    assert settings.address.endswith(f":{ports['grpc']}")
    assert settings.metrics_address is not None
    assert settings.metrics_address.endswith(f":{ports['metrics']}")
    assert all(name.startswith("MODELREG_") for name in env)
    known = {f"MODELREG_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(env) <= known

    readiness, liveness = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
    assert readiness["port"] == liveness["port"] == ports["grpc"]
    assert "service" not in readiness  # the overall status: it follows the database
    assert liveness["service"] == LIVENESS  # the process, whatever the database does
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + settings.grace_seconds < grace  # in-flight calls finish before SIGKILL
