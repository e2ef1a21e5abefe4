"""The runtime's gRPC server in this process, called over a real channel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from gateway.backends.tfserving import HEALTH_CHECK
from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.server import ModelServer
from tensorcodecs import lookup_dtype
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor
from tests.conftest import INCREMENT_MODEL

SERVING_YAML = """kind: Model
name: {name}
contract:
  name: {function}
  inputs:
    x: {{shape: [-1], type: int32}}
  outputs:
    y: {{shape: [-1], type: int32}}
"""


def make_model(root: Path, name: str, source: str, function: str = "predict") -> Path:
    folder = root / name
    (folder / "src").mkdir(parents=True)
    (folder / "serving.yaml").write_text(SERVING_YAML.format(name=name, function=function))
    (folder / "src" / "func_main.py").write_text(source)
    return folder


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
    folder = make_model(tmp_path, "broken", "def predict(x):\n    raise ValueError('bad weights')\n")
    with pytest.raises(grpc.RpcError) as caught:
        predict(serve(folder), request_for("broken", x=[1]))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == "ValueError: bad weights"


def test_output_outside_the_contract_is_internal(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = ("import hydro_serving_grpc as hs\n"
              "def predict(x):\n    return hs.PredictResponse(outputs={'z': x})\n")
    folder = make_model(tmp_path, "wrongout", source)
    with pytest.raises(grpc.RpcError) as caught:
        predict(serve(folder), request_for("wrongout", x=[1]))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert caught.value.details() == "model wrongout: output 'y' is missing from the answer"


@pytest.mark.parametrize(
    ("source", "function", "words"),
    [
        ("def predict(x):\n    return (\n", "predict", "func_main.py:2"),
        ("def other(x):\n    pass\n", "predict", "no function 'predict'"),
        ("import no_such_module\n", "predict", "ModuleNotFoundError"),
    ],
)
def test_a_folder_that_fails_to_load_stops_the_runtime(tmp_path: Path, source: str, function: str,
                                                       words: str) -> None:
    folder = make_model(tmp_path, "bad", source, function)
    result = subprocess.run([sys.executable, "-m", "runtime", "serve", str(folder), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert words in result.stderr
    assert "model bad" in result.stderr
