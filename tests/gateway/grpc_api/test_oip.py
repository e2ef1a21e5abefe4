"""inference.GRPCInferenceService (Open Inference Protocol) on the gateway's gRPC port, end to end:
a real uvicorn with its gRPC door over real embedded runtimes, called by a grpc.aio client."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.inference import grpc_service_pb2 as oip
from protos.services import (
    OIP_MODEL_INFER,
    OIP_MODEL_METADATA,
    OIP_MODEL_READY,
    OIP_SERVER_LIVE,
    OIP_SERVER_METADATA,
    OIP_SERVER_READY,
    OIP_SERVICE,
)
from tensorcodecs.oip_tensors import array_to_contents, array_to_raw, raw_to_array
from tests.conftest import runtimes_for, serve_app, write_app, write_model

# Every datatype of the protocol with the contract type that carries it.
DATATYPES = {"FP32": "float32", "FP64": "float64", "FP16": "float16", "INT8": "int8", "INT16": "int16",
             "INT32": "int32", "INT64": "int64", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
             "UINT64": "uint64", "BOOL": "bool", "BYTES": "string"}
SAMPLES: dict[str, np.ndarray[Any, Any]] = {
    "FP32": np.array([[1.5, -2.0]], dtype=np.float32), "FP64": np.array([[1e300, -0.25]]),
    "FP16": np.array([[0.5, 65504.0]], dtype=np.float16), "INT8": np.array([[-128, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 7]], dtype=np.int16), "INT32": np.array([[-(2**31), 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**62]], dtype=np.int64), "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16), "UINT32": np.array([[0, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], dtype=np.uint64), "BOOL": np.array([[True, False]]),
    "BYTES": np.array([[b"caf\xc3\xa9", b""]], dtype=object)}
ECHO = "def predict(**inputs):\n    return {'y_' + name[2:]: value for name, value in inputs.items()}\n"
NUMBERS = np.array([1, 2, 3], dtype=np.int32)


def write_config(root: Path) -> Path:
    """`echo` (every datatype, [-1, 2] each, model and application), `echo_typed` (all but FP16),
    `twice` versions 1 and 2 (label `stable` on 1) with application `twice_app`."""
    lines = "\n    ".join(f"x_{kind}: {{shape: [-1, 2], type: {type_}}}" for kind, type_ in DATATYPES.items())
    write_model(root, "echo", "echo", ECHO, lines, lines.replace("x_", "y_"))
    write_app(root, "echo_app", "echo:1")
    typed = "\n    ".join(line for line in lines.split("\n    ") if "FP16" not in line)
    write_model(root, "echo_typed", "echo_typed", ECHO, typed, typed.replace("x_", "y_"))
    write_app(root, "echo_typed_app", "echo_typed:1")
    for version in (1, 2):
        labels = "\nversion_labels: {stable: 1}" if version == 1 else ""
        write_model(root, f"twice{version}", "twice", f"def predict(x):\n    return {{'y': x * {version + 1}}}\n",
                    extra=f"version: {version}{labels}")
    write_app(root, "twice_app", "twice:2")
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    with runtimes_for(load_config(write_config(tmp_path_factory.mktemp("oip")))) as config:
        yield config


async def _port(settings: Settings, config: Config) -> AsyncIterator[int]:
    app = create_app(dataclasses.replace(settings, grpc_port=0), config)
    async with serve_app(app):
        yield app.state.grpc_port


@pytest.fixture
async def port(config: Config) -> AsyncIterator[int]:
    async for bound in _port(Settings(), config):
        yield bound


@pytest.fixture
async def example_port(example_config: Config) -> AsyncIterator[int]:
    async for bound in _port(Settings(), example_config):
        yield bound


async def call(port: int, method: Any, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                   response_deserializer=method.response.FromString)
        return await stub(request, timeout=20, metadata=metadata)


async def failure(port: int, method: Any, request: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(port, method, request, **kwargs)
    return caught.value


def infer_request(name: str, inputs: dict[str, np.ndarray[Any, Any]], *, version: str = "", raw: bool = True,
                  outputs: tuple[str, ...] = (), datatypes: dict[str, str] | None = None) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=name, model_version=version)
    for key, array in inputs.items():
        datatype = (datatypes or {}).get(key) or _datatype(array)
        tensor = request.inputs.add(name=key, datatype=datatype, shape=array.shape)
        if raw:
            request.raw_input_contents.append(array_to_raw(array, datatype))
        else:
            array_to_contents(array, tensor.contents, datatype)
    for key in outputs:
        request.outputs.add(name=key)
    return request


def _datatype(array: np.ndarray[Any, Any]) -> str:
    return "BYTES" if array.dtype == object else next(kind for kind, sample in SAMPLES.items()
                                                      if sample.dtype == array.dtype)


def answered(response: oip.ModelInferResponse) -> dict[str, tuple[str, list[int], Any]]:
    """Each output's datatype, shape and values (every one is in raw_output_contents)."""
    assert len(response.raw_output_contents) == len(response.outputs)
    assert not any(output.HasField("contents") for output in response.outputs)
    return {output.name: (output.datatype, list(output.shape),
                          raw_to_array(raw, output.datatype, output.shape).tolist())
            for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def every_input() -> dict[str, np.ndarray[Any, Any]]:
    return {f"x_{kind}": sample for kind, sample in SAMPLES.items()}


async def test_every_datatype_in_raw_contents_round_trips(port: int) -> None:
    response = await call(port, OIP_MODEL_INFER, infer_request("echo", every_input()))
    outputs = answered(response)
    for kind, sample in SAMPLES.items():
        assert outputs[f"y_{kind}"] == (kind, [1, 2], sample.tolist()), kind
    assert (response.model_name, response.model_version) == ("echo", "1")
    assert response.id  # the gateway's request id when the request has none


async def test_typed_contents_are_read_for_every_datatype_but_fp16(port: int) -> None:
    typed = {name: array for name, array in every_input().items() if name != "x_FP16"}
    request = infer_request("echo_app", typed, raw=False)
    request.inputs.add(name="x_FP16", datatype="FP16", shape=[1, 2])  # FP16 has no typed field
    error = await failure(port, OIP_MODEL_INFER, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "inputs[12] (x_FP16): FP16 has no typed contents field: send it in raw contents"
    response = await call(port, OIP_MODEL_INFER, infer_request("echo_typed_app", typed, raw=False))
    outputs = answered(response)  # answered in raw contents even when asked in typed ones
    for kind, sample in SAMPLES.items():
        if kind != "FP16":
            assert outputs[f"y_{kind}"] == (kind, [1, 2], sample.tolist()), kind
    assert (response.model_name, response.model_version) == ("echo_typed_app", "")


async def test_requested_outputs_choose_and_order_the_answer(port: int) -> None:
    request = infer_request("echo", every_input(), outputs=("y_BOOL", "y_FP32"))
    request.id = "my-id"
    response = await call(port, OIP_MODEL_INFER, request)
    assert [output.name for output in response.outputs] == ["y_BOOL", "y_FP32"]
    assert response.id == "my-id"
    unknown = infer_request("echo", every_input(), outputs=("y_BOOL", "nope"))
    error = await failure(port, OIP_MODEL_INFER, unknown)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("outputs[1].name: unknown output 'nope'; expected 'y_FP32', ")
    classes = infer_request("echo", every_input(), outputs=("y_FP32",))
    classes.outputs[0].parameters["classification"].int64_param = 2
    error = await failure(port, OIP_MODEL_INFER, classes)
    assert error.details() == ("outputs[0] (y_FP32): parameter 'classification': the classification extension "
                               "is not offered by the gateway")
    shared = infer_request("echo", every_input())
    shared.inputs[1].parameters["shared_memory_region"].string_param = "region"
    error = await failure(port, OIP_MODEL_INFER, shared)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("inputs[1] (x_FP64): parameter 'shared_memory_region': shared memory "
                                              "is not offered by the gateway")
    twice = infer_request("echo", every_input(), outputs=("y_BOOL", "y_BOOL"))
    assert (await failure(port, OIP_MODEL_INFER, twice)).details() == "outputs[1].name: output 'y_BOOL' requested twice"


async def test_versions_and_labels_of_a_model(port: int) -> None:
    x = {"x": NUMBERS}
    latest = await call(port, OIP_MODEL_INFER, infer_request("twice", x))
    assert (answered(latest)["y"][2], latest.model_version) == ([3, 6, 9], "2")
    first = await call(port, OIP_MODEL_INFER, infer_request("twice", x, version="1"))
    assert (answered(first)["y"][2], first.model_version) == ([2, 4, 6], "1")
    stable = await call(port, OIP_MODEL_INFER, infer_request("twice", x, version="stable"))
    assert (answered(stable)["y"][2], stable.model_version) == ([2, 4, 6], "1")
    error = await failure(port, OIP_MODEL_INFER, infer_request("twice", x, version="7"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    error = await failure(port, OIP_MODEL_INFER, infer_request("twice_app", x, version="1"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "applications have no versions" in (error.details() or "")
    app = await call(port, OIP_MODEL_INFER, infer_request("twice_app", x))
    assert answered(app)["y"][2] == [3, 6, 9]


async def test_client_mistakes_are_invalid_argument_naming_the_input(port: int) -> None:
    x = {"x": NUMBERS}
    cases = {
        "unknown model": (infer_request("nope", x), grpc.StatusCode.NOT_FOUND, "model 'nope' does not exist"),
        "bad datatype": (infer_request("twice", x, datatypes={"x": "FP32"}), grpc.StatusCode.INVALID_ARGUMENT,
                         "inputs[0] (x): expects INT32 but FP32 is provided"),
        "shape mismatch": (infer_request("twice", {"x": NUMBERS.reshape(3, 1)}), grpc.StatusCode.INVALID_ARGUMENT,
                           "inputs[0] (x): expects shape [-1], got [3, 1]"),
        "unknown input": (infer_request("twice", {**x, "z": NUMBERS}), grpc.StatusCode.INVALID_ARGUMENT,
                          "inputs[1] (z): unknown input; the inputs are x"),
        "missing input": (infer_request("twice", {}), grpc.StatusCode.INVALID_ARGUMENT,
                          "inputs: missing input 'x'; the inputs are x"),
    }
    for case, (request, code, message) in cases.items():
        error = await failure(port, OIP_MODEL_INFER, request)
        assert (error.code(), error.details()) == (code, message), case
    unknown = infer_request("twice", x)
    unknown.inputs[0].datatype = "INT128"
    error = await failure(port, OIP_MODEL_INFER, unknown)
    assert error.details() == "inputs[0] (x): expects INT32 but INT128 is provided"
    anything = infer_request("echo", every_input())
    anything.inputs[3].datatype = "FLOAT"
    error = await failure(port, OIP_MODEL_INFER, anything)
    assert error.details() == "inputs[3] (x_INT8): expects INT8 but FLOAT is provided"
    short = infer_request("twice", x)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
    error = await failure(port, OIP_MODEL_INFER, short)
    assert error.details() == ("inputs[0] (x): raw contents of 11 bytes for 3 INT32 elements of shape [3] "
                               "(12 bytes expected)")
    counted = infer_request("twice", x)
    counted.raw_input_contents.append(b"")
    error = await failure(port, OIP_MODEL_INFER, counted)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("raw_input_contents holds 2 entries for 1 inputs: when it is used, every input "
                               "is in it, in the inputs' order")
    mixed = infer_request("twice", x)
    mixed.inputs[0].contents.int_contents.extend([1, 2, 3])
    error = await failure(port, OIP_MODEL_INFER, mixed)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("inputs[0] (x): contents given with raw_input_contents")
    typed = {name: array for name, array in every_input().items() if name != "x_FP16"}
    out_of_range = infer_request("echo_typed", typed, raw=False)
    assert out_of_range.inputs[2].name == "x_INT8"
    out_of_range.inputs[2].contents.int_contents[0] = 300
    error = await failure(port, OIP_MODEL_INFER, out_of_range)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "inputs[2] (x_INT8): a value of int_contents is out of range for INT8")


async def test_elements_are_counted_from_the_shapes_before_decoding(config: Config) -> None:
    async for port in _port(Settings(max_elements=5), config):
        request = oip.ModelInferRequest(model_name="twice")
        request.inputs.add(name="x", datatype="INT32", shape=[1_000_000_000])  # no contents at all
        error = await failure(port, OIP_MODEL_INFER, request)
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                   "the request holds 1000000000 tensor elements; the limit is 5")
        negative = oip.ModelInferRequest(model_name="twice")
        negative.inputs.add(name="x", datatype="INT32", shape=[-1])
        error = await failure(port, OIP_MODEL_INFER, negative)
        assert error.details() == "inputs[0] (x): shape [-1] has a negative dimension"


async def test_health_and_server_metadata(port: int) -> None:
    assert (await call(port, OIP_SERVER_LIVE, oip.ServerLiveRequest())).live
    assert (await call(port, OIP_SERVER_READY, oip.ServerReadyRequest())).ready
    metadata = await call(port, OIP_SERVER_METADATA, oip.ServerMetadataRequest())
    assert (metadata.name, list(metadata.extensions)) == ("inference-gateway", [])
    assert metadata.version
    for name, version in (("echo_app", ""), ("twice", ""), ("twice", "1"), ("twice", "stable")):
        ready = await call(port, OIP_MODEL_READY, oip.ModelReadyRequest(name=name, version=version))
        assert ready.ready, (name, version)
    for name, version in (("nope", ""), ("twice", "9"), ("echo_app", "1")):  # not served: OK, not ready (Triton's)
        ready = await call(port, OIP_MODEL_READY, oip.ModelReadyRequest(name=name, version=version))
        assert not ready.ready, (name, version)
    health = await call(port, _HEALTH_CHECK, health_pb2.HealthCheckRequest(service=OIP_SERVICE))
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_model_metadata_of_models_and_applications(port: int) -> None:
    model = await call(port, OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="twice", version="1"))
    assert (model.name, list(model.versions), model.platform) == ("twice", ["1", "2"], "embedded")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "INT32", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("y", "INT32", [-1])]
    app = await call(port, OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="echo_app"))
    assert (app.name, list(app.versions), app.platform) == ("echo_app", [], "gateway-application")
    assert [(t.name, t.datatype, list(t.shape)) for t in app.inputs] == [
        (f"x_{kind}", kind, [-1, 2]) for kind in DATATYPES]
    assert [t.name for t in app.outputs] == [f"y_{kind}" for kind in DATATYPES]
    error = await failure(port, OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="nope"))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_an_application_of_the_example_config(example_port: int) -> None:
    response = await call(example_port, OIP_MODEL_INFER, infer_request("increment_app", {"number": NUMBERS}))
    assert answered(response)["number"] == ("INT32", [3], [2, 3, 4])
    model = await call(example_port, OIP_MODEL_INFER, infer_request("increment_model", {"number": NUMBERS}))
    assert answered(model)["number"] == ("INT32", [3], [2, 3, 4])


