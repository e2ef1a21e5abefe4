"""The flows of a TF Serving Python client (model, version, label, status, metadata, reload)
through the gateway's /v1 API, against the TF-Serving-protocol test server and against the
embedded runtime, which speaks the same protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import Config
from gateway.settings import Settings
from tests.conftest import serve_app
from tests.gateway.test_tfserving_api import BATCH, SPEC, V1, V2, write_config
from tests.tfserving_server import FakeTFServing

AVAILABLE = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    server = FakeTFServing()
    await server.start()
    try:
        config = write_config(tmp_path / "config", server.target)
        async with (serve_app(create_app(Settings(), config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            yield client
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("flag", "path", "predictions", "spec"),
    [
        ("-m Toy", "/v1/models/Toy:predict", V2, "name=Toy; version=2"),
        ("-m Toy_double", "/v1/models/Toy_double:predict", [[2.0], [3.0]], "name=Toy_double; version=1"),
        ("-v 1", "/v1/models/Toy/versions/1:predict", V1, "name=Toy; version=1"),
        ("-v 2", "/v1/models/Toy/versions/2:predict", V2, "name=Toy; version=2"),
        ("-l stable", "/v1/models/Toy/labels/stable:predict", V1, "name=Toy; version=1"),
        ("-l canary", "/v1/models/Toy/labels/canary:predict", V2, "name=Toy; version=2"),
    ],
)
async def test_request_flows(client: httpx.AsyncClient, flag: str, path: str, predictions: object,
                             spec: str) -> None:
    response = await client.post(path, json={"signature_name": "serving_default", "instances": BATCH})
    assert response.status_code == 200, (flag, response.text)
    assert response.json() == {"predictions": predictions}
    assert response.headers[SPEC] == f"{spec}; signature_name=serving_default"


async def test_status_metadata_and_reload_flows(client: httpx.AsyncClient) -> None:
    status = await client.get("/v1/models/Toy_double/versions/1")
    assert status.json() == {"model_version_status": [{"version": "1", **AVAILABLE}]}
    metadata = (await client.get("/v1/models/Toy/metadata")).json()
    assert metadata["model_spec"] == {"name": "Toy", "signature_name": "", "version": "2"}
    default = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(default["inputs"]) == {"input_1"}
    assert set(default["outputs"]) == {"output_1"}
    assert default["method_name"] == "tensorflow/serving/predict"
    reload = {"model_config_list": {"config": [{"name": "Toy", "base_path": "/models/Toy",
                                                "model_platform": "tensorflow"}]}}
    response = await client.post("/gateway/admin/models/Toy/reload-config", json=reload)
    assert response.status_code == 200
    assert response.json() == {"status": {"error_code": "OK", "error_message": ""}}


# ---------------------------------------------------------------- the embedded runtime


@pytest.fixture
async def runtime_client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(Settings(), example_config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


async def test_embedded_runtime_behind_the_tf_api(runtime_client: httpx.AsyncClient) -> None:
    client = runtime_client
    response = await client.post("/v1/models/increment_model:predict", json={"instances": [1, 2]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [2, 3]}
    assert response.headers[SPEC] == "name=increment_model; version=1; signature_name=increment"  # its metadata's name
    response = await client.post("/v1/models/increment_model/versions/1:predict",
                                 json={"signature_name": "increment", "inputs": {"number": [5]}})
    assert response.json() == {"outputs": [6]}
    response = await client.post("/v1/models/increment_model/versions/2:predict", json={"instances": [1]})
    assert response.status_code == 404
    assert response.json() == {"error": "model increment_model has no version 2 (defined: 1)"}
    response = await client.post("/v1/models/increment_model:predict", json={"instances": [1.5]})
    assert response.status_code == 400
    assert "is not of expected type: int32" in response.json()["error"]
    status = await client.get("/v1/models/increment_model")
    assert status.json() == {"model_version_status": [{"version": "1", **AVAILABLE}]}
    metadata = (await client.get("/v1/models/increment_model/metadata")).json()
    assert metadata["model_spec"]["version"] == "1"
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert {"increment", "serving_default"} <= set(signatures)
    assert signatures["increment"]["inputs"]["number"]["dtype"] == "DT_INT32"
    response = await client.post("/gateway/models/increment_model", json={"number": [1]})
    assert response.json() == {"number": [2]}
    assert response.headers[SPEC].startswith("name=increment_model; version=1")
