#!/usr/bin/env bash
# Quick A/B of the gateway alone: gateway on core 0, its runtimes and wrk on core 1, one payload
# at c=64 and c=1 (8 s each). Run it on two commits to compare them; `make bench` is the full
# side-by-side run against the peers.
#   [PAYLOAD=small|medium] benchmarks/ab.sh [CONFIG_DIR] [APPLICATION]
set -u
cd "$(dirname "$0")/.."
CONFIG=${1:-benchmarks/configs/embedded}
PAYLOAD=${PAYLOAD:-small}
APP=${2:-$([ "$PAYLOAD" = small ] && echo increment || echo increment_f32)}
PORT=${PORT:-8931}
BODY_FILE=$(mktemp)
if [ "$PAYLOAD" = small ]; then echo '{"number":[1]}' > "$BODY_FILE"; else  # 1000 float32, as make bench
  .venv/bin/python -c 'import numpy as np, orjson; print(orjson.dumps({"number": np.arange(1000, dtype=np.float32) / 7},
                       option=orjson.OPT_SERIALIZE_NUMPY).decode())' > "$BODY_FILE"; fi
taskset -c 0 .venv/bin/gateway serve --config "$CONFIG" --port "$PORT" --log-level warning >/dev/null 2>&1 &
GW=$!
trap 'kill -TERM $GW 2>/dev/null; wait $GW 2>/dev/null; rm -f "$BODY_FILE"' EXIT
for _ in $(seq 1 120); do
  curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$PORT/health/ready" | grep -q 200 && break
  sleep 0.5
done
for pid in $(pgrep -P $GW); do taskset -a -p -c 1 "$pid" >/dev/null; done
URL="http://127.0.0.1:$PORT/gateway/applications/$APP"
BODY=$BODY_FILE timeout 30 taskset -c 1 wrk -t1 -c64 -d3s -s benchmarks/load/post.lua "$URL" >/dev/null 2>&1
for c in 64 1; do
  BODY=$BODY_FILE timeout 30 taskset -c 1 wrk -t1 -c$c -d8s -s benchmarks/load/post.lua "$URL" | grep RESULT | sed "s/^/c=$c /"
done
