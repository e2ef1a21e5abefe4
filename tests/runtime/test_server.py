"""The runtime's gRPC server in this process, called over a real channel."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2

from gateway.backends.tfserving import HEALTH_CHECK
from gateway.errors import grpc_code
from protos.hydrosphere import contract_pb2 as hydro_contract
from protos.hydrosphere import runtime_pb2 as hydro_runtime
from protos.runtime.calls_pb2 import PredictManyRequest, PredictResult
from protos.services import (
    HYDRO_PREDICT,
    RUNTIME_PREDICT_MANY,
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    Method,
)
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest, SignatureDefMap
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest, ModelVersionStatus
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.server import ModelServer
from tensorcodecs import lookup_dtype
from tensorcodecs.signature_def import signature_from_def
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor
from tests.conftest import INCREMENT_MODEL, write_model


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[ModelServer] = []

    def start(folder: Path) -> grpc.Channel:
        server = ModelServer.for_folder(folder, chdir=False)
        server.start()
        servers.append(server)
        return grpc.insecure_channel(f"127.0.0.1:{server.port}")

    yield start
    for server in servers:
        server.stop(0).wait()


def predict(channel: grpc.Channel, request: PredictRequest) -> PredictResponse:
    call = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                               response_deserializer=PredictResponse.FromString)
    return call(request, timeout=5)  # type: ignore[no-any-return]


def request_for(name: str, **inputs: list[int]) -> PredictRequest:
    request = PredictRequest()
    request.model_spec.name = name
    for key, values in inputs.items():
        request.inputs[key].CopyFrom(encode_tensor(np.array(values, np.int32), lookup_dtype("int32")))
    return request


def test_seed_function_runs_against_the_compat_module(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    response = predict(channel, request_for("increment_model", number=[1, 2, 3]))
    assert decode_tensor(response.outputs["number"]).tolist() == [2, 3, 4]
    assert response.model_spec.name == "increment_model"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "increment"


def test_health_is_serving(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    check = channel.unary_unary(HEALTH_CHECK,
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    for service in ("", "tensorflow.serving.PredictionService"):
        answer = check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_another_model_name_is_not_found(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    with pytest.raises(grpc.RpcError) as caught:
        predict(channel, request_for("other", number=[1]))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_missing_input_is_invalid_argument(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    with pytest.raises(grpc.RpcError) as caught:
        predict(channel, request_for("increment_model", wrong=[1]))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "missing input 'number'" in (caught.value.details() or "")


def test_user_exception_becomes_internal_with_type_and_message(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = write_model(tmp_path, "broken", "broken", "def predict(x):\n    raise ValueError('bad weights')\n")
    with pytest.raises(grpc.RpcError) as caught:
        predict(serve(folder), request_for("broken", x=[1]))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == "ValueError: bad weights"


def test_output_outside_the_contract_is_internal(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = ("import hydro_serving_grpc as hs\n"
              "def predict(x):\n    return hs.PredictResponse(outputs={'z': x})\n")
    folder = write_model(tmp_path, "wrongout", "wrongout", source)
    with pytest.raises(grpc.RpcError) as caught:
        predict(serve(folder), request_for("wrongout", x=[1]))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == "model wrongout: output 'y' is missing from the answer"


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def predict(x):\n    return (\n", "func_main.py:2"),
        ("def other(x):\n    pass\n", "no function 'predict'"),
        ("import no_such_module\n", "ModuleNotFoundError"),
    ],
)
def test_a_folder_that_fails_to_load_stops_the_runtime(tmp_path: Path, source: str, words: str) -> None:
    folder = write_model(tmp_path, "bad", "bad", source)
    result = subprocess.run([sys.executable, "-m", "runtime", "serve", str(folder), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert words in result.stderr
    assert "model bad" in result.stderr


def call(channel: grpc.Channel, method: Method[Any, Any], request: Message) -> Any:
    stub = channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                               response_deserializer=method.response.FromString)
    return stub(request, timeout=30)


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ("def predict(x):\n    x *= 10\n    return x\n", ""),
        ("import asyncio\nasync def predict(x):\n    await asyncio.sleep(0)\n    return {'y': x * 10}\n", ""),
        ("import os\ndef predict(x):\n    return {'y': x * 10}\n", "workers: 2"),
    ],
    ids=["numpy-sync", "numpy-async", "two-worker-processes"],
)
def test_numpy_style(serve, tmp_path: Path, source: str, extra: str) -> None:  # type: ignore[no-untyped-def]
    channel = serve(write_model(tmp_path, "tenfold", "tenfold", source, extra=extra))
    response = predict(channel, request_for("tenfold", x=[1, 2]))
    assert decode_tensor(response.outputs["y"]).tolist() == [10, 20]


def test_worker_processes_share_the_load(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = ("import os, time\nimport numpy as np\n"
              "def predict(x):\n    time.sleep(0.2)\n    return np.full(1, os.getpid(), np.int32)\n")
    channel = serve(write_model(tmp_path, "pids", "pids", source, extra="workers: 2"))
    with futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: predict(channel, request_for("pids", x=[0])), range(4)))
    pids = {int(decode_tensor(a.outputs["y"])[0]) for a in answers}
    assert len(pids) == 2
    assert os.getpid() not in pids


def test_get_model_metadata_carries_the_contract(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    request = GetModelMetadataRequest(metadata_field=["signature_def", "runtime"])
    request.model_spec.name = "increment_model"
    response = call(channel, TF_GET_MODEL_METADATA, request)
    assert response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = SignatureDefMap.FromString(packed.value)
    assert set(signatures.signature_def) == {"increment", "serving_default"}
    contract = signature_from_def("increment", signatures.signature_def["increment"])
    assert contract.inputs["number"].dtype.name == "int32"
    assert contract.inputs["number"].shape == (-1,)
    assert StringValue.FromString(response.metadata["runtime"].value).value.startswith("hydrosphere/")


def test_get_model_metadata_needs_a_field(serve) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(serve(INCREMENT_MODEL), TF_GET_MODEL_METADATA, GetModelMetadataRequest())
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_status(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    request = GetModelStatusRequest()
    request.model_spec.name = "increment_model"
    status = call(channel, TF_GET_MODEL_STATUS, request).model_version_status
    assert [(s.version, s.state, s.status.error_code) for s in status] == [
        (1, ModelVersionStatus.AVAILABLE, 0)]
    request.model_spec.version.value = 2
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, TF_GET_MODEL_STATUS, request)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_unknown_signature_is_tf_servings_failed_precondition(serve) -> None:  # type: ignore[no-untyped-def]
    request = request_for("increment_model", number=[1])
    request.model_spec.signature_name = "classify"
    with pytest.raises(grpc.RpcError) as caught:
        predict(serve(INCREMENT_MODEL), request)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == 'Serving signature key "classify" not found.'


def classify_or_regress(channel: grpc.Channel, method: Method[Any, Any], signature_name: str = "") -> grpc.RpcError:
    request = method.request()
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature_name
    request.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, method, request)
    return caught.value


# The contract's SignatureDef as C++ DebugString prints it (map entries sorted by key).
X_TO_Y = ('inputs {\n  key: "x"\n  value {\n    name: "x"\n    dtype: DT_INT32\n    tensor_shape {\n'
          '      dim {\n        size: -1\n      }\n    }\n  }\n}\noutputs {\n  key: "y"\n  value {\n'
          '    name: "y"\n    dtype: DT_INT32\n    tensor_shape {\n      dim {\n        size: -1\n      }\n'
          '    }\n  }\n}\nmethod_name: "tensorflow/serving/predict"\n')
INPUTS_TO_Y = X_TO_Y.replace('"x"', '"inputs"')


@pytest.mark.parametrize(("inputs", "outputs", "classify", "regress"), [
    ("{a: {type: int32}, b: {type: int32}}", "{y: {type: int32}}",
     "Expected one input Tensor.", "Expected one input Tensor."),
    ("{x: {type: int32}}", "{a: {type: int32}, b: {type: int32}, c: {type: int32}}",
     "Expected one or two output Tensors, found 3", "Expected one output Tensor."),
    ("{x: {type: int32}}", "{a: {type: int32}, b: {type: int32}}",
     "No classification inputs found in SignatureDef: ", "Expected one output Tensor."),
    ("{x: {shape: [-1], type: int32}}", "{y: {shape: [-1], type: int32}}",
     f"No classification inputs found in SignatureDef: {X_TO_Y}",
     f"No regression inputs found in SignatureDef: {X_TO_Y}"),
    ("{inputs: {shape: [-1], type: int32}}", "{y: {shape: [-1], type: int32}}",
     'Expected classification signature outputs to contain at least one of "classes" or "scores". '
     f"Signature was: {INPUTS_TO_Y}", f"No regression outputs found in SignatureDef: {INPUTS_TO_Y}"),
])
def test_classify_and_regress_answer_tf_servings_signature_checks(  # type: ignore[no-untyped-def]
        serve, tmp_path: Path, inputs: str, outputs: str, classify: str, regress: str) -> None:
    """TF Serving's default (no method_name check): classifier.cc's and regressor.cc's checks of
    the signature's inputs and outputs, in their order."""
    folder = write_model(tmp_path, "m", "m", "def predict(**kwargs):\n    return kwargs\n",
                         inputs=inputs[1:-1].replace("}, ", "}\n    "),
                         outputs=outputs[1:-1].replace("}, ", "}\n    "))
    channel = serve(folder)
    for method, expected in ((TF_CLASSIFY, classify), (TF_REGRESS, regress)):
        error = classify_or_regress(channel, method)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(expected), (method.name, error.details())
        assert classify_or_regress(channel, method, "serving_default").details() == error.details()


