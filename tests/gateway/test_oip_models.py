"""The Open Inference Protocol rules both v2 doors share (gateway.oip_models), asked of the /v2
REST door and the gRPC door of one real uvicorn over real embedded runtimes: the same answer
for drains, long versions, outputs a model leaves out, unoffered request parameters, shapes no
tensor can have and metadata of dtypes the protocol has no datatype for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from gateway import oip_models
from gateway.app import create_app
from gateway.errors import ContractViolation, OutputContractViolation
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from protos.inference import grpc_service_pb2 as oip
from protos.services import OIP_MODEL_INFER, OIP_MODEL_METADATA, OIP_MODEL_READY, OIP_SERVER_READY
from tests.conftest import runtimes_for, serve_app, write_app, write_model

SETTINGS = Settings(access_log=False, max_elements=1000)
MODEL = "import numpy as np\n\ndef predict(x):\n    return {'y': x, 'c': np.ones(1, dtype=np.complex64)}\n"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("oip_models")
    write_model(root, "lazy", "lazy", MODEL, inputs="x: {shape: [-1, -1], type: float32}",
                outputs="y: {shape: [-1, -1], type: float32}\n    c: {shape: [1], type: complex64}")
    write_app(root, "lazy_app", "lazy:1")
    with runtimes_for(load_config(root)) as bound:
        yield bound


@dataclass
class Doors:
    app: Starlette
    http: httpx.AsyncClient
    port: int

    async def call(self, method: Any, request: Any) -> Any:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                       response_deserializer=method.response.FromString)
            return await stub(request, timeout=20)

    async def grpc_failure(self, method: Any, request: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(method, request)
        return caught.value


@pytest.fixture
async def doors(config: Config) -> AsyncIterator[Doors]:
    app = create_app(replace(SETTINGS, grpc_port=0), config)
    async with serve_app(app, SETTINGS) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        yield Doors(app, client, app.state.grpc_port)


X = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}


def infer_request(name: str = "lazy", outputs: tuple[str, ...] = (), shape: tuple[int, ...] = (1, 2),
                  raw: bytes = b"\0" * 8) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=name)
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    request.raw_input_contents.append(raw)
    for output in outputs:
        request.outputs.add(name=output)
    return request


async def test_nothing_is_ready_once_the_gateway_drains(doors: Doors) -> None:
    paths = ("/v2/health/ready", "/v2/models/lazy/ready", "/v2/models/lazy_app/ready")
    names = ("lazy", "lazy_app")
    assert [(await doors.http.get(path)).status_code for path in paths] == [200, 200, 200]
    assert (await doors.call(OIP_SERVER_READY, oip.ServerReadyRequest())).ready
    for name in names:
        assert (await doors.call(OIP_MODEL_READY, oip.ModelReadyRequest(name=name))).ready, name
    doors.app.state.draining = True
    assert [(await doors.http.get(path)).status_code for path in paths] == [400, 400, 400]
    assert not (await doors.call(OIP_SERVER_READY, oip.ServerReadyRequest())).ready
    for name in names:
        assert not (await doors.call(OIP_MODEL_READY, oip.ModelReadyRequest(name=name))).ready, name


async def test_a_version_of_more_digits_than_int64_is_not_found(doors: Doors) -> None:
    version = "9" * 5000
    response = await doors.http.post(f"/v2/models/lazy/versions/{version}/infer", json={"inputs": [X]})
    assert response.status_code == 404
    assert "has no version 999" in response.json()["error"]
    error = await doors.grpc_failure(OIP_MODEL_INFER, replace_version(infer_request(), version))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await doors.grpc_failure(OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="lazy", version=version))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    ready = await doors.call(OIP_MODEL_READY, oip.ModelReadyRequest(name="lazy", version=version))
    assert not ready.ready


def replace_version(request: oip.ModelInferRequest, version: str) -> oip.ModelInferRequest:
    request.model_version = version
    return request


def test_a_contracted_output_the_model_left_out_is_the_models_error() -> None:
    outputs = {"y": np.zeros(1)}
    with pytest.raises(OutputContractViolation) as caught:
        oip_models.chosen(outputs, ["y", "n"], "lazy:1", contracted=True)
    assert (caught.value.status, caught.value.field) == (502, "n")
    assert caught.value.message == "model lazy:1 answered no output 'n', which its contract has; it answered 'y'"
    with pytest.raises(ContractViolation) as refused:  # no contract: the client asked for what is not there
        oip_models.chosen(outputs, ["y", "n"], "lazy:1", contracted=False)
    assert (refused.value.status, refused.value.field) == (400, "outputs[1].name")
    assert list(oip_models.chosen(outputs, ["y"], "lazy:1", contracted=True)) == ["y"]


@pytest.mark.parametrize("name", ["lazy", "lazy_app"])
async def test_a_requested_output_outside_the_contract_is_the_clients_mistake(doors: Doors, name: str) -> None:
    response = await doors.http.post(f"/v2/models/{name}/infer", json={"inputs": [X], "outputs": [{"name": "z"}]})
    assert response.status_code == 400
    assert response.json() == {"error": "outputs[0].name: unknown output 'z'; expected 'y', 'c'"}
    error = await doors.grpc_failure(OIP_MODEL_INFER, infer_request(name, ("z",)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "outputs[0].name: unknown output 'z'; expected 'y', 'c'"
    response = await doors.http.post(f"/v2/models/{name}/infer", json={"inputs": [X], "outputs": [{"name": "y"}]})
    assert [output["name"] for output in response.json()["outputs"]] == ["y"]
    answer = await doors.call(OIP_MODEL_INFER, infer_request(name, ("y",)))
    assert [output.name for output in answer.outputs] == ["y"]


@pytest.mark.parametrize(("parameter", "value", "words"), [
    ("sequence_id", 3, "'sequence_id' asks for sequence batching (stateful models), which the gateway does not offer"),
    ("sequence_id", "corr-7", "'sequence_id' asks for sequence batching"),
    ("sequence_start", True, "'sequence_start' asks for sequence batching"),
    ("sequence_end", True, "'sequence_end' asks for sequence batching"),
    ("priority", 2, "'priority' asks for request priorities, which the gateway does not offer"),
    ("timeout", -1, "'timeout' is the request's timeout in microseconds"),
    ("timeout", "soon", "'timeout' is the request's timeout in microseconds"),
])
async def test_request_parameters_of_unoffered_extensions_are_refused(
        doors: Doors, parameter: str, value: object, words: str) -> None:
    for name in ("lazy", "lazy_app"):
        body = {"inputs": [X], "parameters": {parameter: value}}
        response = await doors.http.post(f"/v2/models/{name}/infer", json=body)
        assert response.status_code == 400, name
        assert words in response.json()["error"]
        request = infer_request(name)
        _set(request.parameters[parameter], value)
        error = await doors.grpc_failure(OIP_MODEL_INFER, request)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert words in (error.details() or "")


async def test_request_parameters_that_ask_for_nothing_and_a_timeout_are_taken(doors: Doors) -> None:
    parameters = {"sequence_id": 0, "sequence_start": False, "sequence_end": False, "priority": 0,
                  "timeout": 10_000_000, "custom": "kept"}
    response = await doors.http.post("/v2/models/lazy/infer", json={"inputs": [X], "parameters": parameters,
                                                                   "outputs": [{"name": "y"}]})
    assert response.status_code == 200, response.text
    request = infer_request(outputs=("y",))
    for name, value in parameters.items():
        _set(request.parameters[name], value)
    assert [output.name for output in (await doors.call(OIP_MODEL_INFER, request)).outputs] == ["y"]


async def test_a_timeout_parameter_shortens_the_deadline(doors: Doors) -> None:
    response = await doors.http.post("/v2/models/lazy/infer", json={"inputs": [X], "parameters": {"timeout": 1},
                                                                   "outputs": [{"name": "y"}]})
    assert response.status_code == 504, response.text
    request = infer_request(outputs=("y",))
    request.parameters["timeout"].int64_param = 1
    error = await doors.grpc_failure(OIP_MODEL_INFER, request)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def _set(parameter: oip.InferParameter, value: object) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    else:
        parameter.string_param = str(value)


@pytest.mark.parametrize(("shape", "words"), [
    ([1] * 70, "shape has 70 dimensions, more than 64"),
    ([0, 2**62], "is larger than any tensor can be"),
    ([0, 2**63 - 1], "is larger than any tensor can be"),
])
async def test_shapes_no_tensor_can_have_are_the_clients_mistake(doors: Doors, shape: list[int], words: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]}
    response = await doors.http.post("/v2/models/lazy/infer", json=body)
    assert response.status_code == 400
    assert words in response.json()["error"]
    error = await doors.grpc_failure(OIP_MODEL_INFER, infer_request(shape=tuple(shape), raw=b""))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in (error.details() or "")


async def test_metadata_leaves_out_tensors_the_protocol_has_no_datatype_for(doors: Doors) -> None:
    rest = (await doors.http.get("/v2/models/lazy")).json()
    metadata = await doors.call(OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="lazy"))
    expected = [("y", "FP32", [-1, -1])]  # not c, a complex64
    assert [(t["name"], t["datatype"], t["shape"]) for t in rest["outputs"]] == expected
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == expected
    assert (rest["platform"], rest["versions"]) == (metadata.platform, list(metadata.versions)) == ("embedded", ["1"])
