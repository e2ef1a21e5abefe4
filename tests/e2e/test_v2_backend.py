"""`gateway serve` in front of a v2 (Open Inference Protocol) server, the v2 test server on its own
event loop: models listed and their contracts discovered, applications over v2 models (versions
and labels), a pipeline whose stages are a v2 model and an embedded one, batching, metrics, and
readiness that follows the server going down and coming back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_app, write_model
from tests.e2e.processes import running_gateway
from tests.oip_server import FakeOIPServer
from tests.waiting import wait_until

GATEWAY_YAML = ("kind: Gateway\ndefaults: {runtime_start_timeout_s: 20, drain_timeout_s: 0.2, "
                "shutdown_grace_s: 0.2, health_interval_s: 0.3}\nlogging: {access_log: false}\n")
DOUBLE = "def predict(y):\n    return {'z': y * 2}\n"


class ServerThread:
    """The v2 test server on an event loop in a thread (the gateway under test is another
    process); `stop` and `start` it to take it down and bring it back on the same port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = FakeOIPServer()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def v2_server() -> Iterator[ServerThread]:
    thread = ServerThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.close()


def _v2_model(config: Path, name: str, fields: str, rest: str = "") -> None:
    (config / "models" / f"{name}.yaml").write_text(
        f"kind: Model\nname: {name}\nbackend:\n  protocol: v2\n  target: '{{target}}'\n  {fields}\n{rest}")


Gateway = tuple[str, ServerThread]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config")
    (config / "gateway.yaml").write_text(GATEWAY_YAML)
    write_model(config, "double", "double", DOUBLE, inputs="y: {shape: [-1], type: float32}",
                outputs="z: {shape: [-1], type: float32}")
    with v2_server() as server:
        (config / "models").mkdir(exist_ok=True)
        models = {
            "add": ("model_name: add", "version_labels: {stable: 1}\n"),  # floating, contract discovered
            "echo": ("model_name: echo", ""),
            "add_batched": ("model_name: add\n  version: 1",
                            "contract:\n  inputs:\n    x: {type: float32, shape: [-1]}\n"
                            "  outputs:\n    y: {type: float32, shape: [-1]}\n"
                            "batching: {max_batch_size: 64, max_calls: 1}\n"),
        }
        for name, (fields, rest) in models.items():
            _v2_model(config, name, fields, rest)
            path = config / "models" / f"{name}.yaml"
            path.write_text(path.read_text().replace("{target}", server.server.target))
        write_app(config, "add_app", "add")
        write_app(config, "add_stable", "add@stable")
        write_app(config, "add_v1", "add:1")
        write_app(config, "echo_app", "echo")
        write_app(config, "batched_app", "add_batched")
        (config / "applications" / "mixed.yaml").write_text(
            "kind: Application\nname: mixed\npipeline:\n  - - model: add:1\n  - - model: double:1\n")
        with running_gateway(config) as (_, url):
            yield url, server


