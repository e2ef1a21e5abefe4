"""The Open Inference Protocol's REST API over a real uvicorn, with real embedded runtimes behind it:
every route, JSON and binary tensors, every datatype, applications of two stages, and errors."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Iterator

import httpx
import numpy as np
import orjson
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tensorcodecs.dtypes import OIP_DATATYPES, dtype_from_oip
from tests.conftest import runtimes_for, serve_app, write_app, write_model

# One input and one output per datatype: t_<type> -> o_<type>, as they came.
TYPES = {datatype: dtype_from_oip(datatype).name for datatype in OIP_DATATYPES}
ALL_TYPES_SOURCE = ("def predict({args}):\n    return {{{outs}}}\n".format(
    args=", ".join(f"t_{name}" for name in TYPES.values()),
    outs=", ".join(f'"o_{name}": t_{name}' for name in TYPES.values())))
SETTINGS = Settings(access_log=False, max_body_bytes=4_000_000, max_elements=600_000)
HEADER = "inference-header-content-length"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("v2")
    write_model(root, "alltypes", "alltypes", ALL_TYPES_SOURCE,
                inputs="\n    ".join(f"t_{name}: {{shape: [-1], type: {name}}}" for name in TYPES.values()),
                outputs="\n    ".join(f"o_{name}: {{shape: [-1], type: {name}}}" for name in TYPES.values()))
    matrix = ("import numpy as np\n\ndef predict(x):\n"
              "    return {{'y': (x * {factor}).astype(np.float32), 'n': np.array([x.shape[0]], dtype=np.int64)}}\n")
    for version, factor in ((1, 2), (2, 3)):
        write_model(root, f"matrix/{version}", "matrix", matrix.format(factor=factor),
                    inputs="x: {shape: [-1, 2], type: float32}",
                    outputs="y: {shape: [-1, 2], type: float32}\n    n: {shape: [1], type: int64}",
                    extra="version_labels: {stable: 1, canary: 2}" if version == 1 else "")
    write_model(root, "summer", "summer",
                "import numpy as np\n\ndef predict(y):\n    return {'total': y.sum(axis=1).astype(np.float64)}\n",
                inputs="y: {shape: [-1, 2], type: float32}", outputs="total: {shape: [-1], type: float64}")
    write_model(root, "blob", "blob", "def predict(b):\n    return b\n",
                inputs="b: {shape: [-1], type: bytes}", outputs="c: {shape: [-1], type: bytes}")
    write_app(root, "doubler", "matrix:1")
    (root / "applications" / "twostage.yaml").write_text(
        "kind: Application\nname: twostage\npipeline:\n  - - model: matrix:1\n  - - model: summer:1\n")
    with runtimes_for(load_config(root)) as bound:
        yield bound


@pytest.fixture
async def client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(SETTINGS, config), SETTINGS) as url,
                httpx.AsyncClient(base_url=url, timeout=20) as client):
        yield client


def tensor(name: str, datatype: str, shape: list[int], data: object) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


X = tensor("x", "FP32", [2, 2], [1, 2, 3, 4])


# ---------------------------------------------------------------- server and health


async def test_server_metadata_names_the_binary_extension(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "inference-gateway"
    assert body["version"]
    assert "binary_tensor_data" in body["extensions"]


async def test_live_and_ready_are_200_with_empty_bodies(client: httpx.AsyncClient) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.content == b""


async def test_model_and_application_ready(client: httpx.AsyncClient) -> None:
    for path in ("/v2/models/matrix/ready", "/v2/models/matrix/versions/2/ready",
                 "/v2/models/matrix/versions/stable/ready", "/v2/models/twostage/ready"):
        response = await client.get(path)
        assert response.status_code == 200, path
    response = await client.get("/v2/models/nope/ready")
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' does not exist"}


# ---------------------------------------------------------------- metadata


async def test_model_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/matrix")
    assert response.status_code == 200
    assert response.json() == {
        "name": "matrix", "versions": ["1", "2"], "platform": "embedded",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "n", "datatype": "INT64", "shape": [1]}]}
    versioned = await client.get("/v2/models/matrix/versions/canary")
    assert versioned.json()["inputs"] == response.json()["inputs"]


async def test_application_metadata_is_first_inputs_last_outputs(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/twostage")
    assert response.json() == {
        "name": "twostage", "versions": [], "platform": "gateway-application",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "total", "datatype": "FP64", "shape": [-1]}]}


async def test_every_datatype_in_metadata(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v2/models/alltypes")).json()
    assert sorted(item["datatype"] for item in body["inputs"]) == sorted(OIP_DATATYPES)


async def test_application_has_no_versions(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/v2/models/twostage/versions/1"),
                         ("POST", "/v2/models/twostage/versions/1/infer")):
        response = await client.request(method, path, json={"inputs": [X]})
        assert response.status_code == 404
        assert "applications have no versions" in response.json()["error"]


async def test_unknown_version_is_404(client: httpx.AsyncClient) -> None:
    for version in ("7", "9" * 5000, "nolabel"):
        response = await client.get(f"/v2/models/matrix/versions/{version}")
        assert response.status_code == 404, version
        assert set(response.json()) == {"error"}


# ---------------------------------------------------------------- inference, JSON


async def test_infer_a_model_flat_and_nested(client: httpx.AsyncClient) -> None:
    flat = await client.post("/v2/models/matrix/infer", json={"id": "r1", "inputs": [X]})
    assert flat.status_code == 200
    assert flat.headers["content-type"] == "application/json"
    # no version asked: the latest one answers, and says so
    assert flat.json() == {"model_name": "matrix", "model_version": "2", "id": "r1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [3.0, 6.0, 9.0, 12.0]},
        {"name": "n", "datatype": "INT64", "shape": [1], "data": [2]}]}
    nested = await client.post("/v2/models/matrix/infer",
                               json={"id": "r1", "inputs": [tensor("x", "FP32", [2, 2], [[1, 2], [3, 4]])]})
    assert nested.json() == flat.json()
    assert "server-timing" in flat.headers


async def test_versions_and_labels(client: httpx.AsyncClient) -> None:
    for path, version, first in (("/v2/models/matrix/versions/2/infer", "2", 3.0),
                                 ("/v2/models/matrix/versions/stable/infer", "1", 2.0),
                                 ("/v2/models/matrix/versions/canary/infer", "2", 3.0)):
        body = (await client.post(path, json={"inputs": [X]})).json()
        assert body["model_version"] == version, path
        assert body["outputs"][0]["data"][0] == first, path


async def test_infer_an_application_of_two_stages(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/twostage/infer", json={"inputs": [X]})
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "twostage"
    assert "model_version" not in body
    assert body["id"] == response.headers["x-request-id"]  # no id asked: the gateway's request id
    assert body["outputs"] == [{"name": "total", "datatype": "FP64", "shape": [2], "data": [6.0, 14.0]}]


async def test_every_datatype_json(client: httpx.AsyncClient) -> None:
    samples = {"BOOL": [True, False], "INT8": [-128, 127], "INT16": [-32768, 1], "INT32": [-(2**31), 2],
               "INT64": [-(2**63), 3], "UINT8": [0, 255], "UINT16": [0, 65535], "UINT32": [0, 2**32 - 1],
               "UINT64": [0, 2**64 - 1], "FP16": [0.5, -2.0], "FP32": [1.5, -3.25], "FP64": [0.1, 1e300],
               "BYTES": ["a", "é"]}
    inputs = [tensor(f"t_{TYPES[d]}", d, [2], samples[d]) for d in OIP_DATATYPES]
    response = await client.post("/v2/models/alltypes/infer", content=orjson.dumps({"inputs": inputs}))
    assert response.status_code == 200, response.text
    outputs = {item["name"]: item for item in response.json()["outputs"]}
    for datatype in OIP_DATATYPES:
        item = outputs[f"o_{TYPES[datatype]}"]
        assert item["datatype"] == datatype
        assert item["data"] == samples[datatype], datatype


async def test_every_datatype_binary(client: httpx.AsyncClient) -> None:
    arrays = {d: (np.array([True, False]) if d == "BOOL" else
                  np.array([b"ab", "é".encode()], dtype=object) if d == "BYTES" else
                  np.array([1, 2], dtype=dtype_from_oip(d).numpy)) for d in OIP_DATATYPES}
    parts = {d: (b"".join(struct.pack("<I", len(v)) + v for v in a.tolist()) if d == "BYTES" else a.tobytes())
             for d, a in arrays.items()}
    inputs = [{"name": f"t_{TYPES[d]}", "datatype": d, "shape": [2],
               "parameters": {"binary_data_size": len(parts[d])}} for d in OIP_DATATYPES]
    header = orjson.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}})
    response = await client.post("/v2/models/alltypes/infer", content=header + b"".join(parts.values()),
                                 headers={HEADER: str(len(header)), "content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    answer = orjson.loads(response.content[:length])
    offset = length
    for item in answer["outputs"]:
        size = item["parameters"]["binary_data_size"]
        datatype = item["datatype"]
        assert "data" not in item
        assert response.content[offset:offset + size] == parts[datatype], datatype
        offset += size
    assert offset == len(response.content)


async def test_non_utf8_bytes_answer_in_base64(client: httpx.AsyncClient) -> None:
    header = orjson.dumps({"inputs": [{"name": "b", "datatype": "BYTES", "shape": [2],
                                       "parameters": {"binary_data_size": 11}}]})
    body = header + b"\x01\x00\x00\x00\xff" + b"\x02\x00\x00\x00ok"
    response = await client.post("/v2/models/blob/infer", content=body,
                                 headers={HEADER: str(len(header)), "content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [{"name": "c", "datatype": "BYTES", "shape": [2], "data": ["/w==", "b2s="],
                                           "parameters": {"content_type": "base64"}}]
    text = await client.post("/v2/models/blob/infer", json={"inputs": [tensor("b", "BYTES", [1], ["ok"])]})
    assert text.json()["outputs"] == [{"name": "c", "datatype": "BYTES", "shape": [1], "data": ["ok"]}]


# ---------------------------------------------------------------- requested and binary outputs


async def test_requested_outputs(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/matrix/infer", json={"inputs": [X], "outputs": [{"name": "n"}]})
    assert [item["name"] for item in response.json()["outputs"]] == ["n"]
    response = await client.post("/v2/models/matrix/infer", json={"inputs": [X], "outputs": [{"name": "z"}]})
    assert response.status_code == 400
    assert response.json() == {"error": "outputs[0].name: unknown output 'z'; expected 'y', 'n'"}


async def test_binary_output_per_output(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/matrix/infer", json={
        "inputs": [X], "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "n"}]})
    assert response.status_code == 200
    length = int(response.headers[HEADER])
    answer = orjson.loads(response.content[:length])
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert answer["outputs"][1]["data"] == [2]
    assert np.frombuffer(response.content[length:], dtype="<f4").tolist() == [3, 6, 9, 12]


async def test_binary_input_large_tensor(client: httpx.AsyncClient) -> None:
    """A 2.4 MB tensor both ways through the extension, to the byte."""
    x = np.random.default_rng(1).random((300_000, 2), dtype=np.float32)
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    response = await client.post("/v2/models/doubler/infer", content=header + x.tobytes(),
                                 headers={HEADER: str(len(header))})
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    y = np.frombuffer(response.content[length:], dtype="<f4").reshape(x.shape)
    np.testing.assert_array_equal(y, x * 2)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"not json", 400, "not valid JSON"),
    (b"[1]", 400, "JSON object with inputs"),
    (b'{"outputs": []}', 400, "needs inputs"),
    (b'{"id": 3, "inputs": []}', 400, "id must be a string"),
    (orjson.dumps({"inputs": [tensor("x", "FP64", [2, 2], [1, 2, 3, 4])]}), 400,
     "inputs[0].datatype: input 'x' is FP32 (float32), got datatype FP64"),
    (orjson.dumps({"inputs": [tensor("x", "FP32", [4], [1, 2, 3, 4])]}), 400,
     "inputs[0].shape: input 'x' has shape [-1, 2], got [4]"),
    (orjson.dumps({"inputs": [tensor("x", "FP32", [2, 2], [1, 2, 3])]}), 400, "data holds 3 elements"),
    (orjson.dumps({"inputs": [tensor("x", "FP32", [2, 2], [1, 2, 3, "a"])]}), 400, "inputs[0].data[3]"),
    (orjson.dumps({"inputs": []}), 400, "missing input 'x'"),
    (orjson.dumps({"inputs": [X, tensor("q", "FP32", [1], [1])]}), 400, "unknown input 'q'"),
    (orjson.dumps({"inputs": [tensor("x", "FP32", [300_001, 2], [])]}), 400, "the limit is 600000"),
    (orjson.dumps({"inputs": [X], "parameters": {"binary_data_output": 1}}), 400, "true or false"),
])
async def test_request_errors(client: httpx.AsyncClient, body: bytes, status: int, words: str) -> None:
    response = await client.post("/v2/models/matrix/infer", content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) == {"error"}
    assert words in error["error"]


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/nope/infer", json={"inputs": [X]})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'nope' does not exist"}
    route = await client.get("/v2/nothing/here")
    assert route.status_code == 404
    assert set(route.json()) == {"error"}


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/matrix/infer", content=b" " * 4_000_001)
    assert response.status_code == 413
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(("headers", "words"), [
    ({HEADER: "abc"}, "must be a number of bytes"),
    ({HEADER: "999"}, "the body has only"),
])
async def test_binary_extension_errors(client: httpx.AsyncClient, headers: dict[str, str], words: str) -> None:
    response = await client.post("/v2/models/matrix/infer", content=orjson.dumps({"inputs": [X]}), headers=headers)
    assert response.status_code == 400
    assert words in response.json()["error"]


async def test_any_content_type_is_taken_as_triton_takes_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/matrix/infer", content=orjson.dumps({"inputs": [X]}),
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200


async def test_binary_part_mismatch_is_400(client: httpx.AsyncClient) -> None:
    header = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2],
                                       "parameters": {"binary_data_size": 16}}]})
    response = await client.post("/v2/models/matrix/infer", content=header + b"\x00" * 12,
                                 headers={HEADER: str(len(header))})
    assert response.status_code == 400
    assert "runs past the binary part's end" in response.json()["error"]


async def test_wrong_method_is_405_in_the_protocol_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/matrix/infer")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}


async def test_metrics_label_the_route_and_model(client: httpx.AsyncClient) -> None:
    await client.post("/v2/models/matrix/infer", json={"inputs": [X]})
    text = (await client.get("/metrics")).text
    assert any('route="/v2/models/{name}/infer"' in line and 'model="matrix"' in line
               for line in text.splitlines() if line.startswith("gateway_requests_total"))


# ---------------------------------------------------------------- API keys


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def test_api_keys_guard_the_model_routes_not_health(config: Config) -> None:
    settings = Settings(access_log=False, auth=AuthSettings(api_keys=(ApiKey("team", _sha("k"), ("matrix",)),)))
    async with (serve_app(create_app(settings, config), settings) as url,
                httpx.AsyncClient(base_url=url, timeout=20) as client):
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2")).status_code == 200
        refused = await client.post("/v2/models/matrix/infer", json={"inputs": [X]})
        assert refused.status_code == 401
        assert set(refused.json()) == {"error"}
        keyed = {"x-api-key": "k"}
        assert (await client.post("/v2/models/matrix/infer", json={"inputs": [X]}, headers=keyed)).status_code == 200
        other = await client.get("/v2/models/twostage", headers=keyed)
        assert other.status_code == 403
