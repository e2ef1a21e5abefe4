"""`POST /gateway/applications/{name}` in its three dialects (native, TF Serving, Open Inference
Protocol) over a real uvicorn with real embedded runtimes: answers and errors in the dialect
asked, the overlap rules, a two-stage application, and the README's examples."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model

SETTINGS = Settings(access_log=False, max_elements=1_000)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("intake")
    write_model(root, "matrix", "matrix",
                "import numpy as np\n\ndef predict(x):\n"
                "    return {'y': (x * 2).astype(np.float32), 'n': np.array([x.shape[0]], dtype=np.int64)}\n",
                inputs="x: {shape: [-1, 2], type: float32}",
                outputs="y: {shape: [-1, 2], type: float32}\n    n: {shape: [1], type: int64}")
    write_model(root, "summer", "summer",
                "import numpy as np\n\ndef predict(y):\n    return {'total': y.sum(axis=1).astype(np.float64)}\n",
                inputs="y: {shape: [-1, 2], type: float32}", outputs="total: {shape: [-1], type: float64}")
    write_model(root, "named_inputs", "named_inputs", "def predict(inputs):\n    return {'y': inputs + 1}\n",
                inputs="inputs: {shape: [-1], type: int32}")
    write_model(root, "named_instances", "named_instances",
                "def predict(instances, k):\n    return {'y': instances * k}\n",
                inputs="instances: {shape: [-1], type: int32}\n    k: {shape: [], type: int32}")
    write_app(root, "doubler", "matrix:1")
    write_app(root, "overlap-inputs", "named_inputs:1")
    write_app(root, "overlap-instances", "named_instances:1")
    (root / "applications" / "twostage.yaml").write_text(
        "kind: Application\nname: twostage\npipeline:\n  - - model: matrix:1\n  - - model: summer:1\n")
    with runtimes_for(load_config(root)) as bound:
        yield bound


@pytest.fixture
async def client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(SETTINGS, config), SETTINGS) as url,
                httpx.AsyncClient(base_url=url, timeout=20) as client):
        yield client


async def post(client: httpx.AsyncClient, app: str, body: object) -> tuple[int, object]:
    response = await client.post(f"/gateway/applications/{app}", json=body)
    return response.status_code, response.json()


# ---------------------------------------------------------------- each dialect


async def test_native_body(client: httpx.AsyncClient) -> None:
    assert await post(client, "doubler", {"x": [[1, 2]]}) == (200, {"y": [[2.0, 4.0]], "n": [1]})


async def test_tf_row_format_answers_predictions(client: httpx.AsyncClient) -> None:
    assert await post(client, "doubler", {"instances": [[1, 2]]}) == (200, {"predictions": [{"y": [2.0, 4.0],
                                                                                              "n": 1}]})
    assert await post(client, "twostage", {"instances": [[1, 2], [3, 4]]}) == (200, {"predictions": [6.0, 14.0]})
    # TF's own rule: row answers need one batch size across outputs (n is [1], y [2, 2]).
    assert await post(client, "doubler", {"instances": [[1, 2], [3, 4]]}) == (
        400, {"error": "Tensor name: n has inconsistent batch size: 1 expecting: 2"})


async def test_tf_columnar_answers_outputs(client: httpx.AsyncClient) -> None:
    status, body = await post(client, "doubler", {"inputs": {"x": [[1, 2], [3, 4]]}})
    assert (status, body) == (200, {"outputs": {"y": [[2.0, 4.0], [6.0, 8.0]], "n": [2]}})
    status, body = await post(client, "doubler", {"inputs": [[1, 2]]})  # one input: the tensor itself
    assert (status, body) == (200, {"outputs": {"y": [[2.0, 4.0]], "n": [1]}})


async def test_tf_signature_name(client: httpx.AsyncClient) -> None:
    body = {"signature_name": "serving_default", "inputs": {"x": [[1, 2]]}}
    assert (await post(client, "doubler", body))[0] == 200
    status, error = await post(client, "doubler", {"signature_name": "other", "instances": [[1, 2]]})
    assert status == 400
    assert error == {"error": "application doubler has one contract ('doubler'); signature_name 'other' names none"}
    status, error = await post(client, "doubler", {"signature_name": 3, "instances": [[1, 2]]})
    assert status == 400
    assert "'signature_name' key must be a string value" in error["error"]  # type: ignore[index]


async def test_v2_body(client: httpx.AsyncClient) -> None:
    request = {"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
    status, body = await post(client, "doubler", request)
    assert (status, body) == (200, {"model_name": "doubler", "id": "r1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 4.0, 6.0, 8.0]},
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [2]}]})


async def test_v2_requested_outputs_and_request_id(client: httpx.AsyncClient) -> None:
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [[1, 2]]}],
               "outputs": [{"name": "n"}]}
    response = await client.post("/gateway/applications/doubler", json=request)
    assert response.status_code == 200
    assert response.json() == {"model_name": "doubler", "id": response.headers["x-request-id"],
                               "outputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [1]}]}
    request["outputs"] = [{"name": "nope"}]
    assert await post(client, "doubler", request) == (400, {"error": "outputs[0].name: unknown output 'nope'; "
                                                                     "expected 'y', 'n'"})


async def test_v2_binary_outputs_are_sent_whole(client: httpx.AsyncClient) -> None:
    """A v2 body asking binary outputs gets the binary extension's answer, its parts all sent."""
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
               "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    response = await client.post("/gateway/applications/doubler", json=request)
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 2],
                                  "parameters": {"binary_data_size": 8}}]
    assert np.frombuffer(response.content[length:], "<f4").tolist() == [2.0, 4.0]


