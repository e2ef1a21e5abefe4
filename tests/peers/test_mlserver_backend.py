"""MLServer 1.7 as a `v2` backend of a real `gateway serve`: the contracts come from MLServer's
ModelMetadata, and the native API, an application (one and two stages) and the /v2 front door all
reach its models over inference.GRPCInferenceService/ModelInfer; when MLServer stops the gateway
says not ready (/health/ready 503; the /v2 readiness routes 400, as Triton's) and answers requests
503, and serves again once it is back.

`make test-peers` builds MLServer's venv (.venv-peers-mlserver) and runs this with
GATEWAY_MLSERVER_BIN; without it the tests are skipped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import running_gateway
from tests.peers.peer_processes import (
    MLSERVER_BIN,
    MLServer,
    running_mlserver,
    start_mlserver,
    unused_ports,
    write_gateway_config,
)

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not MLSERVER_BIN or not (Path(MLSERVER_BIN) / "mlserver").exists(),
                       reason="needs GATEWAY_MLSERVER_BIN, the bin folder of a venv with mlserver 1.7: "
                              "run `make test-peers`"),
]


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLServer]:
    with running_mlserver(tmp_path_factory.mktemp("mlserver")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(mlserver: MLServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("config")
    write_gateway_config(config, mlserver.grpc_target)
    with running_gateway(config) as (_, url):
        yield url


def test_contracts_are_discovered_from_mlservers_model_metadata(gateway: str) -> None:
    models = {model["name"]: model for model in httpx.get(f"{gateway}/gateway/models").json()["models"]}
    increment, shout = models["increment"], models["shout"]
    assert (increment["kind"], increment["contract"], increment["state"]) == ("v2", "discovered", "ready")
    assert increment["inputs"] == [{"name": "f", "dtype": "float32", "shape": [-1]},
                                   {"name": "i", "dtype": "int32", "shape": [-1, 2]}]
    assert increment["outputs"] == increment["inputs"]
    assert shout["inputs"] == [{"name": "word", "dtype": "string", "shape": [-1]}]
    assert httpx.get(f"{gateway}/health/ready").status_code == 200


def test_native_predict_on_an_mlserver_model(gateway: str) -> None:
    answer = httpx.post(f"{gateway}/gateway/models/increment/versions/1",
                        json={"f": [0.5, -2.0], "i": [[1, 2], [3, 4]]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"f": [1.5, -1.0], "i": [[2, 3], [4, 5]]}
    shouted = httpx.post(f"{gateway}/gateway/models/shout/versions/1", json={"word": ["hi", "grüß"]})
    assert shouted.status_code == 200, shouted.text
    assert shouted.json() == {"word": ["HI", "GRüß"]}  # bytes.upper() leaves non-ASCII letters alone


def test_applications_over_mlserver_one_and_two_stages(gateway: str) -> None:
    body = {"f": [1.0], "i": [[0, -1]]}
    once = httpx.post(f"{gateway}/gateway/applications/increment_app", json=body)
    twice = httpx.post(f"{gateway}/gateway/applications/twice", json=body)
    assert (once.status_code, twice.status_code) == (200, 200), (once.text, twice.text)
    assert once.json() == {"f": [2.0], "i": [[1, 0]]}
    assert twice.json() == {"f": [3.0], "i": [[2, 1]]}


def test_the_contract_is_checked_before_mlserver_is_called(gateway: str) -> None:
    wrong_rank = httpx.post(f"{gateway}/gateway/applications/increment_app", json={"f": [1.0], "i": [1, 2]})
    assert wrong_rank.status_code == 400, wrong_rank.text
    assert wrong_rank.json()["error"] == {"code": "contract_violation", "field": "i",
                                          "message": "expected shape [-1, 2], got [2]"}


def test_the_v2_front_door_over_mlserver(gateway: str) -> None:
    body = {"id": "call-1", "inputs": [
        {"name": "f", "shape": [2], "datatype": "FP32", "data": [1.5, 2.5]},
        {"name": "i", "shape": [1, 2], "datatype": "INT32", "data": [[7, 8]]}]}
    answer = httpx.post(f"{gateway}/v2/models/twice/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {out["name"]: out for out in answer.json()["outputs"]}
    assert answer.json()["id"] == "call-1"
    assert outputs["f"] == {"name": "f", "datatype": "FP32", "shape": [2], "data": [3.5, 4.5]}
    assert outputs["i"] == {"name": "i", "datatype": "INT32", "shape": [1, 2], "data": [9, 10]}
    model = httpx.post(f"{gateway}/v2/models/shout/versions/1/infer", json={"inputs": [
        {"name": "word", "shape": [2], "datatype": "BYTES", "data": ["ab", "cd"]}]})
    assert model.status_code == 200, model.text
    assert model.json()["model_version"] == "1"
    assert model.json()["outputs"] == [{"name": "word", "datatype": "BYTES", "shape": [2], "data": ["AB", "CD"]}]
    metadata = httpx.get(f"{gateway}/v2/models/increment").json()
    assert (metadata["platform"], metadata["versions"]) == ("v2", ["1"])
    assert metadata["inputs"] == [{"name": "f", "datatype": "FP32", "shape": [-1]},
                                  {"name": "i", "datatype": "INT32", "shape": [-1, 2]}]
    assert httpx.get(f"{gateway}/v2/models/increment/ready").status_code == 200


def _wait_status(url: str, status: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (got := httpx.get(url, timeout=5).status_code) != status:
        assert time.monotonic() < deadline, f"{url} answered {got}, not {status}, for {timeout:g} s"
        time.sleep(0.2)


def test_not_ready_while_mlserver_is_down_and_serving_again_once_back(tmp_path: Path) -> None:
    http_port, grpc_port = unused_ports()
    first = start_mlserver(tmp_path / "mlserver", http_port, grpc_port)
    config = tmp_path / "config"
    write_gateway_config(config, first.grpc_target)
    try:
        with running_gateway(config) as (_, url):
            first.stop()
            _wait_status(f"{url}/health/ready", 503)
            # The v2 routes answer not ready as Triton does: 400, empty body.
            _wait_status(f"{url}/v2/health/ready", 400)
            down = httpx.post(f"{url}/gateway/applications/increment_app", json={"f": [1.0], "i": [[1, 2]]})
            assert down.status_code == 503, down.text
            v2_down = httpx.post(f"{url}/v2/models/increment_app/infer", json={"inputs": [
                {"name": "f", "shape": [1], "datatype": "FP32", "data": [1.0]},
                {"name": "i", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}]})
            assert v2_down.status_code == 503, v2_down.text
            assert list(v2_down.json()) == ["error"]
            assert httpx.get(f"{url}/v2/models/increment/ready").status_code == 400
            assert httpx.get(f"{url}/v2/models/increment_app/ready").status_code == 400
            again = start_mlserver(tmp_path / "mlserver", http_port, grpc_port)  # where the gateway calls
            try:
                _wait_status(f"{url}/health/ready", 200, timeout=30)
                back = httpx.post(f"{url}/gateway/applications/increment_app", json={"f": [1.0], "i": [[1, 2]]})
                assert (back.status_code, back.json()) == (200, {"f": [2.0], "i": [[2, 3]]})
            finally:
                again.stop()
            assert again.left_running() == []
    finally:
        first.stop()
    assert first.left_running() == []

