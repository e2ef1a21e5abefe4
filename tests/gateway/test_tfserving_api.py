"""TF Serving as a backend and TF Serving's REST API on the gateway, end to end: a real
uvicorn, the TF-Serving-protocol test server (grpc.aio) or the embedded runtime behind it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from gateway.app import GatewayApp, create_app
from gateway.dataplane import DataPlane
from gateway.manifests import Config, load_config
from gateway.settings import AuthSettings, Settings
from tests.conftest import free_port, serve_app
from tests.tfserving_server import FakeTFServing

MODELS = {
    "toy": "model_name: Toy\nversion_labels: {stable: 1}\n",
    "toy_double": "model_name: Toy_double\n",
    "echo": "model_name: Echo\n",
    "errors": "model_name: Errors\n",
    # Pinned to version 1 with a declared contract.
    "toy_one": "model_name: Toy\n  version: 1\ncontract:\n  inputs:\n"
               "    input_1: {type: float32, shape: [-1, 2]}\n"
               "  outputs:\n    output_1: {type: float32, shape: [-1, 1]}\n",
}
APPLICATIONS = {"toy_canary": "toy@canary", "toy_stable": "toy@stable", "toy_v1": "toy:1"}
SPEC = "x-model-spec"
V1 = [[8.0], [11.0]]  # Toy version 1 for [[1, 2], [1, 3]]
V2 = [[0.3], [0.4]]  # Toy version 2
BATCH = [[1, 2], [1, 3]]


def write_config(directory: Path, target: str) -> Config:
    (directory / "models").mkdir(parents=True)
    (directory / "applications").mkdir()
    for name, extra in MODELS.items():
        backend, _, rest = extra.partition("\n")
        text = (f"kind: Model\nname: {name}\nbackend:\n  protocol: tensorflow-serving\n  target: {target}\n"
                f"  {backend}\n{rest}")
        (directory / "models" / f"{name}.yaml").write_text(text)
    for name, model in APPLICATIONS.items():
        (directory / "applications" / f"{name}.yaml").write_text(
            f"kind: Application\nname: {name}\nsingular:\n  model: {model}\n")
    return load_config(directory)


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = time.monotonic()  # not behind the real clock the gateway started with

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def manual_clock(app: GatewayApp) -> ManualClock:
    """Run the back-off of contract discovery in `app` (started) on a clock the test moves."""
    clock = ManualClock()
    dataplane: DataPlane = app.state.dataplane
    dataplane.contract_lookups.clock = clock
    return clock


@pytest.fixture
async def tfs() -> AsyncIterator[FakeTFServing]:
    server = FakeTFServing(typed=True)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(tfs: FakeTFServing, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = write_config(tmp_path / "config", tfs.target)
    async with (
        serve_app(create_app(Settings(), config)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


def last_spec(server: FakeTFServing, method: str = "Predict") -> Any:
    return last_spec_request(server, method).model_spec


# ---------------------------------------------------------------- predict


async def test_contracts_are_discovered_at_start(client: httpx.AsyncClient, tfs: FakeTFServing) -> None:
    discovered = {getattr(request, "model_spec").name for name, request in tfs.calls  # noqa: B009
                  if name == "GetModelMetadata"}
    assert discovered == {"Toy", "Toy_double", "Echo", "Errors"}


async def test_predict_row_format_reaches_the_latest_version(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/toy:predict", json={"instances": BATCH})
    assert response.status_code == 200
    assert response.json() == {"predictions": V2}
    assert response.headers[SPEC] == "name=Toy; version=2; signature_name=serving_default"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "expected", "version", "label"),
    [
        ("/v1/models/toy/versions/1:predict", V1, 1, None),
        ("/v1/models/toy/versions/2:predict", V2, 2, None),
        ("/v1/models/toy/labels/stable:predict", V1, 1, None),  # a label of the manifest
        ("/v1/models/toy/labels/canary:predict", V2, None, "canary"),  # passed through to TF Serving
        ("/v1/models/Toy/Versions/1:PREDICT", V1, 1, None),  # TF Serving's name, any case
        ("/v1/models/toy_one:predict", V1, 1, None),  # a pinned manifest
    ],
)
async def test_versions_and_labels_reach_the_right_version(
    client: httpx.AsyncClient, tfs: FakeTFServing, path: str, expected: Any, version: int | None,
    label: str | None,
) -> None:
    response = await client.post(path, json={"instances": BATCH})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}
    spec = last_spec(tfs)
    assert (spec.version.value if spec.HasField("version") else None) == version
    assert (spec.version_label if spec.HasField("version_label") else None) == label
    assert response.headers[SPEC].startswith(f"name=Toy; version={1 if expected == V1 else 2};")


async def test_columnar_format_and_signature_name(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/toy:predict", json={"inputs": {"input_1": [[1, 2]]}})
    assert response.json() == {"outputs": [[0.3]]}
    response = await client.post("/v1/models/toy:predict",
                                 json={"signature_name": "scaled", "instances": [[1, 2]]})
    assert response.json() == {"predictions": [[100.0, 200.0]]}
    assert response.headers[SPEC] == "name=Toy; version=2; signature_name=scaled"
    response = await client.post("/v1/models/toy/versions/1:predict",
                                 json={"signature_name": "scaled", "instances": [[1, 2]]})
    assert response.status_code == 400
    assert response.json() == {"error": 'Serving signature name: "scaled" not found in signature def'}


async def test_strings_b64_and_several_outputs(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/echo:predict", json={"instances": [{"b64": "aGk="}, "yo"]})
    assert response.json() == {"predictions": [{"text": "hi", "text_bytes": {"b64": "aGk="}},
                                                {"text": "yo", "text_bytes": {"b64": "eW8="}}]}
    response = await client.post("/v1/models/echo:predict", json={"inputs": {"text": ["a"]}})
    assert response.json() == {"outputs": {"text": ["a"], "text_bytes": [{"b64": "YQ=="}]}}


async def test_nan_and_infinity_pass_through(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/toy_double:predict",
                                  content=b'{"instances": [[NaN, 1], [Infinity, 2], [1.5, 2]]}')
    assert response.status_code == 200
    assert response.content == b'{"predictions":[[NaN],[Infinity],[3.0]]}'


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/models/toy:predict", b"{", 400, "JSON Parse error"),
        ("POST", "/v1/models/toy:predict", b'{"instances": [[1, "a"]]}', 400,
         'JSON Value: "a" Type: String is not of expected type: float'),
        ("POST", "/v1/models/toy:predict", b'{"instances": [[1, 2, 3]]}', 400,
         "input 'input_1' has shape [1, 3] but the signature expects [-1, 2]"),
        ("POST", "/v1/models/toy:predict", b'{"instances": [[1, 2], [3]]}', 400,
         "Expecting tensor size: 2 but got: 1"),
        # an integer beyond double beside a float (NaN keeps it exact): d20565e's 400, not a 500
        ("POST", "/v1/models/toy:predict", b'{"instances": [[0.5, 1' + b"0" * 400 + b'], [NaN, 1.0]]}', 400,
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Parse error: "
         "Number too big to be stored in double"),
        ("POST", "/v1/models/toy:predict", b'{"inputs": [[0.5, 1' + b"0" * 400 + b'], [NaN, 1.0]]}', 400,
         "JSON Parse error: Number too big to be stored in double"),
        ("POST", "/v1/models/toy:predict",
         b'{"instances": [{"input_1": [0.5, 1' + b"0" * 400 + b']}, {"input_1": [NaN, 1.0]}]}', 400,
         "Failed to process element: 0 key: input_1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Parse error: Number too big to be stored in double"),
        ("POST", "/v1/models/nope:predict", b"{}", 404, "model 'nope' does not exist"),
        ("POST", "/v1/models/toy/versions/9:predict", b'{"instances": [[1, 2]]}', 404,
         "Servable not found for request: Specific(Toy, 9)"),
        ("POST", "/v1/models/toy/labels/beta:predict", b'{"instances": [[1, 2]]}', 400,
         "Unrecognized servable version label: beta"),
        ("POST", "/v1/models/toy:explode", b"{}", 400, "Malformed request: POST /v1/models/toy:explode"),
        ("GET", "/v1/models/toy/versions/x", b"", 400, "Malformed request"),
        ("GET", "/v1/models", b"", 400, "Missing model name in request."),
        ("GET", "/v1/models/", b"", 400, "Malformed request: GET /v1/models/"),
        # TF matches the path as sent, whole: a trailing %0A is no "/v1/models" (nor its name)
        ("GET", "/v1/models%0A", b"", 400, "Malformed request: GET /v1/models%0A"),
        ("GET", "/v1/models/toy/metadata%0A", b"", 400, "Malformed request: GET /v1/models/toy/metadata%0A"),
        ("POST", "/v1/models/toy:predict%0A", b"{}", 400, "Malformed request: POST /v1/models/toy:predict%0A"),
        ("GET", "/v1/model%73/toy", b"", 400, "Malformed request: GET /v1/model%73/toy"),
        # ... and decodes the model name it captured
        ("GET", "/v1/models/a%2Fb", b"", 404, "model 'a/b' does not exist"),
        ("PUT", "/v1/models/toy:predict", b"{}", 405, "method PUT is not allowed"),
        ("POST", "/v1/models/toy:classify", b'{"examples": []}', 400, "'examples' value is an empty array"),
    ],
)
async def test_tf_routes_answer_errors_as_tf_serving(client: httpx.AsyncClient, method: str, path: str,
                                                     body: bytes, status: int, message: str) -> None:
    response = await client.request(method, path, content=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str)
    assert message in error


GRPC_CASES = [
    (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"),
    (grpc.StatusCode.FAILED_PRECONDITION, 400, "failed_precondition"),
    (grpc.StatusCode.OUT_OF_RANGE, 400, "out_of_range"),
    (grpc.StatusCode.NOT_FOUND, 404, "not_found"),
    (grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"),
    (grpc.StatusCode.ABORTED, 409, "aborted"),
    (grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"),
    (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "resource_exhausted"),
    (grpc.StatusCode.UNIMPLEMENTED, 501, "unimplemented"),
    (grpc.StatusCode.UNAVAILABLE, 503, "backend_unavailable"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded"),
    (grpc.StatusCode.INTERNAL, 500, "model_error"),
    (grpc.StatusCode.UNKNOWN, 500, "model_error"),
    (grpc.StatusCode.DATA_LOSS, 500, "data_loss"),
]


@pytest.mark.parametrize(("code", "status", "machine_code"), GRPC_CASES, ids=[c[0].name for c in GRPC_CASES])
async def test_backend_status_codes_map_through_one_table(client: httpx.AsyncClient, code: grpc.StatusCode,
                                                          status: int, machine_code: str) -> None:
    number = code.value[0]
    tf_answer = await client.post("/v1/models/errors:predict", json={"inputs": number})
    assert tf_answer.status_code == status
    assert isinstance(tf_answer.json()["error"], str)
    native = await client.post("/gateway/models/errors", json={"code": number})
    assert native.status_code == status
    assert native.json()["error"]["code"] == machine_code
    ok = await client.post("/v1/models/errors:predict", json={"inputs": 0})
    assert ok.json() == {"outputs": 0}


async def test_float_inputs_take_any_number_as_tf_serving_does(client: httpx.AsyncClient) -> None:
    # 2**24 is a float32; 1e39 is beyond float32's range: +inf, so 2a + 3b is too.
    response = await client.post("/v1/models/toy/versions/1:predict", json={"instances": [[16777216, 1e39]]})
    assert response.status_code == 200, response.text
    assert response.content == b'{"predictions":[[Infinity]]}'
    response = await client.post("/v1/models/toy/versions/1:predict", json={"inputs": [[16777216, 1]]})
    assert response.json() == {"outputs": [[33554436.0]]}


async def test_a_backends_own_deadline_message_is_kept(client: httpx.AsyncClient) -> None:
    number = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    native = await client.post("/gateway/models/errors", json={"code": number})
    assert native.status_code == 504
    assert native.json()["error"] == {
        "code": "deadline_exceeded",
        "message": "the backend of model errors missed the deadline: the model failed with DEADLINE_EXCEEDED"}
    tf_answer = await client.post("/v1/models/errors:predict", json={"inputs": number})
    assert tf_answer.json() == {"error": native.json()["error"]["message"]}


# ---------------------------------------------------------------- classify, regress, status, metadata


def _timings(header: str) -> list[tuple[str, str]]:
    """Server-Timing's steps in order, each with its description ("" without one)."""
    steps = [dict(part.split("=", 1) for part in step.split(";")[1:]) | {"": step.split(";")[0]}
             for step in header.split(", ")]
    return [(step[""].strip(), step.get("desc", "").strip('"')) for step in steps]


