"""The native API over a real uvicorn, with the real runtime behind it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import Config
from gateway.settings import Settings
from tests.conftest import serve_app

PREDICT = "/gateway/applications/increment_app"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(Settings(), example_config)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def test_readme_request_is_incremented(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, content=b'{ "number": [1] }', headers=JSON)
    assert response.status_code == 200
    assert response.content == b'{"number":[2]}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]


async def test_hydrosphere_spelling_of_the_route(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/application/increment_app", json={"number": [1, 2, 3]})
    assert response.json() == {"number": [2, 3, 4]}


async def test_request_id_from_the_client_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, json={"number": [1]}, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"number": "x"}', "number", 'expected a number or a list, got "x"'),
        (b'{"num": [1]}', "number", "missing input 'number'"),
        (b'{"number": [1], "extra": 2}', "extra", "unknown input 'extra'"),
        (b'{"number": [[1]]}', "number", "expected shape [-1], got [1, 1]"),
        (b'{"number": [1, 2.5]}', "number[1]", "expected an integer"),
        (b'{"number": [1, 4294967296]}', "number[1]", "out of range for int32"),
        (b'{"number": [1, [2]]}', "number[1]", "ragged"),
    ],
)
async def test_contract_violations_are_400_naming_the_field(
    client: httpx.AsyncClient, body: bytes, field: str, words: str
) -> None:
    response = await client.post(PREDICT, content=body, headers=JSON)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "contract_violation"
    assert error["field"] == field
    assert words in error["message"]


@pytest.mark.parametrize("body", [b"not json", b"", b'{"number": [1]', b"[1, 2]"])
async def test_bodies_that_are_not_a_json_object_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(PREDICT, content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_json", "contract_violation")


async def test_unknown_application_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/nope", json={"number": [1]})
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "application 'nope' does not exist"}}


async def test_unknown_route_is_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_another_method_on_the_predict_route_is_405(client: httpx.AsyncClient) -> None:
    response = await client.put(PREDICT)  # GET answers the application's plan (routes/applications.py)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, HEAD, POST"


async def test_non_json_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, content=b"number=1",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_health(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    detail = ready.json()
    assert detail["status"] == "ready"
    assert detail["applications"]["increment_app"]["models"]["increment_model:1"]["ready"] is True


async def test_several_inputs_and_outputs_of_different_dtypes(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/scaler_app",
                                 json={"features": [[1, 10, 100], [3, 20, 200]], "unit": "cm"})
    assert response.status_code == 200
    # Outputs come in contract order.
    assert response.content == b'{"scaled":[[0.0,0.0,0.0],[1.0,2.0,2.0]],"rows":2,"unit":"cm"}'


async def test_a_scalar_input_must_be_a_scalar(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/scaler_app",
                                 json={"features": [[1, 10, 100]], "unit": ["cm"]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "unit"
    assert "expected shape scalar, got [1]" in response.json()["error"]["message"]


async def test_paths_beyond_the_application_name_are_not_routes(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/increment_app/extra", json={"number": [1]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert (await client.post("/gateway/applications/", json={"number": [1]})).status_code == 404


async def test_non_finite_answers_are_strict_json_null_on_native_routes_tokens_on_v1(
        client: httpx.AsyncClient) -> None:
    body = b'{"features": [[NaN, Infinity, -Infinity], [3, 20, 200]], "unit": "cm"}'
    for path in ("/gateway/applications/scaler_app", "/gateway/models/scaler_model"):
        response = await client.post(path, content=body, headers=JSON)
        assert response.status_code == 200, response.text
        assert json.loads(response.content, parse_constant=pytest.fail) == {  # no NaN/Infinity tokens
            "scaled": [[None, None, None], [1.0, 2.0, 2.0]], "rows": 2, "unit": "cm"}
    tf = await client.post("/v1/models/scaler_model:predict",
                           content=b'{"inputs": {"features": [[NaN, Infinity, -Infinity]], "unit": "cm"}}')
    assert b'"scaled":[[NaN,Infinity,-Infinity]]' in tf.content


async def test_the_model_spec_header_names_the_signature_the_metadata_describes(client: httpx.AsyncClient) -> None:
    metadata = (await client.get("/v1/models/increment_model/metadata")).json()["model_spec"]
    assert metadata["signature_name"] == "increment"  # the contract's name in serving.yaml
    native = await client.post("/gateway/models/increment_model", json={"number": [1]})
    tf = await client.post("/v1/models/increment_model:predict", json={"instances": [1]})
    for response in (native, tf):
        assert response.headers["x-model-spec"] == "name=increment_model; version=1; signature_name=increment"


async def test_float_inputs_round_integers_as_decimals(client: httpx.AsyncClient) -> None:
    for features in ("[[16777217, 10, 100]]", "[[16777217.0, 10, 100]]"):
        response = await client.post("/gateway/applications/scaler_app", headers=JSON,
                                     content=b'{"features": %s, "unit": "cm"}' % features.encode())
        assert response.status_code == 200, response.text
        assert response.json()["scaled"] == [[(16777216 - 1) / 2, 0.0, 0.0]]
    too_big = await client.post("/gateway/applications/scaler_app", json={"features": [[1e39, 1, 1]], "unit": ""})
    assert (too_big.status_code, too_big.json()["error"]["field"]) == (400, "features[0][0]")
