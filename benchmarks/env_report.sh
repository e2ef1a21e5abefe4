#!/usr/bin/env bash
# Machine and version notes for the results (PYTHON: the project's interpreter).
cd "$(dirname "$0")"
PYTHON=${PYTHON:-../.venv/bin/python}
echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "- cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(lscpu | sed -n 's/^Hypervisor vendor: *//p') guest"
echo "- memory: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "- python: $("$PYTHON" -V 2>&1 | cut -d' ' -f2); wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"
echo "- gateway: $(cd .. && git rev-parse --short HEAD 2>/dev/null)$(cd .. && git diff --quiet 2>/dev/null || echo ' (with local changes)')"
pick='^(starlette|uvicorn|uvloop|httptools|h11|orjson|numpy|grpcio|protobuf|prometheus.client|fastapi|pydantic|mlserver|kserve)=='
echo "- project venv: $("$PYTHON" -m pip list --format=freeze 2>/dev/null | grep -iE "$pick" | tr '\n' ' ')"
for v in ../.venv-peers-mlserver .venv-kserve; do
  echo "- ${v#../}: $("$v"/bin/pip list --format=freeze 2>/dev/null | grep -iE "$pick" | tr '\n' ' ')"
done
