#!/usr/bin/env bash
# The gateway against its peers, in one bounded run on the same cores: `make bench`.
#
#   benchmarks/run_all.sh                      everything (~15 min); writes results/results.md
#   ONLY="ceil_a mini_gw gw_embedded" ...      a subset of the sections listed in ONLY below
#   DURATION=10 CONCS="1 8 64" REPEAT=1        seconds per load point, concurrencies, repeats
#   GRPC_CONCS="1 64" GRPC_REPEAT=3            the gRPC front door's concurrencies, its side-by-side repeats
#   PYTHON=/path/to/venv/bin/python            the project's interpreter (default ../.venv)
#   GATEWAY_SRC=DIR                            measure the gateway from another checkout
#   RESULTS=results/NAME.md                    where the rendered results go (results/results.md)
#
# Servers run pinned to CPU 0 (taskset -c 0), wrk runs pinned to CPU 1 (taskset -c 1); a
# gateway's backend (embedded runtime or gRPC model server) runs on CPU 1 too
# (RUNTIME_CPU), as the peer harness placed the mini-gateway's runtime. Only 127.0.0.1 is
# ever targeted; every load run is bounded by -d and an outer `timeout`; every process
# started here is stopped here by its own PID.
set -uo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export PYTHONPATH=${GATEWAY_SRC:-$ROOT}${PYTHONPATH:+:$PYTHONPATH}
PYTHON=$PYTHON ./setup.sh || exit 1

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCS=${CONCS:-"1 8 64"}
REPEAT=${REPEAT:-1}
ONLY=${ONLY:-"ceil_a mlserver gw_v2 kserve mini_gw mini_embedded gw_embedded gw_batching gw_grpc gw_grpc_grpcio gw_grpc_batching grpc_front workers backend_ceiling memory binary http_servers request_log"}
SERVER_CPU=0
LOAD_CPU=1
RUNTIME_CPU=${RUNTIME_CPU:-1}
MEM_REQUESTS=${MEM_REQUESTS:-"20000 200000"}
RESULTS=${RESULTS:-results/results.md}
MLS=$ROOT/.venv-peers-mlserver/bin  # shared with `make test-peers`
KS=$PWD/.venv-kserve/bin
UVICORN_FLAGS="--host 127.0.0.1 --port 8900 --workers 1 --loop uvloop --http httptools --no-access-log --log-level warning"
GW_URL=http://127.0.0.1:8900/gateway/applications
GW_READY=http://127.0.0.1:8900/health/ready
# The gateway as a user runs it: production defaults (access log on, metrics, full contract
# validation); only the log level is lowered so that warnings are all it prints.
gateway_cmd() { echo "$PYTHON -m gateway serve --config configs/$1 --port 8900 ${2:-}"; }

mkdir -p logs results results/raw
TSV=results/raw/results.tsv
EXTRA=results/raw/extra.tsv
NOTES=results/raw/notes.txt
: > "$NOTES"
printf 'rep\tsystem\tapi\tpayload\tconc\trps\tp50_ms\tp99_ms\terrors\tcpu0_pct\tcpu1_pct\n' > "$TSV"
printf 'section\tkey\tvalue\n' > "$EXTRA"
declare -A PID
trap 'for n in "${!PID[@]}"; do stop "$n"; done' EXIT
trap 'exit 130' INT TERM

note() { echo "NOTE: $*" | tee -a "$NOTES"; }
extra() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" | tee -a "$EXTRA"; }
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
is_ready() {
  case $1 in
    tcp:*) (exec 3<>"/dev/tcp/127.0.0.1/${1#tcp:}") 2>/dev/null ;;
    unix:*) [ -S "${1#unix:}" ] ;;
    *) curl -sf -o /dev/null "$1" ;;
  esac
}