def test_classify_on_a_signature_passing_tf_servings_checks_is_unimplemented(  # type: ignore[no-untyped-def]
        serve, tmp_path: Path) -> None:
    folder = write_model(tmp_path, "m", "m", "def predict(**kwargs):\n    return kwargs\n",
                         inputs="inputs: {type: string}", outputs="scores: {type: float32}")
    error = classify_or_regress(serve(folder), TF_CLASSIFY)
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "served by Predict only" in (error.details() or "")


def test_classify_and_regress_on_an_unknown_signature(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    for method in (TF_CLASSIFY, TF_REGRESS):
        request = method.request()
        request.model_spec.name = "increment_model"
        request.model_spec.signature_name = "other"
        with pytest.raises(grpc.RpcError) as caught:
            call(channel, method, request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "No signature was found with the name: other"


def test_hydrosphere_runtime_api(serve) -> None:  # type: ignore[no-untyped-def]
    channel = serve(INCREMENT_MODEL)
    request = hydro_runtime.PredictRequest()
    tensor = request.inputs["number"]
    tensor.dtype = hydro_contract.DT_INT32
    tensor.tensor_shape.dims.extend([3])
    tensor.int_val.extend([1, 2, 3])
    response = call(channel, HYDRO_PREDICT, request)
    answer = response.outputs["number"]
    assert answer.dtype == hydro_contract.DT_INT32
    assert list(answer.tensor_shape.dims) == [3]
    assert list(answer.int_val) == [2, 3, 4]


def test_hydrosphere_binary_val_is_tensor_content(serve) -> None:  # type: ignore[no-untyped-def]
    request = hydro_runtime.PredictRequest()
    tensor = request.inputs["number"]
    tensor.dtype = hydro_contract.DT_INT32
    tensor.tensor_shape.dims.extend([2])
    tensor.binary_val = np.array([5, 6], "<i4").tobytes()
    response = call(serve(INCREMENT_MODEL), HYDRO_PREDICT, request)
    assert list(response.outputs["number"].int_val) == [6, 7]


# ---------------------------------------------------------------- PredictMany


def predict_many(channel: grpc.Channel, requests: list[PredictRequest]) -> list[PredictResult]:
    answer = call(channel, RUNTIME_PREDICT_MANY,
                  PredictManyRequest(requests=requests, request_ids=[f"r{i}" for i in range(len(requests))]))
    return list(answer.results)


@pytest.mark.parametrize(
    ("source", "extra"),
    [
        ("def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n    return x * 10\n", ""),
        ("import asyncio\nasync def predict(x):\n    await asyncio.sleep(0.01)\n"
         "    if x[0] < 0:\n        raise ValueError('negative')\n    return {'y': x * 10}\n", ""),
        ("def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n    return {'y': x * 10}\n",
         "workers: 2"),
    ],
    ids=["sync", "async", "two-worker-processes"],
)
def test_predict_many_answers_each_request_on_its_own(serve, tmp_path: Path, source: str,  # type: ignore[no-untyped-def]
                                                      extra: str) -> None:
    channel = serve(write_model(tmp_path, "tenfold", "tenfold", source, extra=extra))
    unknown_signature = request_for("tenfold", x=[5])
    unknown_signature.model_spec.signature_name = "nope"
    results = predict_many(channel, [
        request_for("tenfold", x=[1, 2]),
        request_for("tenfold", x=[-1]),           # the function raises
        request_for("other", x=[1]),              # another model's name
        request_for("tenfold", z=[1]),            # not the contract's input
        unknown_signature,
        request_for("tenfold", x=[3]),
    ])
    codes = [grpc_code(r.code) for r in results]
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND,
                     grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OK]
    assert decode_tensor(results[0].response.outputs["y"]).tolist() == [10, 20]
    assert decode_tensor(results[5].response.outputs["y"]).tolist() == [30]
    assert results[1].message == "ValueError: negative"
    assert results[0].response == predict(channel, request_for("tenfold", x=[1, 2]))  # as Predict answers


def test_predict_many_of_nothing_is_an_empty_answer(serve) -> None:  # type: ignore[no-untyped-def]
    assert predict_many(serve(INCREMENT_MODEL), []) == []


def test_predict_many_runs_async_requests_at_once(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = "import asyncio\nasync def predict(x):\n    await asyncio.sleep(0.3)\n    return {'y': x}\n"
    channel = serve(write_model(tmp_path, "slow", "slow", source))
    started = time.monotonic()
    results = predict_many(channel, [request_for("slow", x=[i]) for i in range(10)])
    assert [decode_tensor(r.response.outputs["y"]).tolist() for r in results] == [[i] for i in range(10)]
    assert time.monotonic() - started < 2.0  # not 10 x 0.3 s


def test_predict_many_spreads_a_slow_sync_function_over_threads(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = "import time\ndef predict(x):\n    time.sleep(0.1)\n    return {'y': x}\n"
    channel = serve(write_model(tmp_path, "slow", "slow", source))
    predict(channel, request_for("slow", x=[0]))  # the runtime learns that the function is slow
    started = time.monotonic()
    results = predict_many(channel, [request_for("slow", x=[i]) for i in range(8)])
    assert [decode_tensor(r.response.outputs["y"]).tolist() for r in results] == [[i] for i in range(8)]
    assert time.monotonic() - started < 0.5  # not 8 x 0.1 s one after another
