"""`gateway serve` with several models: versions side by side, a model that fails to load,
a model that raises, and a runtime killed in the middle of traffic."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_app, write_model
from tests.e2e.processes import command_line, descendants, local_socket_of, running_gateway
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    config = tmp_path_factory.mktemp("config")
    write_model(config, "counter/1", "counter", "def predict(x):\n    return x + 1\n")
    write_model(config, "counter/2", "counter", "def predict(x):\n    return x + 2\n")
    write_model(config, "faulty", "faulty", "def predict(x):\n    raise ValueError('weights are missing')\n")
    write_model(config, "broken", "broken", "def predict(x):\n    return (\n")
    for app, model in (("v1", "counter:1"), ("v2", "counter:2"), ("latest", "counter"),
                       ("faulty_app", "faulty:1"), ("broken_app", "broken:1")):
        write_app(config, app, model)
    with running_gateway(config, ready_path="/health/live") as running:
        yield running


def predict(url: str, app: str, timeout: float = 10) -> httpx.Response:
    return httpx.post(f"{url}/gateway/applications/{app}", json={"x": [1, 2]}, timeout=timeout)


def test_versions_side_by_side(gateway: tuple[subprocess.Popen[bytes], str]) -> None:
    _, url = gateway
    assert predict(url, "v1").json() == {"y": [2, 3]}
    assert predict(url, "v2").json() == {"y": [3, 4]}
    assert predict(url, "latest").json() == {"y": [3, 4]}


def test_a_model_that_fails_to_load_leaves_the_others_serving(
        gateway: tuple[subprocess.Popen[bytes], str]) -> None:
    _, url = gateway
    ready = httpx.get(f"{url}/health/ready", timeout=10)
    assert ready.status_code == 503
    detail = ready.json()["applications"]
    assert detail["broken_app"]["ready"] is False
    assert detail["v1"]["ready"] is True
    response = predict(url, "broken_app")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "backend_unavailable"
    assert "model broken:1 is unavailable" in error["message"]
    assert "func_main.py:2" in error["message"]


def test_an_exception_in_the_model_is_a_500_model_error(gateway: tuple[subprocess.Popen[bytes], str]) -> None:
    _, url = gateway
    response = predict(url, "faulty_app")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "model_error", "message": "ValueError: weights are missing"}}


def test_a_killed_runtime_comes_back(gateway: tuple[subprocess.Popen[bytes], str]) -> None:
    process, url = gateway
    runtime = next(pid for pid in descendants(process.pid) if "counter/1" in command_line(pid))
    local_socket = local_socket_of(runtime)
    assert Path(local_socket).is_socket()
    statuses: Counter[int | str] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    statuses[client.post(f"{url}/gateway/applications/v1", json={"x": [1]}).status_code] += 1
                except httpx.TimeoutException:
                    statuses["timeout"] += 1

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: statuses[200] >= 20, what="traffic before the kill")
    os.kill(runtime, signal.SIGKILL)
    deadline = time.monotonic() + 20
    restarted = False
    while time.monotonic() < deadline and not restarted:
        time.sleep(0.2)
        fresh = [pid for pid in descendants(process.pid) if "counter/1" in command_line(pid)]
        restarted = bool(fresh) and fresh != [runtime] and predict(url, "v1").status_code == 200
    if restarted:  # the clients' traffic reaches the new runtime too
        served = statuses[200]
        wait_until(lambda: statuses[200] >= served + 20, what="traffic after the restart")
    stop.set()
    for thread in threads:
        thread.join()
    print(f"\nruntime killed under load (4 clients): {dict(statuses)}")
    assert restarted, f"runtime did not come back; statuses {dict(statuses)}"
    assert local_socket_of(fresh[0]) == local_socket  # the gateway's bindings stay valid
    assert set(statuses) <= {200, 502, 503}, dict(statuses)
    assert statuses[200] > 0
    assert predict(url, "v1").json() == {"y": [2, 3]}


def _kubelet_update(volume: Path, edit: str) -> None:
    """What the kubelet does to a ConfigMap volume on an update: the files written to a new
    `..<timestamp>` directory, `..data` switched to it in one rename, the old directory deleted."""
    old = volume / os.readlink(volume / "..data")
    new = volume / f"..{time.time_ns()}"
    shutil.copytree(old, new, symlinks=True)
    model = new / "models" / "counter" / "src" / "func_main.py"
    model.write_text(model.read_text().replace("x + 1", edit))
    os.symlink(new.name, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / "..data")
    shutil.rmtree(old)


def test_a_runtime_restarted_after_a_configmap_update_finds_its_folder(tmp_path: Path) -> None:
    """A ConfigMap volume is symlinks into a directory the kubelet replaces at each update; a
    model folder known by its resolved path would be gone, and a runtime that crashed after the
    update could never come back."""
    source = tmp_path / "source"
    write_model(source, "counter", "counter", "def predict(x):\n    return x + 1\n")
    write_app(source, "inc", "counter")
    volume = tmp_path / "volume"
    volume.mkdir()
    shutil.copytree(source, volume / "..2026_12_01")
    os.symlink("..2026_12_01", volume / "..data")
    for entry in ("models", "applications"):
        os.symlink(f"..data/{entry}", volume / entry)
    with running_gateway(volume) as (process, url):
        assert predict(url, "inc").json() == {"y": [2, 3]}
        _kubelet_update(volume, "x + 10")
        runtime = next(pid for pid in descendants(process.pid) if "runtime" in command_line(pid))
        os.kill(runtime, signal.SIGKILL)
        wait_until(lambda: predict(url, "inc").status_code == 200, timeout=30,
                   what="the runtime back after the update")
        assert predict(url, "inc").json() == {"y": [11, 12]}  # restarted on the current files