async def test_other_methods_of_the_service_are_unimplemented(port: int) -> None:
    for name in ("ModelConfig", "ModelStatistics", "RepositoryIndex", "ModelStreamInfer"):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = channel.unary_unary(f"/{OIP_SERVICE}/{name}", request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub(b"\x0a\x04echo", timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED, name
        if name != "ModelStreamInfer":
            assert (caught.value.details() or "").startswith(f"{OIP_SERVICE}/{name} is not offered by the gateway")


async def test_api_keys_are_checked_as_on_the_other_services(config: Config) -> None:
    key = ApiKey("echo-only", hashlib.sha256(b"k-echo").hexdigest(), ("echo_app",))
    settings = Settings(auth=AuthSettings(api_keys=(key,)))
    async for port in _port(settings, config):
        request = infer_request("echo_app", every_input())
        error = await failure(port, OIP_MODEL_INFER, request)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        response = await call(port, OIP_MODEL_INFER, request, metadata=(("x-api-key", "k-echo"),))
        assert answered(response)["y_INT32"][2] == SAMPLES["INT32"].tolist()
        error = await failure(port, OIP_MODEL_INFER, infer_request("twice", {"x": NUMBERS}),
                              metadata=(("authorization", "Bearer k-echo"),))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        error = await failure(port, OIP_MODEL_METADATA, oip.ModelMetadataRequest(name="twice_app"),
                              metadata=(("x-api-key", "k-echo"),))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        error = await failure(port, OIP_MODEL_READY, oip.ModelReadyRequest(name="twice"))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


class _HealthCheck:
    path = "/grpc.health.v1.Health/Check"
    request = health_pb2.HealthCheckRequest
    response = health_pb2.HealthCheckResponse


_HEALTH_CHECK = _HealthCheck()