start() {  # start NAME CPUS READY "COMMAND" [DIR] -> runs pinned in DIR, waits <= 60 s for READY
  local name=$1 cpu=$2 ready=$3 cmd=$4 log=$PWD/logs/$1.log
  (cd "${5:-.}" && exec taskset -c "$cpu" bash -c "exec $cmd") > "$log" 2>&1 &
  PID[$name]=$!
  for _ in $(seq 120); do
    alive "${PID[$name]}" || break
    if is_ready "$ready"; then echo "== $name started, pid ${PID[$name]}, cpu $cpu"; return 0; fi
    sleep 0.5
  done
  note "$name did not start: $(tail -3 "logs/$name.log" | tr '\n' ' ')"
  stop "$name"; return 1
}

stop() {  # SIGTERM our own PID, SIGKILL after 15 s
  local pid=${PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 60); do alive "$pid" || break; sleep 0.25; done
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  unset "PID[$1]"
  echo "== $1 stopped"
}

children() { cat /proc/"$1"/task/*/children 2>/dev/null; }
pin_children() {  # pin_children PID CPUS: move the processes PID started (model runtimes) to CPUS
  local child
  for child in $(children "$1"); do taskset -a -c -p "$2" "$child" >/dev/null; done
}
rss_kb() { awk '/^VmRSS:/{print $2}' /proc/"$1"/status; }

cpu_snap() { awk '/^cpu[0-9]+ /{printf "%d %d ", $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
cpu_busy() {  # cpu_busy "$before" "$after" -> "cpu0=NN cpu1=NN"
  echo "$1 $2" | awk '{n=NF/4; for (i=0;i<n;i++) {
    di=$(2*n+2*i+1)-$(2*i+1); dt=$(2*n+2*i+2)-$(2*i+2); printf "cpu%d=%.0f ", i, 100*(1-di/dt)}}'
}

row() {  # row SYSTEM API PAYLOAD CONC "RESULT k=v ..."
  local r=$5
  kv() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<" $r"; }
  if [ -z "$r" ]; then
    printf '%s\t%s\t%s\t%s\t%s\tFAILED\t\t\t\t\t\n' "$REP" "$1" "$2" "$3" "$4" >> "$TSV"
  else
    printf '%s\t%s\t%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%s\t%s\t%s\n' "$REP" "$1" "$2" "$3" "$4" "$(kv rps)" \
      "$(awk "BEGIN{print $(kv p50_us)/1000}")" "$(awk "BEGIN{print $(kv p99_us)/1000}")" \
      "$(kv errors)" "$(kv cpu0)" "$(kv cpu1)" >> "$TSV"
  fi
  tail -1 "$TSV"
}

# http_sweep SYSTEM API URL FORMAT [LOADCPU]: bodies payloads/FORMAT-{small,medium}.json; a URL
# with {size} is filled with the payload's application (gateway: increment / increment_f32)
http_sweep() {
  local sys=$1 api=$2 size body url expect got c before out lcpu=${5:-$LOAD_CPU}
  for size in small medium; do
    body=payloads/$4-$size.json
    url=${3//\{size\}/$([ "$size" = small ] && echo increment || echo increment_f32)}
    expect='[2]'; [ "$size" = medium ] && expect='[1.0,1.1428'
    got=$(curl -s -m 10 -XPOST -H 'Content-Type: application/json' --data-binary "@$body" "$url")
    if ! grep -qF "$expect" <<<"$got"; then
      note "$sys $api $size: response check failed, got: ${got:0:200}"; continue
    fi
    BODY=$body timeout 30 taskset -c "$lcpu" wrk -t1 -c8 -d"${WARMUP}s" -s load/post.lua "$url" >/dev/null
    for c in $CONCS; do
      before=$(cpu_snap)
      out=$(BODY=$body timeout $((DURATION + 20)) taskset -c "$lcpu" \
            wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s load/post.lua "$url" | grep '^RESULT')
      row "$sys" "$api" "$size" "$c" "${out:+$out $(cpu_busy "$before" "$(cpu_snap)")}"
    done
  done
}

# gateway_sweep NAME LABEL CONFIG [BACKEND_CMD]: the gateway on CPU 0, its backend on RUNTIME_CPU
gateway_sweep() {
  if [ -n "${4:-}" ]; then start backend "$RUNTIME_CPU" tcp:9500 "$4" || return; fi
  if start "$1" "$SERVER_CPU" "$GW_READY" "$(gateway_cmd "$3")"; then
    pin_children "${PID[$1]}" "$RUNTIME_CPU"
    http_sweep "$2" "rest, runtime on cpu$RUNTIME_CPU" "$GW_URL/{size}" plain
    stop "$1"
  fi
  stop backend
}

# grpc_sweep SYSTEM API TARGET CLIENTS STREAMS CONC [METRICS_URL]: one h2load point of TF
# Serving's Predict (small payload, checked by one real call first) on LOAD_CPU
grpc_sweep() {
  local got before out
  if ! got=$("$PYTHON" load/grpc_predict.py check --target "$3" 2>&1); then
    note "$1 $2: Predict check failed, got: ${got:0:200}"; return
  fi
  before=$(cpu_snap)
  out=$(timeout $((DURATION + WARMUP + 40)) taskset -c "$LOAD_CPU" "$PYTHON" load/grpc_predict.py load \
        --target "$3" --clients "$4" --streams "$5" --duration "$DURATION" --warmup "$WARMUP" \
        ${7:+--metrics "$7"} | grep '^RESULT')
  row "$1" "$2" small "$6" "${out:+$out $(cpu_busy "$before" "$(cpu_snap)")}"
}

# The gRPC front door (J): the gateway of F with --grpc-port, TF Serving's Predict over gRPC and
# the same application over HTTP from the same process (the two taken next to each other,
# GRPC_REPEAT times); beside them, measured right
# after, a bare grpc.aio server answering the same Predict (K, on the gateway's core) and the
# mini-gateway (E, its runtime on RUNTIME_CPU). All four stay up for the whole section, so that
# the points of one concurrency are taken back to back (ratios within minutes, not sections).
GRPC_CONCS=${GRPC_CONCS:-"1 64"}
GRPC_REPEAT=${GRPC_REPEAT:-3}
# wrk_point SYSTEM URL CONC: one wrk point of the small payload beside the gRPC rows
wrk_point() {
  local before out
  before=$(cpu_snap)
  out=$(BODY=payloads/plain-small.json timeout $((DURATION + 20)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$3" -d"${DURATION}s" --timeout 10s -s load/post.lua "$2" | grep '^RESULT')
  row "$1" "rest, beside J gRPC" small "$3" "${out:+$out $(cpu_busy "$before" "$(cpu_snap)")}"
}
grpc_front_sweep() {
  local c shape conns streams api url ok=1 body=payloads/plain-small.json
  start gw "$SERVER_CPU" "$GW_READY" "$(gateway_cmd embedded "--grpc-port 8901")" || return
  pin_children "${PID[gw]}" "$RUNTIME_CPU"
  start bare_grpc "$SERVER_CPU" tcp:9502 "$PYTHON servers/tf_grpc_server.py 9502" || ok=
  start bare_inloop "$SERVER_CPU" tcp:9503 "$PYTHON servers/inloop_grpc_server.py 9503" || ok=
  start backend "$RUNTIME_CPU" tcp:9500 "$PYTHON servers/ceiling_b_grpc_server.py 9500" || ok=
  [ -n "$ok" ] && { start mini_gw "$SERVER_CPU" tcp:8902 \
      "$PYTHON -m uvicorn servers.mini_gateway:app ${UVICORN_FLAGS/8900/8902}" || ok=; }
  if [ -n "$ok" ]; then
    for url in "$GW_URL/increment" http://127.0.0.1:8902/gateway/applications/increment; do
      BODY=$body timeout 30 taskset -c "$LOAD_CPU" wrk -t1 -c8 -d"${WARMUP}s" -s load/post.lua "$url" >/dev/null
    done
    for c in $GRPC_CONCS; do
      # The gateway's gRPC points and its HTTP point next to each other, GRPC_REPEAT times (the
      # table shows medians): the host's speed drifts within a minute, so the ratio the target is
      # about is taken from points seconds apart. c connections of one call each (wrk's c); at
      # c > 1 also one connection of c calls.
      local shapes="$c:1 $([ "$c" -gt 1 ] && echo "1:$c")"
      for _ in $(seq "$GRPC_REPEAT"); do
        for shape in $shapes; do
          conns=${shape%:*} streams=${shape#*:}
          grpc_sweep "J gateway gRPC Predict + embedded runtime" "grpc, $conns conn x $streams" 127.0.0.1:8901 \
            "$conns" "$streams" "$c" http://127.0.0.1:8900/metrics
        done
        wrk_point "J gateway HTTP + embedded runtime (same process as J gRPC)" "$GW_URL/increment" "$c"
      done
      for shape in $shapes; do
        conns=${shape%:*} streams=${shape#*:}
        api="grpc, $conns conn x $streams"
        grpc_sweep "K bare grpc.aio Predict server (no gateway)" "$api" 127.0.0.1:9502 "$conns" "$streams" "$c"
        grpc_sweep "L bare gateway.grpc_server Predict server (no gateway)" "$api" 127.0.0.1:9503 \
          "$conns" "$streams" "$c"
      done
      wrk_point "E mini-gateway (reference)" http://127.0.0.1:8902/gateway/applications/increment "$c"
    done
  fi
  stop mini_gw; stop backend; stop bare_inloop; stop bare_grpc; stop gw
}

want() { [[ " $ONLY " == *" $1 "* ]]; }
steal() { awk '/^cpu[0-9]+ /{printf "%s=%d ", $1, $9}' /proc/stat; }
STEAL0=$(steal)
calib() {  # fixed pure-Python work on CPU 0, median ms: tracks host speed drift between runs
  taskset -c $SERVER_CPU "$PYTHON" -c 'import timeit, statistics as s
print("%.1f" % (1e3 * s.median(timeit.repeat("sum(i * i for i in range(200000))", number=5, repeat=7)) / 5))'
}
CALIB0=$(calib)
TF_SERVER="$PYTHON servers/tf_grpc_server.py 9500"

for REP in $(seq "$REPEAT"); do
  if want ceil_a; then
    start ceil_a $SERVER_CPU http://127.0.0.1:8600/health \
      "$PYTHON -m uvicorn servers.ceiling_a_starlette:app ${UVICORN_FLAGS/8900/8600}" &&
    { http_sweep "A starlette+orjson (no gRPC)" rest http://127.0.0.1:8600/gateway/applications/increment plain
      stop ceil_a; }
  fi

  if want mlserver; then
    start mlserver $SERVER_CPU http://127.0.0.1:8700/v2/models/increment/ready \
      "$MLS/mlserver start ." servers/mlserver &&
    { http_sweep "C mlserver" "v2 rest" http://127.0.0.1:8700/v2/models/increment/infer v2
      stop mlserver; }
  fi

  # M: the gateway of F through its Open Inference Protocol front door, C's bodies and URL shape,
  # right after C (the ratio the target is about is of points minutes apart).
  if want gw_v2 && start gw $SERVER_CPU "$GW_READY" "$(gateway_cmd embedded)"; then
    pin_children "${PID[gw]}" "$RUNTIME_CPU"
    http_sweep "M gateway v2 REST + embedded runtime" "v2 rest, runtime on cpu$RUNTIME_CPU" \
      "http://127.0.0.1:8900/v2/models/{size}/infer" v2
    stop gw
  fi

  if want kserve; then
    start kserve $SERVER_CPU http://127.0.0.1:8800/v1/models/increment \
      "$KS/python servers/kserve_increment.py --model_name increment --http_port 8800 \
       --grpc_port 8801 --workers 1 --enable_latency_logging false \
       --log_config_file servers/kserve_quiet_logging.json" &&
    { http_sweep "D kserve" "v1 rest" http://127.0.0.1:8800/v1/models/increment:predict kservev1
      stop kserve; }
  fi

  if want mini_gw; then
    start backend "$RUNTIME_CPU" tcp:9500 "$PYTHON servers/ceiling_b_grpc_server.py 9500" &&
    { start mini_gw $SERVER_CPU tcp:8900 "$PYTHON -m uvicorn servers.mini_gateway:app $UVICORN_FLAGS" &&
      { http_sweep "E mini-gateway (reference)" "rest, runtime on cpu$RUNTIME_CPU" "$GW_URL/increment" plain
        stop mini_gw; }
      stop backend; }
  fi

  # E2: the least a gateway that keeps its models in processes of their own does per request
  # (servers/mini_embedded.py: A's front end, one local-wire Predict per request to the embedded
  # runtime), right before F: the floor F's ratio to A is measured against.
  if want mini_embedded; then
    sockets=$(mktemp -d)
    start runtime_i32 "$RUNTIME_CPU" "unix:$sockets/increment.sock" "$PYTHON -m runtime serve \
      configs/embedded/models/increment --port 0 --local-socket $sockets/increment.sock" &&
    { start runtime_f32 "$RUNTIME_CPU" "unix:$sockets/increment_f32.sock" "$PYTHON -m runtime serve \
        configs/embedded/models/increment_f32 --port 0 --local-socket $sockets/increment_f32.sock" &&
      { start mini_embedded $SERVER_CPU tcp:8900 \
          "env RUNTIME_SOCKETS=$sockets $PYTHON -m uvicorn servers.mini_embedded:app $UVICORN_FLAGS" &&
        { http_sweep "E2 mini-gateway, embedded runtime (reference)" "rest, runtime on cpu$RUNTIME_CPU" \
            "$GW_URL/{size}" plain
          stop mini_embedded; }
        stop runtime_f32; }
      stop runtime_i32; }
    rm -rf "$sockets"
  fi

  want gw_embedded && gateway_sweep gw "F gateway + embedded runtime" embedded
  want gw_batching && gateway_sweep gw "H gateway + embedded runtime, batching on" batching
  want gw_grpc && gateway_sweep gw "G gateway + grpc.aio server" grpc "$TF_SERVER"
  want gw_grpc_grpcio && GATEWAY_BACKEND_CLIENT=grpcio \
    gateway_sweep gw "G2 gateway + grpc.aio server, backend_client grpcio" grpc "$TF_SERVER"
  want gw_grpc_batching && gateway_sweep gw "I gateway + grpc.aio server, batching on" grpc_batching "$TF_SERVER"
  want grpc_front && grpc_front_sweep
done

# Backend ceilings: how many small Predicts per second each gRPC backend of E and G answers on
# its core when the client costs next to nothing (h2load, one connection, 64 streams, on
# SERVER_CPU). A gateway in front of one of them (batching off) cannot pass it.
if want backend_ceiling; then
  "$PYTHON" load/grpc_bodies.py
  for backend in peers tf; do
    if [ $backend = peers ]; then cmd="$PYTHON servers/ceiling_b_grpc_server.py 9500"; path=/peers.PredictionService/Predict
    else cmd=$TF_SERVER; path=/tensorflow.serving.PredictionService/Predict; fi
    if start "ceiling_$backend" "$RUNTIME_CPU" tcp:9500 "$cmd"; then
      rps=$(timeout $((DURATION + WARMUP + 30)) taskset -c $SERVER_CPU h2load -c1 -m64 -t1 -D "$DURATION" \
              --warm-up-time "$WARMUP" -d "payloads/grpc-$backend-small.bin" -H 'content-type: application/grpc' \
              -H 'te: trailers' "http://127.0.0.1:9500$path" | awk '/^finished in/{print $4}')
      extra backend_ceiling "${backend}_rps" "${rps:-failed}"
      stop "ceiling_$backend"
    fi
  done
fi

# Workers: 1 and 2 gateway processes with the same placement. Two cores hold everything
# here (gateway workers, embedded runtime, wrk), all unpinned (cores 0-1), so the ratio
# shows what a second worker adds when the other processes compete for the same cores. With
# batching on, the runtime and wrk need little CPU, which leaves the second core mostly to
# the second worker; without it, the runtime needs ~1/3 of a core per 1,000 req/s.
if want workers; then
  for cfg in batching embedded; do
    for n in 1 2; do
      if start gw 0,1 "$GW_READY" "$(gateway_cmd $cfg "--workers $n")"; then
        for size in small medium; do
          body=payloads/plain-$size.json
          url=$GW_URL/$([ "$size" = small ] && echo increment || echo increment_f32)
          BODY=$body timeout 30 taskset -c 0,1 wrk -t1 -c8 -d"${WARMUP}s" -s load/post.lua "$url" >/dev/null
          before=$(cpu_snap)
          out=$(BODY=$body timeout $((DURATION + 20)) taskset -c 0,1 wrk -t2 -c64 -d"${DURATION}s" \
                --timeout 10s -s load/post.lua "$url" | grep '^RESULT')
          REP=w row "W gateway --workers $n ($cfg)" "rest, all on cpu0-1" "$size" 64 \
            "${out:+$out $(cpu_busy "$before" "$(cpu_snap)")}"
        done
        stop gw
      fi
    done
  done
fi

# Memory: resident set of the gateway process after 20,000 and after 200,000 requests.
if want memory; then
  if start gw $SERVER_CPU "$GW_READY" "$(gateway_cmd embedded)"; then
    pin_children "${PID[gw]}" "$RUNTIME_CPU"
    done_requests=0
    for target in $MEM_REQUESTS; do
      while [ "$done_requests" -lt "$target" ]; do
        out=$(BODY=payloads/plain-small.json timeout 60 taskset -c $LOAD_CPU \
              wrk -t1 -c64 -d5s -s load/post.lua "$GW_URL/increment" | grep '^RESULT')
        n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$out")
        [ -n "$n" ] && [ "$n" -gt 0 ] || { note "memory: load failed"; break 2; }
        done_requests=$((done_requests + n))
      done
      extra memory "rss_kb_after_${target}" "$(rss_kb "${PID[gw]}") (after $done_requests requests)"
    done
    stop gw
  fi
fi

# Large tensors: 100 MB of float32 through the binary path, the v2 binary tensor extension and JSON,
# and the ceilings:
# memcpy, a raw TCP echo on loopback (server core, no HTTP), the Starlette ceiling's binary echo.
large() {
  timeout 600 taskset -c $LOAD_CPU "$PYTHON" load/large_tensor.py --mb "${LARGE_MB:-100}" "$@" \
    | tee -a "$EXTRA.large" | while IFS=$'\t' read -r k v; do extra large "$k" "$v"; done
}
if want binary; then
  if start gw $SERVER_CPU "$GW_READY" "$(gateway_cmd embedded)"; then
    pin_children "${PID[gw]}" "$RUNTIME_CPU"
    # The gateway's peak RSS during one binary request: the high-water mark reset first.
    extra large mb "${LARGE_MB:-100}"
    extra large rss_before_binary_kb "$(rss_kb "${PID[gw]}")"
    echo 5 > /proc/"${PID[gw]}"/clear_refs
    timeout 120 taskset -c $LOAD_CPU "$PYTHON" load/large_tensor.py --mb "${LARGE_MB:-100}" --repeat 1 --json-repeat 0 \
      --url "$GW_URL/increment_f32" --prefix rss_run_ >/dev/null
    extra large peak_rss_binary_kb "$(awk '/^VmHWM:/{print $2}' /proc/"${PID[gw]}"/status)"
    large --url "$GW_URL/increment_f32" --loopback --echo-cpu "$SERVER_CPU" \
      --v2-url http://127.0.0.1:8900/v2/models/increment_f32/infer
    stop gw
  fi
  if start ceil_a $SERVER_CPU http://127.0.0.1:8600/health \
      "$PYTHON -m uvicorn servers.ceiling_a_starlette:app ${UVICORN_FLAGS/8900/8600}"; then
    large --url http://127.0.0.1:8600/gateway/applications/increment_f32 --prefix starlette_ceiling_ --json-repeat 0 \
      --ingest-url http://127.0.0.1:8600/ingest
    stop ceil_a
  fi
fi

# HTTP servers: the gateway of F under uvicorn (`gateway serve`) and under granian
# (servers/granian_gateway.py: the same app and runtimes in granian's embedded server), small
# c = 64 points and the 100 MB binary round trip, alternating HTTP_ROUNDS times so that each
# pair is minutes apart at most.
if want http_servers; then
  for round in $(seq "${HTTP_ROUNDS:-3}"); do
    for server in uvicorn granian; do
      if [ "$server" = uvicorn ]; then cmd=$(gateway_cmd embedded); ready=$GW_READY; port=8900
      else cmd="$PYTHON servers/granian_gateway.py --config configs/embedded --port 8903"; port=8903
        ready=http://127.0.0.1:8903/health/ready; fi
      if start "http_$server" $SERVER_CPU "$ready" "$cmd"; then
        pin_children "${PID[http_$server]}" "$RUNTIME_CPU"
        url=http://127.0.0.1:$port/gateway/applications/increment
        BODY=payloads/plain-small.json timeout 30 taskset -c $LOAD_CPU wrk -t1 -c8 -d"${WARMUP}s" -s load/post.lua "$url" >/dev/null
        before=$(cpu_snap)
        out=$(BODY=payloads/plain-small.json timeout $((DURATION + 20)) taskset -c $LOAD_CPU \
              wrk -t1 -c64 -d"${DURATION}s" --timeout 10s -s load/post.lua "$url" | grep '^RESULT')
        REP=$round row "F gateway on $server" rest small 64 "${out:+$out $(cpu_busy "$before" "$(cpu_snap)")}"
        timeout 600 taskset -c $LOAD_CPU "$PYTHON" load/large_tensor.py --mb "${LARGE_MB:-100}" --json-repeat 0 \
          --url "http://127.0.0.1:$port/gateway/applications/increment_f32" --prefix "${server}_r${round}_" \
          | while IFS=$'\t' read -r k v; do extra http_servers "$k" "$v"; done
        stop "http_$server"
      fi
    done
  done
fi

# Request logs: latency with every request logged to a CloudEvents server taking 200 ms per event,
# beside the same application without a request log (the script starts both servers itself).
if want request_log; then
  timeout 300 "$PYTHON" request_log_bench.py --tsv > results/raw/request_log.tsv 2> logs/request_log.log ||
    note "request_log: the benchmark failed: $(tail -3 logs/request_log.log | tr '\n' ' ')"
  while IFS=$'\t' read -r k v; do extra request_log "$k" "$v"; done < results/raw/request_log.tsv
fi

note "calibration (ms, lower = faster host; compare across runs): start $CALIB0, end $(calib)"
note "hypervisor steal over the whole run (jiffies, 100/s): before: $STEAL0 after: $(steal)"
./env_report.sh > results/raw/env.md
"$PYTHON" load/render.py "$TSV" "$EXTRA" results/raw/env.md "$NOTES" > "$RESULTS"
echo "== wrote benchmarks/$RESULTS"
