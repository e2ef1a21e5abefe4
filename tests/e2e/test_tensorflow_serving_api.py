"""Interop with TF Serving's own Python client: examples/tfserving_client/tf_predict.py, run with the
real `tensorflow-serving-api` stubs and `tf.make_tensor_proto` / `tf.make_ndarray` in an environment
of their own (TensorFlow is too big for the dev one), against `gateway serve --grpc-port`.

`make test-tf-grpc` builds that environment (.venv-tf) and runs this with GATEWAY_TF_PYTHON; without it
the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_tfserving_client_examples import EXAMPLE, LINEAR, copy_example, gateway

# Set by `make test-tf-grpc` only: importing TensorFlow three times would add a minute to the suite.
TF_PYTHON = os.environ.get("GATEWAY_TF_PYTHON", "")

pytestmark = [
    pytest.mark.tensorflow_serving_api,
    pytest.mark.skipif(not TF_PYTHON or not Path(TF_PYTHON).exists(),
                       reason="needs GATEWAY_TF_PYTHON, a python with tensorflow-serving-api: make test-tf-grpc"),
]


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config = copy_example(tmp_path_factory.mktemp("config"), tmp_path_factory.mktemp("request-logs"))
    with gateway(config, tmp_path_factory.mktemp("log") / "gateway.log") as grpc_port:
        yield grpc_port


@pytest.mark.parametrize(
    ("arguments", "spec", "values"),
    [
        (("-v", "1"), ["Toy", 1, "serving_default"], LINEAR),
        (("-l", "canary"), ["Toy", 2, "serving_default"], 1 / (1 + np.exp(-LINEAR))),
        (("-m", "Toy_double"), ["Toy_double", 1, "serving_default"], 2 * LINEAR),
    ],
)
def test_tensorflow_serving_api_client(port: int, arguments: tuple[str, ...], spec: list[object],
                                       values: np.ndarray) -> None:
    answer = subprocess.run([TF_PYTHON, str(EXAMPLE / "tf_predict.py"), "--port", str(port), *arguments],
                            capture_output=True, text=True, timeout=180, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout.splitlines()[-1])
    assert result["model_spec"] == spec
    np.testing.assert_allclose(result["output_1"], values, rtol=1e-6)
