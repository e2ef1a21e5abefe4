# Two commands do all set-up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
CHROMIUM := /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test lint typecheck protos check-protos unit chromium bench bench-codec test-hydro-grpc test-tf-grpc test-peers test-lb

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## run: serve the example config on $(HOST):$(PORT) with the embedded runtime
run: $(VENV)/.installed-run
	$(BIN)/gateway serve --config config/ --host $(HOST) --port $(PORT)

## test: lint, type checks, generated-code check and every test (what CI runs)
test: $(VENV)/.installed-dev lint typecheck check-protos unit

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

## unit: every test not behind a marker of its own, on TEST_WORKERS processes (pytest-xdist; 0: in this one)
TEST_WORKERS ?= 2
unit: $(VENV)/.installed-dev chromium
	$(BIN)/pytest -q -n $(TEST_WORKERS)

## test-hydro-grpc: Hydrosphere's own client stubs (hydro-serving-grpc 3.x) against `gateway serve
## --grpc-port`; they need protobuf<4, so they get a venv of their own (.venv-hydro-grpc, built on first use)
HYDRO_GRPC_VENV := .venv-hydro-grpc
$(HYDRO_GRPC_VENV)/.installed:
	$(PYTHON) -m venv $(HYDRO_GRPC_VENV)
	$(HYDRO_GRPC_VENV)/bin/python -m pip install -q 'hydro-serving-grpc==3.0.3' 'protobuf==3.20.3' 'grpcio>=1.60,<2'
	touch $@

test-hydro-grpc: $(VENV)/.installed-dev $(HYDRO_GRPC_VENV)/.installed
	HYDRO_GRPC_PYTHON=$(abspath $(HYDRO_GRPC_VENV)/bin/python) $(BIN)/pytest -q -m hydro_grpc tests/gateway/grpc_api

## test-peers: real peers of the Open Inference Protocol (tests marked `peers`, tests/peers/): MLServer
## 1.7.1 serving the tests' models as a `v2` backend, and Triton's tritonclient[http,grpc] against the
## gateway's /v2 REST and gRPC front doors. Their pins differ from the gateway's and from each other's,
## so each gets a venv, built on first use (~1 min each): .venv-peers-mlserver (also the benchmark's
## MLServer) and .venv-peers-triton.
PEERS_MLSERVER_VENV := .venv-peers-mlserver
PEERS_TRITON_VENV   := .venv-peers-triton
$(PEERS_MLSERVER_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_MLSERVER_VENV)
	$(PEERS_MLSERVER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_MLSERVER_VENV)/bin/python -m pip install -q 'mlserver==1.7.1'
	touch $@

