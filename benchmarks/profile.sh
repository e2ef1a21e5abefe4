#!/usr/bin/env bash
# Profile the gateway under load with py-spy: gateway on CPU 0, its runtimes and wrk on CPU 1.
#   benchmarks/profile.sh [CONFIG=embedded] [PAYLOAD=small] [CONC=64] [SECONDS=10]
# Writes results/raw/profile-<config>-<payload>.txt (py-spy raw, collapsed stacks) and prints
# the functions with the most samples (self and inclusive). Needs py-spy (PYSPY=path).
set -uo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PYSPY=${PYSPY:-py-spy}
export PYTHONPATH=${GATEWAY_SRC:-$ROOT}
CONFIG=${1:-embedded} PAYLOAD=${2:-small} CONC=${3:-64} SECS=${4:-10}
APP=$([ "$PAYLOAD" = small ] && echo increment || echo increment_f32)
OUT=results/raw/profile-$CONFIG-$PAYLOAD.txt
mkdir -p results/raw
BACKEND=
if [ "$CONFIG" = grpc ]; then
  taskset -c 1 "$PYTHON" servers/tf_grpc_server.py 9500 >/dev/null 2>&1 & BACKEND=$!
  sleep 1
fi
taskset -c 0 "$PYTHON" -m gateway serve --config "configs/$CONFIG" --port 8900 ${GATEWAY_FLAGS:-} \
  > results/raw/profile-gateway.log 2>&1 & GW=$!
for _ in $(seq 60); do curl -sf -o /dev/null http://127.0.0.1:8900/health/ready && break; sleep 0.5; done
for child in $(cat /proc/$GW/task/*/children 2>/dev/null); do taskset -a -c -p 1 "$child" >/dev/null; done
BODY=payloads/plain-$PAYLOAD.json timeout $((SECS + 20)) taskset -c 1 wrk -t1 -c"$CONC" -d$((SECS + 3))s \
  -s load/post.lua "http://127.0.0.1:8900/gateway/applications/$APP" | grep RESULT & WRK=$!
sleep 2
snap() { awk '/^cpu[0-9]+ /{printf "%s %d %d ", $1, $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
BEFORE=$(snap)
if [ -n "${NOPROFILE:-}" ]; then sleep "$SECS"; else
  "$PYSPY" record -p "$GW" -d "$SECS" -r 250 -f raw -o "$OUT" --nonblocking ${PYSPY_FLAGS:-} >/dev/null 2>&1
fi
echo "$BEFORE $(snap)" | awk '{n=NF/6; for (i=0;i<n;i++) printf "%s busy %.0f%%  ", $(3*i+1),
  100*(1-($(3*n+3*i+2)-$(3*i+2))/($(3*n+3*i+3)-$(3*i+3)))} END{print ""}'
wait $WRK
kill -TERM $GW; wait $GW 2>/dev/null
[ -n "$BACKEND" ] && { kill -TERM "$BACKEND"; wait "$BACKEND" 2>/dev/null; }
[ -n "${NOPROFILE:-}" ] || "$PYTHON" load/profile_top.py "$OUT"
