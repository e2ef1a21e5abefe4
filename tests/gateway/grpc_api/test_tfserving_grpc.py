"""TF Serving's PredictionService and ModelService on the gateway's gRPC port, end to end: a
real uvicorn with its gRPC door, the embedded runtime (example config) and the TF-Serving
test server behind it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.services import (
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    TF_RELOAD_CONFIG,
)
from protos.tensorflow import types_pb2
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from protos.tensorflow_serving.regression_pb2 import RegressionRequest
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor
from tests.conftest import serve_app
from tests.gateway.test_tfserving_api import V1, V2, write_config
from tests.tfserving_server import FakeTFServing


async def _port(settings: Settings, config: Config) -> AsyncIterator[int]:
    app = create_app(dataclasses.replace(settings, grpc_port=0), config)
    async with serve_app(app):
        yield app.state.grpc_port


@pytest.fixture
async def runtime_port(example_config: Config) -> AsyncIterator[int]:
    async for port in _port(Settings(), example_config):
        yield port


@pytest.fixture
async def tfs() -> AsyncIterator[FakeTFServing]:
    server = FakeTFServing()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def tfs_port(tfs: FakeTFServing, tmp_path: Path) -> AsyncIterator[int]:
    async for port in _port(Settings(), write_config(tmp_path / "config", tfs.target)):
        yield port


async def call(port: int, method: Any, request: Any, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                   response_deserializer=method.response.FromString)
        return await stub(request, timeout=10, metadata=metadata)


async def failure(port: int, method: Any, request: Any, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(port, method, request, **kwargs)
    return caught.value


def predict_request(name: str, inputs: dict[str, np.ndarray[Any, Any]], version: int | None = None,
                    label: str = "", output_filter: tuple[str, ...] = ()) -> PredictRequest:
    request = PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    for key, array in inputs.items():
        fill_tensor(request.inputs[key], array)
    return request


NUMBERS = {"number": np.array([1, 2, 3], dtype=np.int32)}
BATCH = {"input_1": np.array([[1, 2], [1, 3]], dtype=np.float32)}


async def test_predict_an_application_on_the_embedded_runtime(runtime_port: int) -> None:
    response = await call(runtime_port, TF_PREDICT, predict_request("increment_app", NUMBERS))
    assert decode_tensor(response.outputs["number"]).tolist() == [2, 3, 4]
    # TF Serving's Predict answers in the typed fields (predict_util.cc: kAsProtoField)
    assert (list(response.outputs["number"].int_val), response.outputs["number"].tensor_content) == ([2, 3, 4], b"")
    assert (response.model_spec.name, response.model_spec.signature_name) == ("increment_app", "increment_app")
    assert not response.model_spec.HasField("version")


async def test_predict_a_model_fills_the_model_spec(runtime_port: int) -> None:
    response = await call(runtime_port, TF_PREDICT, predict_request("increment_model", NUMBERS, version=1))
    assert decode_tensor(response.outputs["number"]).tolist() == [2, 3, 4]
    assert response.model_spec.name == "increment_model"
    assert response.model_spec.signature_name


async def test_contract_violations_name_the_field(runtime_port: int) -> None:
    wrong_dtype = predict_request("increment_app", {"number": np.array([1.5], dtype=np.float32)})
    error = await failure(runtime_port, TF_PREDICT, wrong_dtype)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == 'inputs["number"]: expects int32 but float32 is provided'
    extra = predict_request("increment_app", {**NUMBERS, "other": np.array([1], dtype=np.int32)})
    error = await failure(runtime_port, TF_PREDICT, extra)
    assert (error.details() or "").startswith('inputs["other"]: input tensor alias not found in signature: other.')
    versioned = predict_request("increment_app", NUMBERS, version=1)
    error = await failure(runtime_port, TF_PREDICT, versioned)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "applications have no versions: name a model" in (error.details() or "")


async def test_unknown_names_and_application_only_methods_are_not_found(runtime_port: int) -> None:
    error = await failure(runtime_port, TF_PREDICT, predict_request("nope", NUMBERS))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    status = GetModelStatusRequest()
    status.model_spec.name = "increment_app"
    error = await failure(runtime_port, TF_GET_MODEL_STATUS, status)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "is an application, not a model" in (error.details() or "")


async def test_versions_labels_and_output_filter_on_tf_serving(tfs_port: int, tfs: FakeTFServing) -> None:
    latest = await call(tfs_port, TF_PREDICT, predict_request("toy", BATCH))
    assert decode_tensor(latest.outputs["output_1"]).ravel().tolist() == pytest.approx([0.3, 0.4])
    assert (latest.model_spec.name, latest.model_spec.version.value, latest.model_spec.signature_name) == (
        "toy", 2, "serving_default")
    stable = await call(tfs_port, TF_PREDICT, predict_request("toy", BATCH, label="stable"))
    assert decode_tensor(stable.outputs["output_1"]).tolist() == [[8.0], [11.0]]
    assert stable.model_spec.version.value == 1
    one = await call(tfs_port, TF_PREDICT, predict_request("toy", BATCH, version=1, output_filter=("output_1",)))
    assert list(one.outputs) == ["output_1"]
    error = await failure(tfs_port, TF_PREDICT, predict_request("toy", BATCH, output_filter=("nope",)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("output tensor alias not found in signature: nope")
    error = await failure(tfs_port, TF_PREDICT, predict_request("toy", BATCH, version=7))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_a_models_exception_is_internal_with_its_message(tfs_port: int) -> None:
    request = predict_request("errors", {"code": np.array(13, dtype=np.int32)})
    error = await failure(tfs_port, TF_PREDICT, request)
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "Traceback" not in (error.details() or "")


async def test_metadata_status_and_regress(tfs_port: int) -> None:
    metadata = GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "toy"
    answer = await call(tfs_port, TF_GET_MODEL_METADATA, metadata)
    assert answer.model_spec.name == "toy"
    assert "signature_def" in answer.metadata
    del metadata.metadata_field[:]
    error = await failure(tfs_port, TF_GET_MODEL_METADATA, metadata)
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    status = GetModelStatusRequest()
    status.model_spec.name = "toy"
    status.model_spec.version.value = 1
    answer = await call(tfs_port, TF_GET_MODEL_STATUS, status)
    assert [entry.version for entry in answer.model_version_status] == [1]
    regress = RegressionRequest()
    regress.model_spec.name = "toy"
    regress.model_spec.version_label = "stable"
    example = regress.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([1.0, 2.0])
    answer = await call(tfs_port, TF_REGRESS, regress)
    assert [result.value for result in answer.result.regressions] == [3.0]
    assert answer.model_spec.name == "toy"


async def test_reload_config_needs_the_admin_token(tfs: FakeTFServing, tmp_path: Path) -> None:
    settings = Settings(auth=AuthSettings(admin_token_sha256=(hashlib.sha256(b"s3cret").hexdigest(),)))
    request = ReloadConfigRequest()
    entry = request.config.model_config_list.config.add(name="Toy", base_path="/models/Toy",
                                                        model_platform="tensorflow")
    entry.model_version_policy.specific.versions.append(1)
    entry.version_labels["canary"] = 1
    async for port in _port(settings, write_config(tmp_path / "config", tfs.target)):
        error = await failure(port, TF_RELOAD_CONFIG, request)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        answer = await call(port, TF_RELOAD_CONFIG, request, metadata=(("authorization", "Bearer s3cret"),))
        assert answer.status.error_code == 0
        forwarded = [request for name, request in tfs.calls if name == "HandleReloadConfigRequest"]
        lists = [getattr(sent, "config").model_config_list.config for sent in forwarded]  # noqa: B009
        assert [[c.name for c in configs] for configs in lists] == [["Toy"]]


def _predicts(tfs: FakeTFServing) -> int:
    return sum(name == "Predict" for name, _ in tfs.calls)


async def test_output_filter_is_checked_before_the_model_runs(tfs_port: int, tfs: FakeTFServing) -> None:
    before = _predicts(tfs)
    error = await failure(tfs_port, TF_PREDICT, predict_request("toy_one", BATCH, output_filter=("nope",)))
    assert error.details() == ("output tensor alias not found in signature: nope Outputs expected to be in the "
                               "set {output_1}.")
    twice = predict_request("toy_one", BATCH, output_filter=("output_1", "output_1"))
    error = await failure(tfs_port, TF_PREDICT, twice)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                               "duplicate output tensor alias: output_1")  # predict_util.cc's words
    on_app = predict_request("toy_v1", BATCH, output_filter=("output_1", "output_1"))
    assert (await failure(tfs_port, TF_PREDICT, on_app)).details() == "duplicate output tensor alias: output_1"
    assert _predicts(tfs) == before  # no model call was spent on them


async def test_a_model_answers_only_its_signatures_outputs(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    (tmp_path / "config" / "models" / "echo_text.yaml").write_text(
        f"kind: Model\nname: echo_text\nbackend:\n  protocol: tensorflow-serving\n  target: {tfs.target}\n"
        "  model_name: Echo\ncontract:\n  inputs:\n    text: {type: string, shape: [-1]}\n"
        "  outputs:\n    text: {type: string, shape: [-1]}\n")
    config = load_config(tmp_path / "config")
    async for port in _port(Settings(), config):
        request = predict_request("echo_text", {"text": np.array([b"hi"], dtype=object)})
        response = await call(port, TF_PREDICT, request)
        assert list(response.outputs) == ["text"]  # Echo's text_bytes is not in the declared signature
        assert list(response.outputs["text"].string_val) == [b"hi"]


async def test_the_answered_signature_name_is_the_one_asked_or_serving_default(runtime_port: int) -> None:
    plain = await call(runtime_port, TF_PREDICT, predict_request("increment_model", NUMBERS))
    default = predict_request("increment_model", NUMBERS)
    default.model_spec.signature_name = "serving_default"  # what the seed's grpcRequest.py sends
    named = await call(runtime_port, TF_PREDICT, default)
    assert plain.model_spec.signature_name == named.model_spec.signature_name == "serving_default"


async def test_a_failed_reload_is_its_grpc_status(tfs_port: int) -> None:
    request = ReloadConfigRequest()
    entry = request.config.model_config_list.config.add(name="Toy", base_path="/models/Toy",
                                                        model_platform="tensorflow")
    entry.model_version_policy.specific.versions.append(1)
    entry.version_labels["canary"] = 2  # version 2 is not loaded by this config: TF refuses the label
    error = await failure(tfs_port, TF_RELOAD_CONFIG, request)  # no admin token set: loopback is allowed
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 2 of model Toy" in (error.details() or "")
    other = ReloadConfigRequest()
    other.config.custom_model_config.type_url = "type.googleapis.com/some.Config"
    error = await failure(tfs_port, TF_RELOAD_CONFIG, other)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                          "Only ModelConfigList is currently supported")


async def test_reload_without_admin_tokens_answers_loopback_clients(tfs_port: int, tfs: FakeTFServing) -> None:
    request = ReloadConfigRequest()
    request.config.model_config_list.config.add(name="Toy", base_path="/models/Toy", model_platform="tensorflow")
    answer = await call(tfs_port, TF_RELOAD_CONFIG, request)
    assert answer.status.error_code == 0
    assert [name for name, _ in tfs.calls].count("HandleReloadConfigRequest") == 1


async def test_a_key_learns_nothing_of_an_application_it_may_not_call(example_config: Config) -> None:
    settings = Settings(auth=AuthSettings(api_keys=(ApiKey("k", hashlib.sha256(b"k1").hexdigest(),
                                                           ("increment_model",)),)))
    key = (("authorization", "Bearer k1"),)
    async for port in _port(settings, example_config):
        versioned = predict_request("increment_app", NUMBERS, version=1)
        error = await failure(port, TF_PREDICT, versioned, metadata=key)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "applications have no versions" not in (error.details() or "")
        error = await failure(port, TF_PREDICT, predict_request("increment_app", NUMBERS), metadata=key)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        allowed = await call(port, TF_PREDICT, predict_request("increment_model", NUMBERS), metadata=key)
        assert list(allowed.outputs["number"].int_val) == [2, 3, 4]


async def test_classify_on_tf_serving(tfs_port: int) -> None:
    request = ClassificationRequest()
    request.model_spec.name = "toy"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([1.0, 2.0])
    answer = await call(tfs_port, TF_CLASSIFY, request)
    assert answer.model_spec.name == "toy"
    assert len(answer.result.classifications) == 1
    missing = ClassificationRequest()
    error = await failure(tfs_port, TF_CLASSIFY, missing)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


async def test_routing_wishes_come_from_metadata(tfs: FakeTFServing, tmp_path: Path) -> None:
    write_config(tmp_path / "config", tfs.target)
    (tmp_path / "config" / "applications" / "toy_split.yaml").write_text(
        "kind: Application\nname: toy_split\nallow_variant_override: true\npipeline:\n"
        "  - - model: toy:1\n      weight: 50\n    - model: toy:2\n      weight: 50\n")
    async for port in _port(Settings(), load_config(tmp_path / "config")):
        for variant, expected in (("toy:1", V1), ("toy:2", V2)):
            forced = await call(port, TF_PREDICT, predict_request("toy_split", BATCH),
                                metadata=(("x-gateway-variant", variant),))
            answer = decode_tensor(forced.outputs["output_1"]).ravel().tolist()
            assert answer == pytest.approx(np.ravel(expected).tolist())
        keyed = [decode_tensor((await call(port, TF_PREDICT, predict_request("toy_split", BATCH),
                                           metadata=(("x-gateway-route-key", "user-7"),))).outputs["output_1"]).tolist()
                 for _ in range(4)]
        assert all(answer == keyed[0] for answer in keyed)  # one key sticks to one variant
        error = await failure(port, TF_PREDICT, predict_request("toy_v1", BATCH),
                              metadata=(("x-gateway-variant", "toy:1"),))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED  # toy_v1 does not allow the override


async def test_a_tf_serving_model_gets_the_tensors_as_sent_and_answers_its_backends(tmp_path: Path) -> None:
    server = FakeTFServing(typed=False)  # answers in tensor_content: the gateway's own answers are typed
    await server.start()
    try:
        async for port in _port(Settings(), write_config(tmp_path / "config", server.target)):
            request = predict_request("toy", {})
            typed = request.inputs["input_1"]
            typed.dtype = types_pb2.DT_FLOAT  # in float_val, as tf.make_tensor_proto writes small tensors
            typed.tensor_shape.dim.add().size, typed.tensor_shape.dim.add().size = 2, 2
            typed.float_val.extend([1, 2, 1, 3])
            sent = typed.SerializeToString()
            response = await call(port, TF_PREDICT, request)
            forwarded = [message for name, message in server.calls if name == "Predict"][-1]
            assert getattr(forwarded, "inputs")["input_1"].SerializeToString() == sent  # noqa: B009
            assert getattr(forwarded, "model_spec").name == "Toy"  # noqa: B009 (the backend's name)
            answered = response.outputs["output_1"]
            assert answered.tensor_content  # the backend's tensor, not re-encoded
            assert not answered.float_val
            assert decode_tensor(answered).ravel().tolist() == pytest.approx([0.3, 0.4])
            assert (response.model_spec.name, response.model_spec.version.value,
                    response.model_spec.signature_name) == ("toy", 2, "serving_default")
            declared = predict_request("toy_one", BATCH)  # a declared contract: decoded, checked, typed
            answer = await call(port, TF_PREDICT, declared)
            assert list(answer.outputs["output_1"].float_val) == [8.0, 11.0]
            huge = predict_request("toy", {})
            huge.inputs["input_1"].dtype = types_pb2.DT_FLOAT
            huge.inputs["input_1"].tensor_shape.dim.add().size = 10**9
            error = await failure(port, TF_PREDICT, huge)  # the element limit still holds, read from the shape
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith("the request holds 1000000000 tensor elements")
    finally:
        await server.stop()


async def test_a_key_for_a_backend_model_name_reaches_no_other_gateway_model(tfs: FakeTFServing,
                                                                              tmp_path: Path) -> None:
    settings = Settings(auth=AuthSettings(api_keys=(ApiKey("k", hashlib.sha256(b"k2").hexdigest(), ("Toy",)),)))
    async for port in _port(settings, write_config(tmp_path / "config", tfs.target)):
        error = await failure(port, TF_PREDICT, predict_request("Toy", BATCH), metadata=(("x-api-key", "k2"),))
        assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, "this API key may not call 'toy'")


async def test_a_forwarded_call_counts_in_the_metrics_as_a_decoded_one(tfs: FakeTFServing, tmp_path: Path) -> None:
    app = create_app(dataclasses.replace(Settings(), grpc_port=0), write_config(tmp_path / "config", tfs.target))
    async with serve_app(app) as url:
        await call(app.state.grpc_port, TF_PREDICT, predict_request("toy", BATCH))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            text = (await client.get("/metrics")).text
    lines = text.splitlines()
    assert 'gateway_backend_duration_seconds_count{model="toy",version=""} 1.0' in lines
    assert any(line.startswith("gateway_requests_total{") and 'route="/tensorflow.serving.PredictionService/Predict"'
               in line and 'model="toy"' in line and 'version="2"' in line for line in lines)
