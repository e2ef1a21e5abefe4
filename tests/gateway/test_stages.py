"""Applications of several stages end to end, over a real uvicorn and the real embedded runtime:
arrays passed between stages (each sent only the inputs its model takes), one deadline for the
whole pipeline, a failing stage named in the error, `validate_outputs`, Server-Timing and the
per-stage histograms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import (
    BackendError,
    DeadlineExceeded,
    ModelError,
    NotFound,
    OutputContractViolation,
    from_grpc_status,
)
from gateway.manifests import Config, load_config
from gateway.registry import Registry
from gateway.settings import Settings
from runtime.server import ModelServer
from tests.conftest import runtimes_for, serve_app, write_model
from tests.doubles import InMemoryBackend
from tests.gateway.test_dataplane import _app, _model
from tests.gateway.test_observability import sample

JSON = {"content-type": "application/json"}
PIPELINE = "/gateway/applications/pipeline_app"
THREE_STAGES = "/gateway/applications/three_stages"

# s2 fails on a negative value and is slow on 1000, so that one pipeline shows both.
S1 = "import numpy as np\n\ndef predict(x):\n    return {'y': x.astype(np.float32) / 2, 'unused': np.int64(7)}\n"
S2 = ("import time\n\nimport numpy as np\n\ndef predict(y):\n"
      "    if (y < 0).any():\n        raise ValueError('no negative readings')\n"
      "    if (y == 1000).any():\n        time.sleep(1.5)\n"
      "    return {'z': y.astype(np.float64) * 3}\n")
IDENTITY = "def predict(x):\n    return {'x': x}\n"
S3 = "import numpy as np\n\ndef predict(z):\n    return {'w': np.array([f'{v:.2f}' for v in z])}\n"
# The runtime behind `claims_*`: its own contract says float64, which it keeps.
FLOAT64 = "import numpy as np\n\ndef predict(x):\n    return {'y': x.astype(np.float64) / 4}\n"


def _timing_names(header: str) -> list[str]:
    return [part.split(";")[0].strip() for part in header.split(",")]


def _timing_descriptions(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+);dur=[0-9.]+;desc="([^"]*)"', header))


# ------------------------------------------------------------------ the example pipeline


@pytest.fixture
async def example(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(Settings(access_log=False), example_config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


async def test_the_example_pipeline_changes_dtypes_between_stages(example: httpx.AsyncClient) -> None:
    # int64 -> float32 -> float64 -> string; celsius_model's `readings` (an output kelvin_model
    # does not take) is not sent on: the runtime refuses inputs its contract does not name.
    response = await example.post(PIPELINE, json={"fahrenheit": [-40, 32, 212]})
    assert response.status_code == 200, response.text
    assert response.json() == {"phase": ["ice", "water", "steam"]}
    assert response.headers["x-gateway-variants"] == "celsius_model:1, kelvin_model:1, phase_model:1"
    timing = response.headers["server-timing"]
    assert _timing_names(timing) == ["decode", "stage1", "stage2", "stage3", "encode"]
    assert _timing_descriptions(timing) == {"stage1": "celsius_model:1", "stage2": "kelvin_model:1",
                                            "stage3": "phase_model:1"}
    stages = {name: float(ms) for name, ms in re.findall(r"(\w+);dur=([0-9.]+)", timing)}
    assert all(ms > 0 for ms in stages.values())
    # Each stage model on its own answers the dtype the next stage takes.
    celsius = await example.post("/gateway/models/celsius_model", json={"fahrenheit": [-40, 32, 212]})
    assert celsius.json() == {"celsius": [-40.0, 0.0, 100.0], "readings": 3}
    kelvin = await example.post("/gateway/models/kelvin_model", json={"celsius": [-40.0, 0.0, 100.0]})
    assert kelvin.json() == {"kelvin": [-40.0 + 273.15, 273.15, 373.15]}
    text = (await example.get("/metrics")).text
    for stage, model in (("1", "celsius_model"), ("2", "kelvin_model"), ("3", "phase_model")):
        assert sample(text, "gateway_stage_duration_seconds_count", application="pipeline_app", stage=stage,
                      model=model, version="1") == 1


async def test_a_single_stage_application_and_the_model_routes_are_timed(example: httpx.AsyncClient) -> None:
    app = await example.post("/gateway/applications/increment_app", json={"number": [1]})
    assert _timing_names(app.headers["server-timing"]) == ["decode", "stage1", "encode"]
    model = await example.post("/gateway/models/increment_model", json={"number": [1]})
    assert _timing_names(model.headers["server-timing"]) == ["decode", "backend", "encode"]
    assert _timing_descriptions(model.headers["server-timing"]) == {"backend": "increment_model:1"}
    tf = await example.post("/v1/models/increment_model:predict", json={"instances": [1]})
    assert tf.json() == {"predictions": [2]}
    assert _timing_names(tf.headers["server-timing"]) == ["decode", "backend", "encode"]
    binary = await example.post("/gateway/applications/increment_app", content=np.array([1], "<i4").tobytes(),
                                headers={"content-type": "application/octet-stream", "x-tensor-dtype": "int32",
                                         "x-tensor-shape": "1"})
    assert binary.status_code == 200, binary.text
    assert _timing_names(binary.headers["server-timing"]) == ["decode", "stage1", "encode"]
    refused = await example.post("/gateway/applications/increment_app", json={"number": "x"})
    assert refused.status_code == 400
    assert "server-timing" not in refused.headers  # refused while decoding: nothing was timed


# ------------------------------------------------------------------ failing stages, outputs checked


@pytest.fixture
def runtime_float64(tmp_path: Path) -> Iterator[str]:
    """A real runtime whose own contract answers `y` as float64 (the gateway's manifests that
    point at it claim otherwise); its address."""
    folder = write_model(tmp_path / "remote", "float64", "float64_model", FLOAT64,
                         inputs="x: {shape: [-1], type: int64}", outputs="y: {shape: [-1], type: float64}")
    server = ModelServer.for_folder(folder, chdir=False)
    server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(0).wait()


def _write_stage_config(root: Path, remote: str) -> Path:
    write_model(root, "s1", "s1", S1, inputs="x: {shape: [-1], type: int64}",
                outputs="y: {shape: [-1], type: float32}\n    unused: {shape: scalar, type: int64}")
    write_model(root, "s2", "s2", S2, inputs="y: {shape: [-1], type: float32}",
                outputs="z: {shape: [-1], type: float64}")
    write_model(root, "s3", "s3", S3, inputs="z: {shape: [-1], type: float64}",
                outputs="w: {shape: [-1], type: string}")
    write_model(root, "identity", "identity", IDENTITY, inputs="x: {shape: [-1], type: int64}",
                outputs="x: {shape: [-1], type: int64}")
    backend = f"backend:\n  protocol: tensorflow-serving\n  target: {remote}\n  model_name: float64_model\n"
    (root / "models" / "claims_float32.yaml").write_text(
        f"kind: Model\nname: claims_float32\n{backend}contract:\n  inputs:\n    x: {{shape: [-1], type: int64}}\n"
        "  outputs:\n    y: {shape: [-1], type: float32}\n")
    (root / "models" / "claims_two.yaml").write_text(
        f"kind: Model\nname: claims_two\n{backend}contract:\n  inputs:\n    x: {{shape: [-1], type: int64}}\n"
        "  outputs:\n    y: {shape: [-1], type: float64}\n    extra: {shape: [-1], type: float64}\n")
    apps = root / "applications"
    apps.mkdir()
    pipeline = "pipeline:\n  - - model: s1:1\n  - - model: s2:1\n  - - model: s3:1\n"
    (apps / "three_stages.yaml").write_text(f"kind: Application\nname: three_stages\n{pipeline}")
    (apps / "three_stages_checked.yaml").write_text(
        f"kind: Application\nname: three_stages_checked\nvalidate_outputs: true\n{pipeline}")
    singular = (("dtype_checked", "claims_float32", "true"), ("dtype_unchecked", "claims_float32", "false"),
                ("missing_checked", "claims_two", "true"))
    for name, model, checked in singular:
        (apps / f"{name}.yaml").write_text(f"kind: Application\nname: {name}\nvalidate_outputs: {checked}\n"
                                           f"singular:\n  model: {model}:1\n")
    (apps / "claims_pipeline.yaml").write_text(
        "kind: Application\nname: claims_pipeline\nvalidate_outputs: true\n"
        "pipeline:\n  - - model: claims_float32:1\n  - - model: s2:1\n")
    (apps / "missing_last.yaml").write_text(
        "kind: Application\nname: missing_last\npipeline:\n  - - model: identity:1\n  - - model: claims_two:1\n")
    return root


@pytest.fixture
async def stages(tmp_path: Path, runtime_float64: str) -> AsyncIterator[httpx.AsyncClient]:
    root = _write_stage_config(tmp_path / "config", runtime_float64)
    with runtimes_for(load_config(root)) as config:
        async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            yield client


async def test_a_failing_stage_names_itself_with_the_error_it_wraps(stages: httpx.AsyncClient) -> None:
    ok = await stages.post(THREE_STAGES, json={"x": [2, 4]})
    assert ok.json() == {"w": ["3.00", "6.00"]}
    alone = await stages.post("/gateway/models/s2", json={"y": [-1.0]})  # the same model as a route of its own
    failed = await stages.post(THREE_STAGES, json={"x": [-2]})
    assert (alone.status_code, failed.status_code) == (500, 500)
    assert failed.json() == {"error": {"code": "model_error",
                                       "message": "stage 2 (s2:1): " + alone.json()["error"]["message"]}}
    assert "ValueError: no negative readings" in failed.json()["error"]["message"]
    assert failed.headers["x-gateway-variants"] == "s1:1, s2:1"  # stage 3 was never reached
    assert _timing_names(failed.headers["server-timing"]) == ["decode", "stage1", "stage2"]
    text = (await stages.get("/metrics")).text
    assert sample(text, "gateway_stage_duration_seconds_count", application="three_stages", stage="2",
                  model="s2", version="1") == 2  # the failed call is timed too
    assert sample(text, "gateway_stage_duration_seconds_count", application="three_stages", stage="3",
                  model="s3", version="1") == 1  # only the request that succeeded


async def test_the_deadline_covers_the_whole_pipeline(stages: httpx.AsyncClient) -> None:
    # s2 takes 1.5 s on 1000.0 (x = 2000): the 800 ms of the request run out in stage 2.
    response = await stages.post(THREE_STAGES, json={"x": [2000]}, headers={"x-request-timeout": "800"})
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert error["message"] == "stage 2 (s2:1): the backend of model s2 missed the deadline: deadline exceeded"
    assert response.headers["x-gateway-variants"] == "s1:1, s2:1"
    text = (await stages.get("/metrics")).text
    assert sample(text, "gateway_stage_duration_seconds_count", application="three_stages", stage="3") == 0


async def test_validate_outputs_refuses_an_answer_that_breaks_the_contract(stages: httpx.AsyncClient) -> None:
    # The runtime answers y as float64 by its own contract; the gateway's says float32.
    unchecked = await stages.post("/gateway/applications/dtype_unchecked", json={"x": [2]})
    assert unchecked.status_code == 200
    checked = await stages.post("/gateway/applications/dtype_checked", json={"x": [2]})
    assert checked.status_code == 502
    assert checked.json() == {"error": {
        "code": "output_contract_violation", "field": "y",
        "message": "model claims_float32:1 answered output 'y' as float64; its contract says float32"}}
    missing = await stages.post("/gateway/applications/missing_checked", json={"x": [2]})
    assert missing.status_code == 502
    assert missing.json() == {"error": {"code": "output_contract_violation", "field": "extra",
                                        "message": "model claims_two:1 answered without output 'extra'"}}
    piped = await stages.post("/gateway/applications/claims_pipeline", json={"x": [2]})
    assert piped.status_code == 502
    assert piped.json()["error"] == {
        "code": "output_contract_violation", "field": "y",
        "message": "stage 1 (claims_float32:1): model claims_float32:1 answered output 'y' as float64; "
                   "its contract says float32"}
    # Unchecked, an output of the application's contract missing from the last stage's answer
    # is still refused, naming that stage and its model one way (the variant, as answers name it).
    last = await stages.post("/gateway/applications/missing_last", json={"x": [2]})
    assert last.status_code == 502
    assert last.json()["error"] == {"code": "backend_error",
                                    "message": "stage 2 (claims_two:1): model claims_two:1 answered without "
                                               "output 'extra'"}
    # The embedded runtime's models keep their contracts: checked, they answer as before.
    assert (await stages.post("/gateway/applications/three_stages_checked", json={"x": [2]})).json() == {
        "w": ["3.00"]}
    text = (await stages.get("/metrics")).text
    assert sample(text, "gateway_output_contract_violations_total", model="claims_float32", version="1") == 2
    assert sample(text, "gateway_output_contract_violations_total", model="claims_two", version="1") == 1
    assert sample(text, "gateway_output_contract_violations_total", model="s1") == 0


# ------------------------------------------------------------------ the core, and the error tree


async def test_stages_pass_arrays_not_copies_and_only_what_the_next_model_takes() -> None:
    produced = {"number": np.array([5], np.int32), "debug": np.array(["x"], object)}
    first, second = InMemoryBackend(lambda inputs: produced), InMemoryBackend(lambda inputs: dict(inputs))
    app = _app(_model(first), _model(second))
    context = RequestContext.start("r", 5)
    outputs = await DataPlane(Registry({}, {"app": app})).predict(app, {"number": np.array([1], np.int32)},
                                                                  context)
    sent = second.calls[0].inputs
    assert list(sent) == ["number"]  # `debug` is no input of the second model
    assert sent["number"] is produced["number"]  # the very array: nothing re-encodes between stages
    assert outputs["number"] is produced["number"]
    assert [timing.name for timing in context.timings] == ["stage1", "stage2"]


def test_an_error_with_a_prefix_is_a_new_error_of_the_same_kind() -> None:
    original = DeadlineExceeded("the backend of model m:1 missed the deadline: late", field="x", log_detail="at a")
    prefixed = original.with_prefix("stage 2 (m:1): ")
    assert type(prefixed) is DeadlineExceeded
    assert prefixed is not original
    assert prefixed.message == str(prefixed) == "stage 2 (m:1): the backend of model m:1 missed the deadline: late"
    assert (prefixed.status, prefixed.code, prefixed.grpc_code) == (504, "deadline_exceeded",
                                                                    grpc.StatusCode.DEADLINE_EXCEEDED)
    assert (prefixed.field, prefixed.log_detail) == ("x", "at a")
    assert prefixed.to_dict() == {"error": {"code": "deadline_exceeded", "field": "x",
                                            "message": "stage 2 (m:1): the backend of model m:1 missed the "
                                                       "deadline: late"}}
    assert original.message == str(original) == "the backend of model m:1 missed the deadline: late"
    # A code kept on the instance (a gRPC status outside the table) is kept too.
    odd = from_grpc_status(grpc.StatusCode.OK, "odd", "backend:1")
    assert odd.with_prefix("stage 1 (m:1): ").grpc_code is grpc.StatusCode.OK
    for error in (NotFound("gone"), ModelError("ValueError: x"), OutputContractViolation("bad", field="y")):
        again = error.with_prefix("p: ")
        assert type(again) is type(error)
        assert again.message == "p: " + error.message
    assert issubclass(OutputContractViolation, BackendError)
    assert OutputContractViolation.status == 502
