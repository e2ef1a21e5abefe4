"""Metrics, the access log and request ids, over a real uvicorn with real backends."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.manifests import Config
from gateway.observability import AccessLog, Metrics
from gateway.settings import Settings
from tests.conftest import serve_app
from tests.gateway.test_tfserving_api import write_config
from tests.tfserving_server import FakeTFServing


@pytest.fixture
async def client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(Settings(access_log=False), example_config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{wanted}"' in head for key, wanted in labels.items()):
            return float(value)
    return 0.0


async def test_requests_are_counted_by_application_model_version_route_and_status(
        client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.post("/gateway/applications/increment_app", json={"number": [1]})).is_success
    assert (await client.post("/gateway/applications/increment_app", json={"number": "x"})).status_code == 400
    text = (await client.get("/metrics")).text
    labels = {"route": "/gateway/applications/{name}", "application": "increment_app"}
    assert sample(text, "gateway_requests_total", **labels, model="increment_model", version="1",
                  status="200") == 3
    assert sample(text, "gateway_requests_total", **labels, status="400") == 1
    assert sample(text, "gateway_contract_errors_total", application="increment_app") == 1
    assert sample(text, "gateway_request_duration_seconds_count", **labels) == 4
    assert sample(text, "gateway_backend_duration_seconds_count", model="increment_model", version="1") == 3
    assert sample(text, "gateway_request_bytes_total", route="/gateway/applications/{name}") > 0
    assert sample(text, "gateway_response_bytes_total", route="/gateway/applications/{name}") > 0
    assert sample(text, "gateway_requests_in_flight") == 1  # this /metrics request


async def test_backend_errors_are_counted_by_grpc_code(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        response = await client.post("/v1/models/errors:predict", json={"inputs": 5})
        assert response.status_code == 404
        text = (await client.get("/metrics")).text
    assert sample(text, "gateway_backend_errors_total", model="errors", code="NOT_FOUND") == 1
    # A floating model asked for no version has none of its own until it answers: "", never "0".
    assert sample(text, "gateway_backend_errors_total", model="errors", version="", code="NOT_FOUND") == 1
    assert sample(text, "gateway_backend_duration_seconds_count", model="errors", version="") == 1


async def test_request_id_reaches_the_backend(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        response = await client.post("/v1/models/toy_double:predict", json={"instances": [[1, 2]]},
                                     headers={"x-request-id": "trace-42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-42"
    assert tfs.metadata[-1]["x-request-id"] == "trace-42"


async def test_access_log_is_one_json_line_per_request(example_config: Config) -> None:
    stream = io.StringIO()
    app = create_app(Settings(access_log=False), example_config)
    app.state.observer.access_log = AccessLog(Metrics(), stream)
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        await client.post("/gateway/applications/increment_app", json={"number": [1]},
                          headers={"x-request-id": "abc", "authorization": "Bearer secret-key"})
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    entry = orjson.loads(stream.getvalue().splitlines()[0])
    assert entry["request_id"] == "abc"
    assert (entry["method"], entry["path"], entry["status"]) == (
        "POST", "/gateway/applications/increment_app", 200)
    assert (entry["application"], entry["model"], entry["version"]) == (
        "increment_app", "increment_model", "1")
    assert entry["bytes_in"] == len(b'{"number":[1]}')
    assert entry["duration_ms"] > 0
    assert "secret-key" not in stream.getvalue()


def test_a_full_access_log_drops_and_counts() -> None:
    released = threading.Event()

    class Stuck(io.StringIO):
        def write(self, text: str) -> int:
            released.wait(5)  # stuck until the test has filled the queue
            return 0

    metrics = Metrics()
    log = AccessLog(metrics, Stuck(), capacity=2)
    for _ in range(10):
        log.record({"n": 1})
    assert metrics.log_dropped._value.get() >= 7
    released.set()
