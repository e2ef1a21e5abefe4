#!/usr/bin/env bash
# Regenerates the committed Python code for protos/*.proto (messages and typing stubs only:
# gRPC method paths are the upstream ones, kept in protos/services.py).
# CI runs this and fails if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
find protos -name '*_pb2.py' -delete
find protos -name '*_pb2.pyi' -delete
mapfile -t sources < <(find protos -name '*.proto' | LC_ALL=C sort)
"$PYTHON" -m grpc_tools.protoc -I . \
  --python_out=. \
  --plugin=protoc-gen-mypy="$(dirname "$PYTHON")/protoc-gen-mypy" \
  --mypy_out=quiet:. \
  "${sources[@]}"
