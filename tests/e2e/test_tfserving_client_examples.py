"""examples/tfserving_client/: each of the seed's TF Serving client scripts, run as a process against
`gateway serve --grpc-port` of the example's config, prints what TF Serving's client would."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataResponse, SignatureDefMap
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusResponse
from protos.tensorflow_serving.predict_pb2 import PredictResponse
from protos.tensorflow_serving.prediction_log_pb2 import PredictionLog
from tensorcodecs.tensor_proto import decode_tensor
from tests.conftest import REPO
from tests.e2e.processes import running_gateway
from tests.tfserving_server import FakeTFServing

EXAMPLE = REPO / "examples" / "tfserving_client"
_GRPC_PORT = re.compile(rb"serving gRPC on \S+:(\d+)")
ADMIN_TOKEN = "example-admin-token"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


LINEAR = np.array([[8.0], [11.0]], dtype=np.float32)  # Toy version 1: 2a + 3b of [[1, 2], [1, 3]]


@contextmanager
def gateway(config: Path, log: Path) -> Iterator[int]:
    """`gateway serve --config config --grpc-port 0`: its gRPC port, read from its log."""
    with running_gateway(config, "--grpc-port", "0", log=log):
        found = _GRPC_PORT.search(log.read_bytes())
        assert found is not None, "the gateway did not log its gRPC port"
        yield int(found.group(1))


def copy_example(folder: Path, logs: Path) -> Path:
    """A copy of the example's config in `folder`, with Toy's request log written to `logs`."""
    config = folder / "config"
    shutil.copytree(EXAMPLE / "config", config)
    for serving in (config / "models" / "Toy").glob("*/serving.yaml"):
        text = serving.read_text()
        assert "dir: .gateway/request-logs/Toy" in text
        serving.write_text(text.replace("dir: .gateway/request-logs/Toy", f"dir: {logs}"))
    return config


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The example's config as shipped, but for Toy's request log, written to a folder of the test's."""
    logs = tmp_path_factory.mktemp("request-logs")
    config = copy_example(tmp_path_factory.mktemp("config"), logs)
    with gateway(config, tmp_path_factory.mktemp("log") / "gateway.log") as port:
        yield port, logs


def run(script: str, port: int, *arguments: str) -> subprocess.CompletedProcess[str]:
    """One example script, as its README runs it, against the gateway on `port`."""
    return subprocess.run([sys.executable, str(EXAMPLE / script), "--port", str(port), *arguments],
                          capture_output=True, text=True, timeout=60, check=False)


def printed(script: str, port: int, *arguments: str) -> str:
    answer = run(script, port, *arguments)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


@pytest.mark.parametrize(
    ("arguments", "name", "version", "values"),
    [
        ((), "Toy", 2, _sigmoid(LINEAR)),  # no version: the latest
        (("-v", "1"), "Toy", 1, LINEAR),
        (("-v", "2"), "Toy", 2, _sigmoid(LINEAR)),
        (("-l", "stable"), "Toy", 1, LINEAR),
        (("-l", "canary"), "Toy", 2, _sigmoid(LINEAR)),
        (("-m", "Toy_double"), "Toy_double", 1, 2 * LINEAR),
    ],
)
def test_predict_answers_the_version_asked_for(example: tuple[int, Path], arguments: tuple[str, ...], name: str,
                                               version: int, values: np.ndarray) -> None:
    response = text_format.Parse(printed("grpcRequest.py", example[0], *arguments), PredictResponse())
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == (name, version, "serving_default")
    assert list(response.outputs) == ["output_1"]
    output = decode_tensor(response.outputs["output_1"])
    assert output.dtype == np.float32
    np.testing.assert_allclose(output, values, rtol=1e-6)


def test_an_unknown_version_fails_with_the_gateways_status(example: tuple[int, Path]) -> None:
    answer = run("grpcRequest.py", example[0], "-v", "7")
    assert answer.returncode == 1
    assert answer.stderr.startswith("NOT_FOUND: "), answer.stderr
    assert "Traceback" not in answer.stderr


def test_model_status_of_one_version(example: tuple[int, Path]) -> None:
    status = text_format.Parse(printed("grpcModelStatus.py", example[0], "-m", "Toy_double", "-v", "1"),
                               GetModelStatusResponse())
    assert [(v.version, v.state, v.status.error_code) for v in status.model_version_status] == [
        (1, 30, 0)]  # AVAILABLE, OK


def test_metadata_names_the_latest_version_and_its_signature(example: tuple[int, Path]) -> None:
    response = text_format.Parse(printed("grpcMetadata.py", example[0]), GetModelMetadataResponse())
    assert (response.model_spec.name, response.model_spec.version.value) == ("Toy", 2)
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature = SignatureDefMap.FromString(packed.value).signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    shapes = {name: (info.dtype, [d.size for d in info.tensor_shape.dim])
              for name, info in [*signature.inputs.items(), *signature.outputs.items()]}
    assert shapes == {"input_1": (1, [-1, 2]), "output_1": (1, [-1, 1])}  # DT_FLOAT


def test_request_log_prints_the_calls_record(example: tuple[int, Path]) -> None:
    port, logs = example
    out = printed("grpcRequestLog.py", port, "-m", "Toy", "-l", "canary", "--log-dir", str(logs))
    sections = re.split(r"^\*+(?:request logs|end|outputs)\*+\n", out, flags=re.M)
    assert [len(s) > 0 for s in sections] == [False, True, False, True, False], out
    request = text_format.Parse(sections[1], PredictionLog()).predict_log.request
    assert (request.model_spec.name, request.model_spec.version.value) == ("Toy", 2)
    np.testing.assert_array_equal(decode_tensor(request.inputs["input_1"]), [[1.0, 2.0], [1.0, 3.0]])
    response = text_format.Parse(sections[3], PredictResponse())
    np.testing.assert_allclose(decode_tensor(response.outputs["output_1"]), _sigmoid(LINEAR), rtol=1e-6)


@contextmanager
def tf_serving() -> Iterator[FakeTFServing]:
    """A TF-Serving-protocol server on its own event loop in a thread (the gateway is another process)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FakeTFServing()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_reload_hands_tf_serving_the_config_with_the_admin_token(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "models").mkdir(parents=True)
    digest = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    (config / "gateway.yaml").write_text(f"kind: Gateway\nauth:\n  admin_token_sha256: [{digest}]\n")
    with tf_serving() as tfs:
        (config / "models" / "Toy.yaml").write_text(
            f"kind: Model\nname: Toy\nbackend:\n  protocol: tensorflow-serving\n  target: {tfs.target}\n")
        with gateway(config, tmp_path / "gateway.log") as port:
            refused = run("grpcReloadModel.py", port, "-m", "Toy")
            assert refused.returncode == 1
            assert refused.stderr.startswith("UNAUTHENTICATED: "), refused.stderr
            assert printed("grpcReloadModel.py", port, "-m", "Toy", "--admin-token", ADMIN_TOKEN,
                           "--versions", "1", "--labels", "stable=1") == "model Toy reloaded successfully\n"
            assert printed("grpcReloadModel.py", port, "-m", "Toy", "--admin-token", ADMIN_TOKEN,
                           "--gateway-model", "Toy") == "model Toy reloaded successfully\n"
    reloads = [request for method, request in tfs.calls if method == "HandleReloadConfigRequest"]
    assert len(reloads) == 2
    (model,) = reloads[0].config.model_config_list.config  # type: ignore[attr-defined]
    assert (model.name, model.base_path, model.model_platform) == ("Toy", "/models/Toy", "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [1]
    assert dict(model.version_labels) == {"stable": 1}
