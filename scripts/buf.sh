#!/usr/bin/env bash
# Runs the buf CLI (from the buf-bin wheel) on our protos: `scripts/buf.sh lint`,
# `scripts/buf.sh breaking --against .git#branch=main,subdir=protos` (also any buf verb).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
site=$("$python" -c 'import google.rpc.status_pb2 as s, pathlib; print(pathlib.Path(s.__file__).resolve().parents[2])')
rm -rf .build/googleapis && mkdir -p .build/googleapis/google/rpc
ln -s "$site"/google/rpc/*.proto .build/googleapis/google/rpc/
exec "$(dirname "$python")/buf" "$@"