async def test_classify_and_regress(client: httpx.AsyncClient, tfs: FakeTFServing) -> None:
    response = await client.post("/v1/models/toy:classify", json={"examples": [{"x": [0.0]}]})
    assert response.json() == {"results": [[["pos", 0.5], ["neg", 0.5]]]}
    assert _timings(response.headers["server-timing"]) == [("decode", ""), ("backend", "toy:2"), ("encode", "")]
    response = await client.post("/v1/models/toy/labels/stable:regress", json={
        "signature_name": "serving_default", "context": {"bias": 1.0},
        "examples": [{"x": [1.0, 2.0]}, {"x": 0.5}]})
    assert response.json() == {"results": [4.0, 1.5]}
    assert _timings(response.headers["server-timing"]) == [("decode", ""), ("backend", "toy:1"),
                                                           ("encode", "")]
    spec = last_spec(tfs, "Regress")
    assert (spec.version.value, spec.signature_name) == (1, "serving_default")
    # A failed call is named as what was asked for, as answers name variants: `toy@beta`, not `toy:beta`.
    response = await client.post("/v1/models/toy/labels/beta:classify", json={"examples": [{"x": [0.0]}]})
    assert response.status_code == 400, response.text
    assert _timings(response.headers["server-timing"]) == [("decode", ""), ("backend", "toy@beta")]