async def test_a_v2_binary_extension_request_is_refused_not_read_as_a_raw_tensor(client: httpx.AsyncClient) -> None:
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    response = await client.post("/gateway/applications/doubler", content=header + np.array([1, 2], "<f4").tobytes(),
                                 headers={"content-type": "application/octet-stream",
                                          "inference-header-content-length": str(len(header))})
    assert response.status_code == 400
    assert "served on /v2/models/doubler/infer" in response.text


async def test_two_stage_application_in_each_dialect(client: httpx.AsyncClient) -> None:
    assert await post(client, "twostage", {"x": [[1, 2]]}) == (200, {"total": [6.0]})
    assert await post(client, "twostage", {"instances": [[1, 2], [3, 4]]}) == (200, {"predictions": [6.0, 14.0]})
    assert await post(client, "twostage", {"inputs": {"x": [[1, 2]]}}) == (200, {"outputs": [6.0]})
    status, body = await post(client, "twostage", {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}], "id": "t"})
    assert (status, body) == (200, {"model_name": "twostage", "id": "t", "outputs": [
        {"name": "total", "datatype": "FP64", "shape": [1], "data": [6.0]}]})


# ---------------------------------------------------------------- overlaps and ambiguity


async def test_an_input_called_inputs_is_native(client: httpx.AsyncClient) -> None:
    assert await post(client, "overlap-inputs", {"inputs": [1, 2]}) == (200, {"y": [2, 3]})
    # A v2-looking body is still native there: its objects are not int32 values (native error).
    status, body = await post(client, "overlap-inputs", {"inputs": [{"name": "inputs", "datatype": "INT32",
                                                                     "shape": [1], "data": [1]}]})
    assert status == 400
    assert body["error"]["code"] == "contract_violation"  # type: ignore[index]
    assert body["error"]["field"] == "inputs[0]"  # type: ignore[index]


