"""Hydrosphere's own client stubs (hydro-serving-grpc 3.x, generated against protobuf<4) calling
`gateway serve --grpc-port`. They cannot share the gateway's venv (protobuf 5), so `make
test-hydro-grpc` builds one (.venv-hydro-grpc) and points HYDRO_GRPC_PYTHON at its interpreter,
which runs tests/gateway/grpc_api/hydro_stub_client.py; without it the test is skipped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.processes import running_gateway

pytestmark = pytest.mark.hydro_grpc
CLIENT = Path(__file__).with_name("hydro_stub_client.py")
CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
_GRPC_SERVING = re.compile(rb" INFO gateway\S*: serving gRPC on (\S+):(\d+) ")


def grpc_address(log: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (found := _GRPC_SERVING.search(log.read_bytes())) is None:
        assert time.monotonic() < deadline, "the gateway did not say where it serves gRPC"
        time.sleep(0.05)
    return f"{found.group(1).decode()}:{found.group(2).decode()}"


def test_hydro_serving_grpc_stubs_call_the_gateway(tmp_path: Path) -> None:
    python = os.environ.get("HYDRO_GRPC_PYTHON")
    if not python:
        pytest.skip("needs hydro-serving-grpc 3.x in a venv of its own: run `make test-hydro-grpc`")
    log = tmp_path / "gateway.log"
    with running_gateway(CONFIG_DIR, "--grpc-port", "0", log=log):
        ran = subprocess.run([python, str(CLIENT), grpc_address(log)], capture_output=True, timeout=120,
                             check=False)
    assert ran.returncode == 0, ran.stderr.decode()
    answers = {(row["method"], row["name"]): row for row in map(json.loads, ran.stdout.decode().splitlines())}
    int32 = 3
    assert answers["PredictApplication", "increment_app"] == {
        "method": "PredictApplication", "name": "increment_app", "code": "OK", "int_val": [2, 3], "dims": [2],
        "dtype": int32}
    assert answers["PredictApplication", "canary_app"]["int_val"] == [42]
    assert answers["PredictServable", "increment_model:1"]["int_val"] == [8]
    # Version 2 stays at the int32 maximum where version 1 wraps around.
    assert answers["PredictServable", "increment_numpy-2-wild-flower"]["int_val"] == [2147483647]
    assert answers["ShadowlessPredictServable", "increment_numpy:1"]["int_val"] == [-2147483648]
    missing = answers["PredictApplication", "no_such_app"]
    assert (missing["code"], "no_such_app" in missing["details"]) == ("NOT_FOUND", True)
    assert answers["PredictServable", "increment_numpy:9"]["code"] == "NOT_FOUND"