def test_v2_models_are_listed_with_their_discovered_contracts(gateway: Gateway) -> None:
    url, _ = gateway
    models = {m["name"]: m for m in httpx.get(f"{url}/gateway/models", timeout=10).json()["models"]}
    add = models["add"]
    assert (add["kind"], add["version"], add["labels"], add["contract"]) == ("v2", 0, {"stable": 1}, "discovered")
    assert add["signature_name"] == "serving_default"
    assert add["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1]}]
    assert [(i["name"], i["dtype"], i["shape"]) for i in models["echo"]["inputs"]] == [
        ("f32", "float32", [-1, 2]), ("i64", "int64", [-1]), ("text", "string", [-1]), ("flag", "bool", [-1]),
        ("half", "float16", [-1])]
    assert (models["add_batched"]["kind"], models["add_batched"]["contract"]) == ("v2", "declared")
    assert models["double"]["kind"] == "local"
    wait_until(lambda: all(m["state"] == "ready" for m in httpx.get(f"{url}/gateway/models", timeout=10)
                           .json()["models"]), timeout=10)


def test_applications_over_a_v2_model_reach_the_versions_they_name(gateway: Gateway) -> None:
    url, server = gateway
    body = {"x": [1.0, 2.0]}
    latest = httpx.post(f"{url}/gateway/applications/add_app", json=body, timeout=10)
    assert latest.status_code == 200, latest.text
    assert latest.json() == {"y": [11.0, 12.0]}  # the server's latest version, 2
    for app in ("add_stable", "add_v1"):
        answer = httpx.post(f"{url}/gateway/applications/{app}", json=body, timeout=10)
        assert answer.json() == {"y": [2.0, 3.0]}, app
    versions = [r.model_version for r in server.server.infers()[-3:]]
    assert versions == ["", "1", "1"]
    assert server.server.infers()[-1].id == answer.headers["x-request-id"]
    # The native model routes too; a label the manifests do not define is a 404.
    assert httpx.post(f"{url}/gateway/models/add/versions/2", json=body, timeout=10).json() == {"y": [11.0, 12.0]}
    assert httpx.post(f"{url}/gateway/models/add/labels/stable", json=body, timeout=10).json() == {"y": [2.0, 3.0]}
    missing = httpx.post(f"{url}/gateway/models/add/labels/canary", json=body, timeout=10)
    assert missing.status_code == 404
    assert "has no version label 'canary'" in missing.json()["error"]["message"]
    # The contract discovered is checked as a declared one is.
    refused = httpx.post(f"{url}/gateway/applications/add_app", json={"x": ["a"]}, timeout=10)
    assert refused.status_code == 400


def test_every_datatype_through_an_application(gateway: Gateway) -> None:
    url, _ = gateway
    body = {"f32": [[1.5, 2.0]], "i64": [2**40], "text": ["héllo"], "flag": [True], "half": [0.5]}
    answer = httpx.post(f"{url}/gateway/applications/echo_app", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == body


def test_a_pipeline_of_a_v2_model_and_an_embedded_one(gateway: Gateway) -> None:
    url, _ = gateway
    answer = httpx.post(f"{url}/gateway/applications/mixed", json={"x": [1.0, 2.0]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"z": [4.0, 6.0]}  # (x + 1) * 2
    assert answer.headers["x-gateway-variants"] == "add:1, double:1"


def test_batching_joins_concurrent_requests_into_one_model_infer(gateway: Gateway) -> None:
    url, server = gateway
    server.server.delay_s = 0.3
    before = len(server.server.infers())
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: httpx.post(f"{url}/gateway/applications/batched_app",
                                                         json={"x": [float(i)]}, timeout=10), range(8)))
    finally:
        server.server.delay_s = 0.0
    assert [a.json() for a in answers] == [{"y": [i + 1.0]} for i in range(8)]
    sizes = [list(r.inputs[0].shape) for r in server.server.infers()[before:]]
    assert len(sizes) < 8  # requests arriving while a call was busy left together
    assert sum(size[0] for size in sizes) == 8


def test_metrics_name_the_v2_model(gateway: Gateway) -> None:
    url, _ = gateway
    httpx.post(f"{url}/gateway/applications/add_v1", json={"x": [1.0]}, timeout=10)
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert any('model="add"' in line and 'version="1"' in line for line in metrics.splitlines()
               if line.startswith("gateway_backend"))


def test_readiness_follows_the_v2_server_down_and_back(gateway: Gateway) -> None:
    url, server = gateway
    wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, timeout=10)
    server.stop()
    try:
        wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 503, timeout=10)
        detail = httpx.get(f"{url}/health/ready", timeout=5).json()["applications"]["add_v1"]
        assert detail["models"]["add:0"]["ready"] is False
        down = httpx.post(f"{url}/gateway/applications/add_v1", json={"x": [1.0]}, timeout=10)
        assert down.status_code == 503
        assert "retry-after" in down.headers
    finally:
        server.start()
    started = time.monotonic()
    wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=5).status_code == 200, timeout=15)
    assert time.monotonic() - started < 15
    assert httpx.post(f"{url}/gateway/applications/add_v1", json={"x": [1.0]}, timeout=10).json() == {"y": [2.0]}
