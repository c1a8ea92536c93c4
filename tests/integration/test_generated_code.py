"""The committed code in src/modelreg/v1 is exactly what protos/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "src" / "modelreg" / "v1"
    fresh = tmp_path / "modelreg" / "v1"
    names = {p.name for p in committed.iterdir() if p.is_file() and not p.name.endswith(".pyc")}
    assert names == {p.name for p in fresh.iterdir()}, "run `make protos` and commit the result"
    for name in sorted(names):
        assert (committed / name).read_bytes() == (fresh / name).read_bytes(), (
            f"src/modelreg/v1/{name} is out of date: run `make protos` and commit the result"
        )
