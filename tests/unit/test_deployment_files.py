"""docker-compose.yml and the Dockerfile can't be run here (no Docker engine), so check
that they say what the server reads."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from modelreg.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {f"MODELREG_{f.name.upper()}" for f in fields(Settings)}


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def test_every_modelreg_variable_in_compose_is_one_the_server_reads() -> None:
    compose = _compose()
    seen: set[str] = set()
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        used = {k for k in env if k.startswith("MODELREG_")}
        assert used <= KNOWN, f"{name} sets unknown {sorted(used - KNOWN)}"
        seen |= used
    assert {"MODELREG_POSTGRES_URL", "MODELREG_REDIS_URL"} <= seen


def test_compose_runs_two_registry_replicas_on_postgres_and_redis() -> None:
    services = _compose()["services"]
    replicas = [s for s in services.values() if s.get("build") == "."]
    assert len(replicas) == 2
    assert {"postgres", "redis"} <= set(services)
    for replica in replicas:
        assert replica["environment"]["MODELREG_POSTGRES_URL"].startswith("postgresql://")


def test_image_runs_as_a_non_root_user() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(line.startswith("FROM python:3.11-slim") for line in lines)
