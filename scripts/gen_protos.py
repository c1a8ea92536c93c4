"""Regenerate the committed protobuf/gRPC code in src/modelreg/v1 from protos/.

Usage: python scripts/gen_protos.py [--out DIR]

With --out the code is written under DIR instead (the drift test compares the two).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def _include_dirs() -> list[str]:
    """Proto roots: ours, the well-known types, and googleapis (google/rpc)."""
    well_known = resources.files("grpc_tools") / "_proto"
    import google.rpc.status_pb2 as status

    googleapis = Path(status.__file__).resolve().parent.parent.parent
    return [str(PROTOS), str(well_known), str(googleapis)]


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={out}", f"--grpc_python_out={out}"]
    bin_dir = Path(sys.executable).parent  # the venv's protoc-gen-mypy plugins
    args += [f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}"]
    args += [f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}"]
    args += [f"--mypy_out={out}", f"--mypy_grpc_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for package in {Path(f).parent for f in files}:
        (out / package / "__init__.py").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "src")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
