"""Reloading a running `gateway serve` with broken model code or manifests: the reload is refused
with file:line and the old config keeps serving; a model that calls sys.exit is restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs import lookup_dtype
from tensorcodecs.tensor_proto import encode_tensor
from tests.conftest import REPO, write_app, write_model
from tests.e2e.processes import alive, command_line, descendants, running_gateway

GOOD = "def predict(x):\n    return x + 1\n"
QUITTER = "import sys\n\ndef predict(x):\n    if x[0] == 0:\n        sys.exit(3)\n    return x + 1\n"
ASYNC_QUITTER = "import sys\n\nasync def predict(x):\n    if x[0] == 0:\n        sys.exit(4)\n    return x + 1\n"
THREAD_QUITTER = ("import sys, threading\n\nserving = threading.Event()\n\n"
                  "def _quit_once_serving():\n    serving.wait()\n    sys.exit()  # ends this thread only\n\n"
                  "thread = threading.Thread(target=_quit_once_serving, daemon=True)\nthread.start()\n\n"
                  "def predict(x):\n    serving.set()\n    return x + int(not thread.is_alive())\n")
START_TIMEOUT_S = 3
GATEWAY_YAML = ("kind: Gateway\ndefaults: {runtime_start_timeout_s: %s, drain_timeout_s: 0.5, "
                "shutdown_grace_s: 0.2, health_interval_s: 0.5}\nlogging: {access_log: false}\n")

Gateway = tuple[subprocess.Popen[bytes], str, Path, Path]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config")
    (config / "gateway.yaml").write_text(GATEWAY_YAML % START_TIMEOUT_S)
    write_model(config, "counter", "counter", GOOD)
    write_model(config, "quitter", "quitter", QUITTER)
    write_app(config, "app", "counter")
    write_app(config, "quitter_app", "quitter")
    write_model(config, "pool_quitter", "pool_quitter", QUITTER, extra="workers: 2")
    write_model(config, "async_quitter", "async_quitter", ASYNC_QUITTER)
    write_model(config, "thread_quitter", "thread_quitter", THREAD_QUITTER)
    write_app(config, "async_quitter_app", "async_quitter")
    write_app(config, "thread_quitter_app", "thread_quitter")
    write_app(config, "pool_quitter_app", "pool_quitter")
    write_model(config, "broken", "broken", "def predict(x):\n    return (\n")  # broken from the start
    log = tmp_path_factory.mktemp("log") / "gateway.log"
    with running_gateway(config, ready_path="/health/live", log=log) as (process, url):
        yield process, url, config, log


def predict(url: str, app: str = "app", x: int = 1) -> httpx.Response:
    return httpx.post(f"{url}/gateway/applications/{app}", json={"x": [x]}, timeout=10)


def reload(url: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/reload", timeout=30)


def runtimes_of(process: subprocess.Popen[bytes], model: str) -> list[int]:
    return [pid for pid in descendants(process.pid)
            if "runtime serve" in command_line(pid) and f"/models/{model} " in command_line(pid)]


@pytest.mark.parametrize(("source", "line", "complaint"), [
    ("def predict(x):\n    return (\n", 2, "syntax error"),
    ("import numpy\nimport no_such_module_anywhere\n\ndef predict(x):\n    return x\n", 2,
     "No module named 'no_such_module_anywhere'"),
], ids=["syntax-error", "import-error"])
def test_a_broken_model_is_refused_and_the_old_one_keeps_serving(
        gateway: Gateway, source: str, line: int, complaint: str) -> None:
    process, url, config, _ = gateway
    code = config / "models" / "counter" / "src" / "func_main.py"
    running = runtimes_of(process, "counter")
    code.write_text(source)
    try:
        answer = reload(url)
        assert answer.status_code == 422
        assert answer.json()["applied"] is False
        assert f"{code}:{line}" in answer.json()["error"]
        assert complaint in answer.json()["error"]
        response = predict(url)
        assert response.status_code == 200
        assert response.json() == {"y": [2]}
        assert runtimes_of(process, "counter") == running  # the new runtime was stopped, the old kept
    finally:
        code.write_text(GOOD)


def test_an_empty_application_file_is_refused(gateway: Gateway) -> None:
    _, url, config, _ = gateway
    manifest = config / "applications" / "app.yaml"
    original = manifest.read_text()
    manifest.write_text("")
    try:
        answer = reload(url)
        assert answer.status_code == 422
        assert f"{manifest}:1" in answer.json()["error"]
        assert predict(url).json() == {"y": [2]}
    finally:
        manifest.write_text(original)


def test_a_model_hanging_on_import_is_given_up_at_the_timeout(gateway: Gateway) -> None:
    process, url, config, _ = gateway
    code = config / "models" / "counter" / "src" / "func_main.py"
    code.write_text("import time\ntime.sleep(120)\n\ndef predict(x):\n    return x\n")
    answers: list[httpx.Response] = []
    try:
        started = time.monotonic()
        reloading = threading.Thread(target=lambda: answers.append(reload(url)))
        reloading.start()
        deadline = time.monotonic() + 10
        while len(runtimes_of(process, "counter")) < 2:  # the reload is importing the new code
            assert time.monotonic() < deadline, "the reload did not start the new runtime"
            time.sleep(0.05)
        during = time.monotonic()
        assert predict(url).json() == {"y": [2]}  # requests do not wait for the reload
        assert time.monotonic() - during < 2
        reloading.join(30)
        took = time.monotonic() - started
        assert answers[0].status_code == 422
        assert f"within {START_TIMEOUT_S}s" in answers[0].json()["error"]
        assert took < START_TIMEOUT_S + 5
        assert len(runtimes_of(process, "counter")) == 1  # the hung one was killed
        assert predict(url).json() == {"y": [2]}
    finally:
        code.write_text(GOOD)


def test_a_reload_adding_a_model_starts_its_runtime_first(gateway: Gateway) -> None:
    _, url, config, _ = gateway
    write_model(config, "added", "added", "def predict(x):\n    return x * 10\n")
    write_app(config, "added_app", "added")
    answer = reload(url)
    assert answer.status_code == 200, answer.text
    assert "added_app" in answer.json()["applications"]
    # A model that failed at start and is unchanged is tried again; failing again, it stays
    # unavailable and does not block the reload.
    assert "func_main.py:2" in answer.json()["failed"]["broken:1"]
    assert predict(url, "added_app").json() == {"y": [10]}
    assert predict(url).json() == {"y": [2]}


def test_a_model_calling_sys_exit_is_logged_and_restarted(gateway: Gateway) -> None:
    process, url, _, log = gateway
    before = runtimes_of(process, "quitter")
    response = predict(url, "quitter_app", x=0)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert response.headers["retry-after"]
    deadline = time.monotonic() + 15
    while predict(url, "quitter_app").status_code != 200:
        assert time.monotonic() < deadline, "the runtime was not restarted"
        time.sleep(0.2)
    assert predict(url, "quitter_app").json() == {"y": [2]}
    assert runtimes_of(process, "quitter") != before
    text = log.read_text()
    assert "the model called sys.exit(3) in /" in text  # the method it was called for
    assert f"runtime (pid {before[0]}) exited with code 3" in text


def _restarted(process: subprocess.Popen[bytes], url: str, app: str, model: str, before: list[int]) -> None:
    deadline = time.monotonic() + 20
    while predict(url, app).status_code != 200 or runtimes_of(process, model) in ([], before):
        assert time.monotonic() < deadline, "the runtime was not restarted"
        time.sleep(0.2)


def test_a_model_with_workers_exiting_or_killed_is_restarted_without_leaving_its_workers(
        gateway: Gateway) -> None:
    process, url, _, log = gateway
    before = runtimes_of(process, "pool_quitter")
    pool = descendants(before[0])
    assert len([pid for pid in pool if "multiprocessing" in command_line(pid)]) >= 2
    assert predict(url, "pool_quitter_app", x=0).status_code == 503  # sys.exit in a worker process
    _restarted(process, url, "pool_quitter_app", "pool_quitter", before)
    assert not [pid for pid in pool if alive(pid)]
    assert "the model called sys.exit(3)" in log.read_text()
    # SIGKILLed, the runtime cannot stop its workers: they die with it all the same.
    killed = runtimes_of(process, "pool_quitter")
    pool = descendants(killed[0])
    os.kill(killed[0], signal.SIGKILL)
    _restarted(process, url, "pool_quitter_app", "pool_quitter", killed)
    deadline = time.monotonic() + 5
    while [pid for pid in pool if alive(pid)]:
        assert time.monotonic() < deadline, "the killed runtime's workers are still running"
        time.sleep(0.05)
    assert predict(url, "pool_quitter_app").json() == {"y": [2]}


def test_an_async_model_calling_sys_exit_ends_its_runtime(gateway: Gateway) -> None:
    process, url, _, log = gateway
    before = runtimes_of(process, "async_quitter")
    started = time.monotonic()
    assert predict(url, "async_quitter_app", x=0).status_code == 503
    assert time.monotonic() - started < 5  # at once, not at the deadline
    _restarted(process, url, "async_quitter_app", "async_quitter", before)
    assert f"runtime (pid {before[0]}) exited with code 4" in log.read_text()


def test_sys_exit_in_a_thread_the_model_started_ends_only_that_thread(gateway: Gateway) -> None:
    process, url, _, log = gateway
    before = runtimes_of(process, "thread_quitter")
    deadline = time.monotonic() + 10
    while predict(url, "thread_quitter_app").json() != {"y": [2]}:  # the thread has exited
        assert time.monotonic() < deadline, "the model's thread did not run"
        time.sleep(0.05)
    time.sleep(0.2)  # the one timing assumption: had it ended the runtime, it would be down by now
    assert predict(url, "thread_quitter_app").json() == {"y": [2]}
    assert runtimes_of(process, "thread_quitter") == before
    assert f"(pid {before[0]}) exited" not in log.read_text()


def test_a_model_calling_sys_exit_over_grpc_ends_the_runtime_at_once(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "quitter", "quitter", QUITTER)
    runtime = subprocess.Popen([sys.executable, "-m", "runtime", "serve", str(folder), "--port", "0"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert runtime.stdout is not None
        listening = runtime.stdout.readline()
        assert '"listening"' in listening
        port = json.loads(listening)["port"]  # the port it bound, as the supervisor learns it
        request = PredictRequest()
        request.model_spec.name = "quitter"
        request.inputs["x"].CopyFrom(encode_tensor(np.array([0], np.int32), lookup_dtype("int32")))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                                       response_deserializer=PredictResponse.FromString)
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED: no hang
        assert runtime.wait(timeout=5) == 3
        assert runtime.stderr is not None
        assert "the model called sys.exit(3) in /tensorflow.serving.PredictionService/Predict" in runtime.stderr.read()
    finally:
        runtime.kill()
        runtime.wait()


def test_shutdown_does_not_wait_for_a_reload_stuck_on_a_hanging_model(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(GATEWAY_YAML % 60)
    write_model(config, "counter", "counter", GOOD)
    write_app(config, "app", "counter")
    with running_gateway(config) as (process, url):
        write_model(config, "hangs", "hangs", "import time\ntime.sleep(120)\n\ndef predict(x):\n    return x\n")
        answers: list[httpx.Response] = []
        reloading = threading.Thread(target=lambda: answers.append(reload(url)))
        reloading.start()
        deadline = time.monotonic() + 10
        while not runtimes_of(process, "hangs"):
            assert time.monotonic() < deadline, "the reload did not start the new runtime"
            time.sleep(0.05)
        tree = descendants(process.pid)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 5  # not the 60 s start timeout
        reloading.join(10)
        assert [answer.status_code for answer in answers] == [503]
        assert not [pid for pid in tree if alive(pid)]
