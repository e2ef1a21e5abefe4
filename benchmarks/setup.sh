#!/usr/bin/env bash
# Idempotent set-up for run_all.sh: wrk (and h2load) from Debian, one virtualenv per peer (their pins
# conflict with each other and with the project's), the peer protobuf stubs, payload files.
# Fast when everything is already there. PYTHON is the project's interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}

ONLY=${ONLY:-"mlserver kserve grpc_front http_servers"}  # the sections run_all.sh runs: only their tools are set up
want() { [[ " $ONLY " == *" $1 "* ]]; }

apt_install() {  # apt_install COMMAND PACKAGE: PACKAGE from Debian unless COMMAND is there
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$2"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "$2"; fi
}
apt_install wrk wrk
want grpc_front && apt_install h2load nghttp2-client  # the gRPC rows' load generator

mkvenv() {  # mkvenv DIR PACKAGE: a virtualenv with PACKAGE (pinned) installed from PyPI
  local dir=$1
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/pip" show -q "${2%%[=<>\[]*}" >/dev/null 2>&1; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    "$dir/bin/pip" install -q "$2"
  fi
}
want mlserver && mkvenv ../.venv-peers-mlserver mlserver==1.7.1  # the one `make test-peers` uses
want kserve && mkvenv .venv-kserve kserve==0.21.0
# granian (a Rust ASGI server) runs the gateway's own app (servers/granian_gateway.py), so it goes
# into the project's interpreter: it pins nothing the project uses.
if want http_servers && ! "$PYTHON" -c 'import granian' 2>/dev/null; then "$PYTHON" -m pip install -q granian==2.8.9; fi

"$PYTHON" -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto proto/tensor.proto
"$PYTHON" load/make_payloads.py >/dev/null
