#!/usr/bin/env bash
# Idempotent set-up for run_all.sh: wrk from Debian, one virtualenv per peer (their pins
# conflict with each other and with the project's), the peer protobuf stubs, payload files.
# Fast when everything is already there. PYTHON is the project's interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi

mkvenv() {  # mkvenv DIR PACKAGE: a virtualenv with PACKAGE (pinned) installed from PyPI
  local dir=$1
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/pip" show -q "${2%%[=<>\[]*}" >/dev/null 2>&1; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q "$2"
  fi
}
mkvenv .venv-mlserver mlserver==1.7.1
mkvenv .venv-kserve kserve==0.21.0

"$PYTHON" -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto proto/tensor.proto
"$PYTHON" load/make_payloads.py >/dev/null
