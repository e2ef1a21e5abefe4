"""`gateway serve` warms every model with its warmup file before it takes traffic: local models
in their runtime (at start, at reload, after a restart, once with --workers), remote models
through their backend; a failed warmup makes the model unavailable at start and refuses a reload."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfolder import read_warmup
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from tests.conftest import write_app, write_model
from tests.e2e.processes import GATEWAY, command_line, descendants, running_gateway
from tests.tfserving_server import FakeTFServing
from tests.waiting import wait_until
from tests.warmup_files import int_logs, predict_log, write_warmup

# Appends the time and input of each call to `<config>/<model>.calls` (outside the model folder,
# whose files tell a reload that it changed); sleeps `delay` s first.
COUNTING = ("import time\nfrom pathlib import Path\n"
            "HERE = Path(__file__).resolve().parent.parent\nCALLS = HERE.parent.parent / f'{{HERE.name}}.calls'\n\n"
            "def predict(x):\n    time.sleep({delay})\n"
            "    with CALLS.open('a') as file:\n        file.write(f'{{time.time()}} {{int(x[0])}}\\n')\n"
            "    if int(x[0]) == 99:\n        raise ValueError('99 is not a number I take')\n"
            "    return x\n")
GATEWAY_YAML = ("kind: Gateway\ndefaults: {runtime_start_timeout_s: 20, drain_timeout_s: 0.2, "
                "shutdown_grace_s: 0.2, health_interval_s: 0.3}\nlogging: {access_log: false}\n")


def counting_model(config: Path, name: str, values: tuple[int, ...], delay: float = 0.0) -> Path:
    folder = write_model(config, name, name, COUNTING.format(delay=delay), extra="warmup: warmup.tfrecord")
    write_warmup(folder / "warmup.tfrecord", int_logs(*values, model=name))
    write_app(config, f"{name}_app", name)
    return folder


def calls(folder: Path) -> list[tuple[float, int]]:
    path = folder.parent.parent / f"{folder.name}.calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(float(when), int(value)) for when, value in (line.split() for line in lines)]


def inputs(folder: Path) -> list[int]:
    return [value for _, value in calls(folder)]


def predict(url: str, app: str, x: int = 1) -> httpx.Response:
    return httpx.post(f"{url}/gateway/applications/{app}", json={"x": [x]}, timeout=10)


@contextmanager
def tf_serving() -> Iterator[FakeTFServing]:
    """The TF-Serving-protocol test server on its own event loop in a thread (the gateway under
    test is another process)."""
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


def predictions(server: FakeTFServing) -> list[PredictRequest]:
    return [request for method, request in list(server.calls) if method == "Predict"
            and isinstance(request, PredictRequest)]


Gateway = tuple[subprocess.Popen[bytes], str, Path, FakeTFServing]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config")
    (config / "gateway.yaml").write_text(GATEWAY_YAML)
    counting_model(config, "counter", (1, 2, 3))
    counting_model(config, "failing", (1, 99, 3))
    with tf_serving() as tfs:
        # As TF's docs make one: PredictLogs of a PredictRequest with tensors from numpy arrays.
        write_warmup(config / "models" / "warmup" / "toy.tfrecord",
                     [predict_log({"input_1": np.array([[i, i]], dtype=np.float32)}, "Toy") for i in range(4)])
        (config / "models" / "toy.yaml").write_text(
            "kind: Model\nname: toy\nwarmup: warmup/toy.tfrecord\n"
            f"backend: {{protocol: tensorflow-serving, target: '{tfs.target}', model_name: Toy, version: 1}}\n")
        write_warmup(config / "models" / "errors.tfrecord",
                     [predict_log({"code": np.array(code, dtype=np.int32)}, "Errors") for code in (0, 3)])
        (config / "models" / "errors.yaml").write_text(
            "kind: Model\nname: errors\nwarmup: errors.tfrecord\n"
            f"backend: {{protocol: tensorflow-serving, target: '{tfs.target}', model_name: Errors, version: 1}}\n")
        write_app(config, "toy_app", "toy")
        write_app(config, "errors_app", "errors")
        with running_gateway(config, ready_path="/health/live") as (process, url):
            yield process, url, config, tfs


def test_local_and_remote_models_are_warmed_before_the_first_request(gateway: Gateway) -> None:
    _, url, config, tfs = gateway
    counter = config / "models" / "counter"
    assert inputs(counter)[:3] == [1, 2, 3]  # the warmup, before any request
    warmed = predictions(tfs)
    toy = [r for r in warmed if r.model_spec.name == "Toy"]
    assert [r.model_spec.version.value for r in toy] == [1, 1, 1, 1]  # the manifest's version
    assert [float(np.frombuffer(r.inputs["input_1"].tensor_content, np.float32)[0]) for r in toy] == [0, 1, 2, 3]
    assert predict(url, "counter_app", 7).json() == {"y": [7]}
    assert inputs(counter)[-1] == 7


def test_a_failed_warmup_makes_the_model_unavailable_naming_the_record(gateway: Gateway) -> None:
    _, url, config, _ = gateway
    assert inputs(config / "models" / "failing") == [1, 99]  # stopped at the failing record
    ready = httpx.get(f"{url}/health/ready", timeout=10)
    assert ready.status_code == 503
    detail = ready.json()["applications"]
    assert detail["counter_app"]["ready"] is True
    assert "its warmup failed at record 2" in detail["failing_app"]["models"]["failing:1"]["error"]
    assert "its warmup failed at record 2" in detail["errors_app"]["models"]["errors:1"]["error"]
    for app in ("failing_app", "errors_app"):
        response = predict(url, app)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "backend_unavailable"
        assert "warmup failed at record 2" in response.json()["error"]["message"]


def test_a_reload_with_a_failing_warmup_is_refused_and_the_old_version_serves(gateway: Gateway) -> None:
    _, url, config, _ = gateway
    counter = config / "models" / "counter"
    good = (counter / "warmup.tfrecord").read_bytes()
    write_warmup(counter / "warmup.tfrecord", int_logs(5, 99, model="counter"))
    try:
        answer = httpx.post(f"{url}/admin/reload", timeout=60)
        assert answer.status_code == 422
        assert f"warmup failed at record 2 of {(counter / 'warmup.tfrecord').resolve()}" in answer.json()["error"]
        assert predict(url, "counter_app", 8).json() == {"y": [8]}
    finally:
        (counter / "warmup.tfrecord").write_bytes(good)
    toy = len([r for r in predictions(gateway[3]) if r.model_spec.name == "Toy"])
    write_warmup(counter / "warmup.tfrecord", int_logs(4, 4, model="counter"))  # changed: warmed anew
    answer = httpx.post(f"{url}/admin/reload", timeout=60)
    assert answer.status_code == 200, answer.text
    assert inputs(counter)[-2:] == [4, 4]
    assert len([r for r in predictions(gateway[3]) if r.model_spec.name == "Toy"]) == toy  # unchanged: not again
    # Models whose warmup failed before are tried again; failing again, they stay unavailable.
    assert "warmup failed at record 2" in answer.json()["failed"]["errors:1"]
    assert "warmup failed at record 2" in answer.json()["failed"]["failing:1"]


def test_a_restarted_runtime_warms_again_before_it_serves(gateway: Gateway) -> None:
    process, url, config, _ = gateway
    counter = config / "models" / "counter"
    expected = [int(np.frombuffer(record.log.predict_log.request.inputs["x"].tensor_content, np.int32)[0])
                for record in read_warmup(counter / "warmup.tfrecord")]
    def runtimes() -> list[int]:
        return [pid for pid in descendants(process.pid)
                if "runtime serve" in command_line(pid) and "/models/counter " in command_line(pid)]

    wait_until(lambda: len(runtimes()) == 1, what="a reload's replaced runtime is retired")
    runtime = runtimes()[0]
    before = len(calls(counter))
    os.kill(runtime, signal.SIGKILL)
    wait_until(lambda: inputs(counter)[before:] == expected, timeout=30, what="the restarted runtime warms up")
    deadline = time.monotonic() + 30
    while (answer := predict(url, "counter_app", 9)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    assert inputs(counter)[before:] == [*expected, 9]


def test_with_workers_a_local_model_is_warmed_once(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY_YAML)
    counter = counting_model(tmp_path, "counter", (1, 2, 3))
    with running_gateway(tmp_path, "--workers", "2") as (_, url):
        assert inputs(counter) == [1, 2, 3]
        assert predict(url, "counter_app", 5).json() == {"y": [5]}
        assert inputs(counter) == [1, 2, 3, 5]


def test_the_gateway_serves_only_once_the_warmup_is_over(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY_YAML)
    slow = counting_model(tmp_path, "slow", (1, 2, 3), delay=0.4)
    log = tmp_path / "gateway.log"
    with running_gateway(tmp_path, log=log) as (_, url):
        text = log.read_text()
        # The runtime's line (forwarded by the supervisor) comes before the gateway listens.
        assert text.index("warmed model slow:1 with 3 records in") < text.index("INFO gateway: serving http://")
        assert inputs(slow) == [1, 2, 3]
        assert httpx.get(f"{url}/health/ready", timeout=10).status_code == 200


def test_gateway_check_reads_every_warmup_file(tmp_path: Path) -> None:
    counting_model(tmp_path, "counter", (1, 2, 3))
    bad = counting_model(tmp_path, "bad", (1,))
    (bad / "warmup.tfrecord").write_bytes((bad / "warmup.tfrecord").read_bytes()[:-1])
    result = subprocess.run([str(GATEWAY), "check", "--config", str(tmp_path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    counter = (tmp_path / "models" / "counter" / "warmup.tfrecord").resolve()
    assert f"model counter:1 warmup {counter}: 3 records (3 predict_log)" in result.stdout
    assert (f"gateway check: model bad:1: warmup failed at record 1 of {(bad / 'warmup.tfrecord').resolve()}: "
            "at byte 0: is truncated") in result.stderr
    assert inputs(tmp_path / "models" / "counter") == []  # read, not replayed