@pytest.mark.parametrize(("method", "answer"), [
    ("classify", "No classification inputs found in SignatureDef: "),
    ("regress", "No regression inputs found in SignatureDef: "),
])
async def test_classify_and_regress_on_an_embedded_runtime_are_400_as_tf_serving(
        example_config: Config, method: str, answer: str) -> None:
    """The runtime's one signature, a predict signature with input `number`: TF Serving's
    INVALID_ARGUMENT (its default checks the signature's tensors, not its method name)."""
    async with (
        serve_app(create_app(Settings(), example_config)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        response = await client.post(f"/v1/models/increment_model:{method}", json={"examples": [{"x": [1.0]}]})
        assert response.status_code == 400, response.text
        signature = ('inputs {\n  key: "number"\n  value {\n    name: "number"\n    dtype: DT_INT32\n'
                     '    tensor_shape {\n      dim {\n        size: -1\n      }\n    }\n  }\n}\n'
                     'outputs {\n  key: "number"\n  value {\n    name: "number"\n    dtype: DT_INT32\n'
                     '    tensor_shape {\n      dim {\n        size: -1\n      }\n    }\n  }\n}\n'
                     'method_name: "tensorflow/serving/predict"\n')
        assert response.json() == {"error": answer + signature}
        response = await client.post(f"/v1/models/increment_model:{method}",
                                     json={"examples": [{"x": [1.0]}], "signature_name": "other"})
        assert response.status_code == 400, response.text
        assert response.json() == {"error": "No signature was found with the name: other"}


async def test_a_percent_encoded_model_name_is_decoded_after_the_match(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/t%6Fy/labels/st%61ble")
    assert response.status_code == 200, response.text
    assert response.json()["model_version_status"][0]["version"] == "1"


async def test_model_status(client: httpx.AsyncClient) -> None:
    available = {"state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    response = await client.get("/v1/models/toy")
    assert response.json() == {"model_version_status": [{"version": "2", **available},
                                                        {"version": "1", **available}]}
    for path in ("/v1/models/toy/versions/1", "/v1/models/toy/labels/stable", "/v1/models/toy_one"):
        response = await client.get(path)
        assert response.json() == {"model_version_status": [{"version": "1", **available}]}, path
    response = await client.get("/v1/models/toy/versions/7")
    assert response.status_code == 404
    assert response.json() == {"error": "Could not find version 7 of model Toy"}


async def test_model_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/toy/versions/2/metadata")
    assert response.status_code == 200
    document = response.json()
    assert document["model_spec"] == {"name": "Toy", "signature_name": "", "version": "2"}
    signatures = document["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "scaled"}
    info = signatures["serving_default"]["inputs"]["input_1"]
    assert info["dtype"] == "DT_FLOAT"
    assert info["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                                    "unknown_rank": False}
    response = await client.get("/v1/models/toy/labels/stable/metadata")
    assert set(response.json()["metadata"]["signature_def"]["signature_def"]) == {"serving_default"}


# ---------------------------------------------------------------- native routes and applications


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/gateway/models/toy", V2), ("/gateway/models/toy/versions/1", V1),
     ("/gateway/models/toy/labels/stable", V1), ("/gateway/models/toy/labels/canary", V2),
     ("/gateway/applications/toy_canary", V2), ("/gateway/applications/toy_stable", V1),
     ("/gateway/applications/toy_v1", V1)],
)
async def test_native_routes_reach_the_right_version(client: httpx.AsyncClient, path: str,
                                                     expected: Any) -> None:
    response = await client.post(path, json={"input_1": BATCH})
    assert response.status_code == 200, response.text
    assert response.json() == {"output_1": expected}


async def test_native_model_route_checks_the_discovered_contract(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/models/toy/versions/1", json={"input_1": [[1, 2, 3]]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "input_1"
    assert response.json()["error"]["code"] == "contract_violation"
    response = await client.post("/gateway/models/toy/versions/1", json={"input_1": BATCH})
    assert response.headers[SPEC] == "name=Toy; version=1; signature_name=serving_default"
    response = await client.post("/gateway/models/toy/versions/5", json={"input_1": BATCH})
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found",
                                        "message": "Servable not found for request: Specific(Toy, 5)"}
    response = await client.post("/gateway/models/toy_one/versions/2", json={"input_1": BATCH})
    assert response.status_code == 404


async def test_typed_fields_and_tensor_content_give_identical_json(tfs: FakeTFServing,
                                                                   tmp_path: Path) -> None:
    packed = FakeTFServing(typed=False)
    await packed.start()
    requests = [("/v1/models/toy:predict", {"instances": BATCH}),
                ("/v1/models/toy/versions/1:predict", {"inputs": BATCH}),
                ("/v1/models/toy_double:predict", {"instances": [[0.1, 3], [1e-3, 7]]}),
                ("/v1/models/echo:predict", {"instances": ["a", {"b64": "/w=="}]}),
                ("/gateway/models/toy_double", {"input_1": [[0.1, 0.2]]})]
    answers: list[list[bytes]] = []
    try:
        for index, server in enumerate((tfs, packed)):
            config = write_config(tmp_path / str(index), server.target)
            async with (serve_app(create_app(Settings(), config)) as url,
                        httpx.AsyncClient(base_url=url, timeout=10) as client):
                answers.append([(await client.post(path, json=body)).content for path, body in requests])
    finally:
        await packed.stop()
    assert answers[0] == answers[1]
    predicted = [request for name, request in packed.calls if name == "Predict"]
    assert len(predicted) == len(requests)  # the tensor_content server really answered


# ---------------------------------------------------------------- model management


RELOAD = {"model_config_list": {"config": [
    {"name": "Toy", "base_path": "/models/Toy", "model_platform": "tensorflow",
     "model_version_policy": {"specific": {"versions": ["1"]}}, "version_labels": {"canary": "1"}},
    {"name": "Toy_double", "base_path": "/models/Toy_double", "model_platform": "tensorflow"},
]}}


async def test_reload_config_is_forwarded_and_contracts_rediscovered(client: httpx.AsyncClient,
                                                                     tfs: FakeTFServing) -> None:
    response = await client.post("/gateway/admin/models/toy/reload-config", json=RELOAD)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": {"error_code": "OK", "error_message": ""}}
    config = last_spec_request(tfs, "HandleReloadConfigRequest").config.model_config_list.config
    assert [c.name for c in config] == ["Toy", "Toy_double"]
    assert dict(config[0].version_labels) == {"canary": 1}
    assert (await client.post("/v1/models/toy/labels/canary:predict", json={"instances": BATCH})).json() \
        == {"predictions": V1}
    latest = await client.post("/v1/models/toy:predict", json={"instances": BATCH})
    assert latest.headers[SPEC].startswith("name=Toy; version=1;")
    assert (await client.get("/v1/models/echo")).status_code == 404  # unloaded by the new config
    bad = {"model_config_list": {"config": [{"name": "Toy", "version_labels": {"canary": "5"}}]}}
    response = await client.post("/gateway/admin/models/toy/reload-config", json=bad)
    assert response.status_code == 400
    assert response.json()["status"]["error_code"] == "FAILED_PRECONDITION"
    response = await client.post("/gateway/admin/models/toy/reload-config", json={"nope": 1})
    assert response.status_code == 400


def last_spec_request(server: FakeTFServing, method: str) -> Any:
    return next(request for name, request in reversed(server.calls) if name == method)


async def test_admin_token_is_required_once_set(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    settings = Settings(auth=AuthSettings(admin_token_sha256=(hashlib.sha256(b"s3cret").hexdigest(),)))
    async with (serve_app(create_app(settings, config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        path = "/gateway/admin/models/toy/reload-config"
        assert (await client.post(path, json=RELOAD)).status_code == 401
        wrong = await client.post(path, json=RELOAD, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.post(path, json=RELOAD, headers={"authorization": "Bearer s3cret"})
        assert right.status_code == 200


async def test_readiness_falls_back_to_model_status(client: httpx.AsyncClient, tfs: FakeTFServing) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert any(name == "GetModelStatus" for name, _ in tfs.calls)


async def test_any_content_type_is_accepted_as_tf_serving_does(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/toy:predict", content=b'{"instances": [[1, 2]]}',
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.json() == {"predictions": [[0.3]]}


async def test_a_backend_down_at_start_is_503_then_discovered_on_first_use(tmp_path: Path) -> None:
    server = FakeTFServing()
    port = free_port()
    config = write_config(tmp_path / "config", f"127.0.0.1:{port}")
    app = create_app(Settings(), config)
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        clock = manual_clock(app)
        response = await client.post("/v1/models/toy:predict", json={"instances": BATCH})
        assert response.status_code == 503
        assert response.json()["error"] == "the backend of model toy is unavailable"  # no address
        assert response.headers["retry-after"] == "1"
        assert (await client.get("/health/ready")).status_code == 503
        server.port = port
        await server.start()
        try:
            for _ in range(50):  # the channel reconnects with back-off
                clock.advance(30)  # past the gateway's own back-off of discovery
                response = await client.post("/v1/models/toy:predict", json={"instances": BATCH})
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert response.json() == {"predictions": V2}
            native = await client.post("/gateway/models/toy/versions/1", json={"input_1": [[1, 2, 3]]})
            assert native.json()["error"]["code"] == "contract_violation"
        finally:
            await server.stop()


async def test_an_application_whose_contract_is_not_discovered_yet_is_503_not_400(tmp_path: Path) -> None:
    server = FakeTFServing()
    port = free_port()
    config = write_config(tmp_path / "config", f"127.0.0.1:{port}")
    app = create_app(Settings(), config)
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        clock = manual_clock(app)
        response = await client.post("/gateway/applications/toy_v1", json={"input_1": BATCH})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "backend_unavailable"
        assert response.headers["retry-after"] == "1"
        assert str(port) not in response.text
        server.port = port
        await server.start()
        try:
            for _ in range(50):  # discovery is asked again once its back-off ends, until the server answers
                clock.advance(30)
                response = await client.post("/gateway/applications/toy_v1", json={"input_1": BATCH})
                if response.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            assert response.json() == {"output_1": V1}
            wrong = await client.post("/gateway/applications/toy_v1", json={"number": [1]})
            assert wrong.status_code == 400
            assert "missing input 'input_1'" in wrong.json()["error"]["message"]  # the discovered contract
        finally:
            await server.stop()


async def test_dns_targets_are_resolved(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", f"dns:///127.0.0.1:{tfs.port}")
    async with (serve_app(create_app(Settings(), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        response = await client.post("/v1/models/toy/versions/1:predict", json={"instances": BATCH})
        assert response.json() == {"predictions": V1}


class _UnusableMetadata(FakeTFServing):
    """A TF Serving whose metadata packs something other than a SignatureDefMap."""

    def _metadata(self, request: Any) -> Any:
        response = super()._metadata(request)
        response.metadata["signature_def"].type_url = "type.googleapis.com/tensorflow.TensorProto"
        return response


async def test_metadata_the_gateway_cannot_render_is_a_logged_500(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = _UnusableMetadata(typed=True)
    await server.start()
    try:
        config = write_config(tmp_path / "config", server.target)
        caplog.set_level("WARNING", "gateway")
        async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            response = await client.get("/v1/models/toy/metadata")
    finally:
        await server.stop()
    message = "Failed to unpack 'Any' object to 'SignatureDefMap' (type 'type.googleapis.com/tensorflow.TensorProto')."
    assert (response.status_code, response.json()) == (500, {"error": message})
    request_id = response.headers["x-request-id"]
    assert any(record.name == "gateway" and record.levelname == "WARNING"
               and f"request {request_id}: GET /v1/models/toy/metadata -> 500 model_error" in record.getMessage()
               for record in caplog.records)
