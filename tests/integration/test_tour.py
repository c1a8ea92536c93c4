"""The README's five-minute tour, as a new user runs it: `modelreg serve` on the embedded
default (no configuration) and the CLI against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.serverproc import ServerProcess


def cli(target: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    done = subprocess.run(
        [sys.executable, "-m", "modelreg", *args, "--target", target],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"modelreg {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_tour_on_the_embedded_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = ServerProcess(tmp_path / "serve.log", MODELREG_HOME=str(home))
    try:
        server.wait_serving()
        assert "embedded" in server.output()
        t = server.target
        cli(t, "namespaces", "create", "vision")
        cli(t, "models", "create", "vision/resnet")
        for _ in range(3):
            cli(t, "versions", "create", "vision/resnet", "--ready")
        cli(t, "alias", "set", "vision/resnet", "production", "2")
        cli(t, "alias", "set", "vision/resnet", "production", "3")
        cli(t, "alias", "set", "vision/resnet", "production", "2")  # roll back
        history = cli(t, "alias", "history", "vision/resnet", "production")
        assert history.count("production") >= 3 or len(history.strip().splitlines()) >= 4
        resolved = json.loads(cli(t, "resolve", "vision/resnet@production", "--json"))
        version = resolved.get("version", resolved)
        assert int(version["number"]) == 2
        assert version["name"] == "namespaces/vision/models/resnet/versions/2"
        assert "production" in cli(t, "alias", "list", "vision/resnet")
    finally:
        assert server.stop() == 0, server.output()
    restarted = ServerProcess(tmp_path / "again.log", MODELREG_HOME=str(home))
    try:
        restarted.wait_serving()
        again = json.loads(cli(restarted.target, "resolve", "vision/resnet@production", "--json"))
        assert int(again.get("version", again)["number"]) == 2  # data survived the restart
    finally:
        restarted.stop()
