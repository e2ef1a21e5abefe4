#!/usr/bin/env bash
# Regenerates examples/tfserving_client/generated/ (messages and gRPC stubs) from the upstream
# .proto files in tests/fixtures/upstream_protos/, with their upstream package names, so the stubs
# carry TF Serving's own method paths (/tensorflow.serving.PredictionService/Predict).
# CI (make check-protos) runs this and fails if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
SOURCE=tests/fixtures/upstream_protos
OUT=examples/tfserving_client/generated
rm -rf "$OUT/tensorflow" "$OUT/tensorflow_serving"
mapfile -t sources < <(cd "$SOURCE" && find tensorflow tensorflow_serving -name '*.proto' | LC_ALL=C sort)
"$PYTHON" -m grpc_tools.protoc -I "$SOURCE" --python_out="$OUT" --grpc_python_out="$OUT" "${sources[@]}"
# Only the two services have stubs: protoc writes an empty _pb2_grpc.py for every other file.
find "$OUT" -name '*_pb2_grpc.py' ! -name 'prediction_service_pb2_grpc.py' ! -name 'model_service_pb2_grpc.py' -delete