$(PEERS_TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(PEERS_TRITON_VENV)
	$(PEERS_TRITON_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_TRITON_VENV)/bin/python -m pip install -q 'tritonclient[http,grpc]>=2.50,<3' 'numpy>=1.26'
	touch $@

test-peers: $(VENV)/.installed-dev $(PEERS_MLSERVER_VENV)/.installed $(PEERS_TRITON_VENV)/.installed
	GATEWAY_MLSERVER_BIN=$(abspath $(PEERS_MLSERVER_VENV)/bin) \
	GATEWAY_TRITON_PYTHON=$(abspath $(PEERS_TRITON_VENV)/bin/python) \
	  $(BIN)/pytest -q -p no:cacheprovider -m peers tests/peers

## test-lb: real load balancers in front of three gateways (tests marked `lb`, tests/deploy/): Debian's
## haproxy and nginx (installed with apt-get when missing), each running the committed example config
## (deploy/haproxy/haproxy.cfg, deploy/nginx/nginx.conf) as the test's own foreground process, while the
## gateways are restarted one by one and one is killed under load (~1.5 min). LB_FIGURES: where the
## figures go (one JSON line per balancer, the file emptied at each run; docs/RELIABILITY.md quotes them);
## a failed run's logs are copied to build/lb-logs/.
HAPROXY     := /usr/sbin/haproxy
NGINX       := /usr/sbin/nginx
LB_FIGURES  ?= build/lb-figures.jsonl
test-lb: $(VENV)/.installed-dev
	@[ -x $(HAPROXY) ] && [ -x $(NGINX) ] || { \
	  echo "$(HAPROXY) or $(NGINX) is missing: installing Debian's haproxy and nginx packages for the load balancer tests"; \
	  { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy nginx; } && \
	    [ -x $(HAPROXY) ] && [ -x $(NGINX) ] || { \
	    echo "could not install haproxy or nginx: run 'apt-get install -y haproxy nginx' as root; make test-lb needs both"; exit 1; }; }
	@mkdir -p $(dir $(LB_FIGURES)) && : > $(LB_FIGURES)
	GATEWAY_HAPROXY=$(HAPROXY) GATEWAY_NGINX=$(NGINX) GATEWAY_LB_FIGURES=$(abspath $(LB_FIGURES)) \
	  $(BIN)/pytest -q -s -p no:cacheprovider -m lb tests/deploy

## chromium: Debian's chromium for the browser tests (Playwright drives it; it cannot download its own),
## and h2load (nghttp2-client) for the HTTP/2 load test of the gRPC server
chromium:
	@test -x $(CHROMIUM) && command -v h2load >/dev/null || { \
	  echo "$(CHROMIUM) or h2load is missing: installing Debian's chromium and nghttp2-client packages for the tests"; \
	  { $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium nghttp2-client; } && \
	    test -x $(CHROMIUM) && command -v h2load >/dev/null || { \
	    echo "could not install chromium or nghttp2-client: run 'apt-get install -y chromium nghttp2-client' as root;" \
	         "tests/e2e/test_docs_page.py and tests/gateway/grpc_server/test_http2_peers.py fail without them"; exit 1; }; }

## protos: regenerate protos/*_pb2.py(i) from protos/**/*.proto, and the TF Serving client example's
## stubs (examples/tfserving_client/generated/) from tests/fixtures/upstream_protos/
protos: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python bash scripts/gen_protos.sh
	PYTHON=$(BIN)/python bash examples/tfserving_client/gen_stubs.sh

check-protos: protos
	@git diff --exit-code --stat -- protos examples/tfserving_client/generated || \
	  (echo "generated protobuf code is out of date: run 'make protos' and commit" && exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- protos examples/tfserving_client/generated)" || \
	  (git status --porcelain -- protos examples/tfserving_client/generated; \
	   echo "untracked generated files in protos/ or examples/tfserving_client/generated/" && exit 1)

## test-tf-grpc: TF Serving's own Python client (tensorflow-serving-api, tf.make_tensor_proto) against
## the gateway's gRPC port; builds .venv-tf once (it pulls tensorflow, the CPU wheel: ~600 MB).
TF_VENV := .venv-tf
$(TF_VENV)/.installed:
	$(PYTHON) -m venv $(TF_VENV)
	$(TF_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF_VENV)/bin/python -m pip install -q tensorflow-serving-api
	touch $@

test-tf-grpc: $(VENV)/.installed-dev $(TF_VENV)/.installed
	GATEWAY_TF_PYTHON=$(abspath $(TF_VENV)/bin/python) $(BIN)/pytest -q -m tensorflow_serving_api \
	  tests/e2e/test_tensorflow_serving_api.py

## bench: the gateway against its peers in one run (~15 min; not part of `make test`).
## Installs wrk (apt-get) and the peers' virtualenvs (benchmarks/.venv-*) on first use.
## Writes benchmarks/results/results.md; knobs: ONLY, DURATION, CONCS, REPEAT (benchmarks/README.md)
bench: $(VENV)/.installed-dev
	PYTHON=$(abspath $(BIN)/python) benchmarks/run_all.sh

## bench-grpc: the gRPC front door's rows alone (~4 min): its Predict vs its HTTP, a bare grpc.aio
## server, its own gRPC server alone and the mini-gateway, side by side; writes benchmarks/results/grpc_front.md
.PHONY: bench-grpc
bench-grpc: $(VENV)/.installed-dev
	ONLY=grpc_front RESULTS=results/grpc_front.md PYTHON=$(abspath $(BIN)/python) benchmarks/run_all.sh

## bench-codec: JSON <-> TensorProto codec timings and ratios (see benchmarks/README.md)
bench-codec: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/codec_bench.py
