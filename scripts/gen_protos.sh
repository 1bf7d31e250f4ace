#!/usr/bin/env bash
# Regenerate the Python modules for protos/paygate/v1 into paygate/v1 (committed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$PY"):$PATH"
OUT="${1:-.}"
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out="$OUT" --grpc_python_out="$OUT" --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  protos/paygate/v1/*.proto
touch "$OUT/paygate/__init__.py" "$OUT/paygate/v1/__init__.py"