async def test_an_input_called_instances_is_native(client: httpx.AsyncClient) -> None:
    assert await post(client, "overlap-instances", {"instances": [1, 2], "k": 3}) == (200, {"y": [3, 6]})
    # Not all keys are inputs: TF row format, and the extra key breaks its rule.
    status, body = await post(client, "overlap-instances", {"instances": [{"instances": [1], "k": 3}], "x": 1})
    assert status == 400  # the dialect is not settled: the native error shape
    assert body == {"error": {"code": "bad_request", "field": "x", "message":
                              "a TensorFlow Serving body ('instances') holds only 'instances', "
                              "'signature_name'; 'x' is not one of its keys (a native body holds the "
                              "application's inputs and nothing else)"}}


async def test_both_instances_and_inputs_is_a_400(client: httpx.AsyncClient) -> None:
    status, body = await post(client, "doubler", {"instances": [[1, 2]], "inputs": {"x": [[1, 2]]}})
    assert status == 400
    assert body["error"]["code"] == "bad_request"  # type: ignore[index]  # dialect unknown: native shape
    assert "not both" in body["error"]["message"]  # type: ignore[index]


async def test_keys_of_two_dialects_is_a_400(client: httpx.AsyncClient) -> None:
    status, body = await post(client, "doubler", {"instances": [[1, 2]], "x": [[1, 2]]})
    assert status == 400
    assert body["error"]["message"] == "unknown input 'instances'; expected only 'x'"  # type: ignore[index]
    status, body = await post(client, "doubler", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                                               "data": [1, 2]}], "signature_name": "s"})
    assert status == 400
    assert body["error"]["field"] == "signature_name"  # type: ignore[index]


# ---------------------------------------------------------------- error shapes per dialect


async def test_errors_answer_in_the_dialect_asked(client: httpx.AsyncClient) -> None:
    status, native = await post(client, "doubler", {"x": [[1, 2, 3]]})
    assert status == 400
    assert native == {"error": {"code": "contract_violation", "message": "expected shape [-1, 2], got [1, 3]",
                                "field": "x"}}
    status, tf = await post(client, "doubler", {"instances": [[1, 2, 3]]})
    assert status == 400
    assert tf == {"error": "input 'x' has shape [1, 3] but the signature expects [-1, 2]"}
    status, v2 = await post(client, "doubler", {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2],
                                                             "data": [1, 2]}]})
    assert status == 400
    assert isinstance(v2, dict)
    assert set(v2) == {"error"}
    assert isinstance(v2["error"], str)
    assert "FP64" in v2["error"]


async def test_element_limit_in_each_dialect(client: httpx.AsyncClient) -> None:
    rows = [[1.0, 2.0]] * 600
    assert (await post(client, "doubler", {"instances": rows}))[0] == 400
    status, body = await post(client, "doubler", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [600, 2],
                                                               "data": [1.0] * 1200}]})
    assert status == 400
    assert "limit is 1000" in body["error"]  # type: ignore[index]


async def test_unknown_application_keeps_the_native_shape(client: httpx.AsyncClient) -> None:
    status, body = await post(client, "nope", {"instances": [[1, 2]]})
    assert status == 404
    assert body["error"]["code"] == "not_found"  # type: ignore[index]


# ---------------------------------------------------------------- the README's examples


async def test_readme_examples(example_config: Config) -> None:
    async with (serve_app(create_app(SETTINGS, example_config), SETTINGS) as url,
                httpx.AsyncClient(base_url=url, timeout=20) as client):
        assert await post(client, "increment_app", {"instances": [1, 2, 3]}) == (200, {"predictions": [2, 3, 4]})
        assert await post(client, "increment_app", {"inputs": {"number": [1, 2, 3]}}) == (200, {"outputs": [2, 3, 4]})
        request = {"id": "a1", "inputs": [{"name": "number", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]}]}
        response = await client.post("/gateway/applications/increment_app", json=request)
        assert response.content == (b'{"model_name":"increment_app","id":"a1","outputs":[{"name":"number",'
                                    b'"datatype":"INT32","shape":[3],"data":[2,3,4]}]}')
        response = await client.post("/gateway/applications/increment_app", json={"instances": [1, 2, 3]})
        assert response.content == b'{"predictions":[2,3,4]}'
