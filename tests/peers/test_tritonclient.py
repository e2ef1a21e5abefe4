"""Triton's own client library (`tritonclient[http,grpc]`) against `gateway serve --grpc-port`:
health, model readiness and metadata, and inference with JSON and binary tensors over HTTP and
raw contents over gRPC, for an application and a model of the embedded runtime, with FP32, INT32,
BOOL and BYTES tensors, and the gateway's own message in the client's InferenceServerException.

tritonclient pins a protobuf of its own, so `make test-peers` builds it a venv (.venv-peers-triton)
and runs tests/peers/triton_client.py with its interpreter (GATEWAY_TRITON_PYTHON); without it the
test is skipped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_app, write_model
from tests.e2e.processes import running_gateway
from tests.gateway.grpc_api.test_hydrosphere_interop import grpc_address

TRITON_PYTHON = os.environ.get("GATEWAY_TRITON_PYTHON", "")
CLIENT = Path(__file__).with_name("triton_client.py")

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(not TRITON_PYTHON or not Path(TRITON_PYTHON).exists(),
                       reason="needs GATEWAY_TRITON_PYTHON, a python with tritonclient[http,grpc]: "
                              "run `make test-peers`"),
]

EVERY = '''import numpy as np


def predict(f, i, flag, word):
    return {"f": f + 1, "i": i + 1, "flag": ~flag,
            "word": np.array([w.upper() for w in word.ravel()], dtype=object).reshape(word.shape)}
'''
TENSORS = ("f: {shape: [-1], type: float32}\n    i: {shape: [-1, 2], type: int32}\n"
           "    flag: {shape: [-1], type: bool}\n    word: {shape: [-1], type: string}")
ANSWER = {"f": [1.5, -0.25, 4.0], "i": [[2, 3], [4, -3]], "flag": [False, True],
          "word": ["HELLO", "GRÜSS"]}  # str.upper: ß becomes SS
DATATYPES = {"f": "FP32", "i": "INT32", "flag": "BOOL", "word": "BYTES"}
METADATA_INPUTS = [{"name": "f", "datatype": "FP32", "shape": [-1]},
                   {"name": "i", "datatype": "INT32", "shape": [-1, 2]},
                   {"name": "flag", "datatype": "BOOL", "shape": [-1]},
                   {"name": "word", "datatype": "BYTES", "shape": [-1]}]
# Every input sent, f as INT32: the gateway's message on each front door.
WRONG_DATATYPE = {"http": "inputs[0].datatype: input 'f' is FP32 (float32), got datatype INT32",
                  "grpc": "inputs[0] (f): expects FP32 but INT32 is provided"}


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    config = tmp_path_factory.mktemp("config")
    (config / "gateway.yaml").write_text("kind: Gateway\n")
    write_model(config, "every", "every", EVERY, inputs=TENSORS, outputs=TENSORS, extra="version: 1")
    write_app(config, "every_app", "every:1")
    log = tmp_path_factory.mktemp("log") / "gateway.log"
    with running_gateway(config, "--grpc-port", "0", log=log) as (_, url):
        ran = subprocess.run([TRITON_PYTHON, str(CLIENT), url.removeprefix("http://"), grpc_address(log)],
                             capture_output=True, text=True, timeout=180, check=False)
    assert ran.returncode == 0, ran.stderr
    return [json.loads(line) for line in ran.stdout.splitlines()]


def rows(answers: list[dict[str, Any]], door: str, call: str) -> list[dict[str, Any]]:
    found = [row for row in answers if (row["door"], row["call"]) == (door, call)]
    assert found, f"no {door} {call} answer"
    return found


@pytest.mark.parametrize("door", ["http", "grpc"])
def test_health_and_model_readiness(answers: list[dict[str, Any]], door: str) -> None:
    assert rows(answers, door, "live")[0]["answer"] is True
    assert rows(answers, door, "ready")[0]["answer"] is True
    # Triton's ModelReady answers ready: false for a model it does not have, over gRPC too (no error).
    ready = {(row["name"], row["version"]): row.get("answer", row.get("error"))
             for row in rows(answers, door, "model_ready")}
    assert ready == {("every_app", ""): True, ("every", ""): True, ("every", "1"): True,
                     ("no_such_model", ""): False}
    assert rows(answers, door, "server_metadata")[0]["answer"]["name"]


@pytest.mark.parametrize("door", ["http", "grpc"])
def test_model_metadata_of_an_application_and_a_model(answers: list[dict[str, Any]], door: str) -> None:
    metadata = {(row["name"], row["version"]): row["answer"] for row in rows(answers, door, "model_metadata")}
    app = metadata["every_app", ""]
    assert (app["name"], app["platform"], app.get("versions", [])) == ("every_app", "gateway-application", [])
    for version in ("", "1"):
        model = metadata["every", version]
        assert (model["name"], model["platform"], model["versions"]) == ("every", "embedded", ["1"])
    for answer in metadata.values():
        assert [{**tensor, "shape": [int(d) for d in tensor["shape"]]} for tensor in answer["inputs"]] \
            == METADATA_INPUTS
        assert [tensor["name"] for tensor in answer["outputs"]] == ["f", "i", "flag", "word"]


@pytest.mark.parametrize(("door", "binary"), [("http", False), ("http", True), ("grpc", True)])
def test_infer_every_datatype_on_an_application_and_a_model(answers: list[dict[str, Any]], door: str,
                                                             binary: bool) -> None:
    inferred = [row for row in rows(answers, door, "infer") if row["binary"] is binary]
    assert {(row["name"], row["version"]) for row in inferred} == {("every_app", ""), ("every", ""), ("every", "1")}
    for row in inferred:
        assert row["answer"] == ANSWER, row
        assert row["datatypes"] == DATATYPES
        assert row["id"] == "req-7"
        assert row["model_name"] == row["name"]
        assert row["binary_outputs"] == (sorted(DATATYPES) if binary else [])


@pytest.mark.parametrize("door", ["http", "grpc"])
def test_client_mistakes_raise_the_gateways_message(answers: list[dict[str, Any]], door: str) -> None:
    # tritonclient.grpc puts the status code before the message: "[StatusCode.INVALID_ARGUMENT] ..."
    wrong = rows(answers, door, "wrong_datatype")[0]["answer"]
    assert wrong is not None
    assert wrong.endswith(WRONG_DATATYPE[door]), wrong
    missing = rows(answers, door, "missing_model")[0]["answer"]
    assert missing is not None
    assert missing.endswith("model 'no_such_model' does not exist"), missing
