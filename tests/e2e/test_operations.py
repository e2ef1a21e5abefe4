"""`gateway serve` operations: drain on SIGTERM, reload on SIGHUP, readiness from the watcher."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import write_app, write_model
from tests.e2e.processes import command_line, descendants, running_gateway
from tests.waiting import in_flight_now, wait_until

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"


def make_config(root: Path) -> Path:
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "slow", "slow")
    (root / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {shutdown_grace_s: 1.5, drain_timeout_s: 10, health_interval_s: 0.2}\n"
        "logging: {access_log: false}\n")
    return root


def test_a_request_in_flight_at_sigterm_gets_its_answer(tmp_path: Path) -> None:
    with running_gateway(make_config(tmp_path / "config")) as (process, url):
        answers: list[httpx.Response] = []
        caller = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/gateway/applications/slow", json={"x": [2500]}, timeout=20)))
        caller.start()
        wait_until(lambda: in_flight_now(url) == 1, what="the request in flight")
        os.kill(process.pid, signal.SIGTERM)
        # Within the grace period (1.5 s) ready turns 503 and new connections are still accepted.
        # The answer that ends the wait is the one checked: a second GET could come after the grace period.
        readies: list[httpx.Response] = []

        def ready_turned() -> bool:
            readies.append(httpx.get(f"{url}/health/ready", timeout=5))
            return readies[-1].status_code != 200

        wait_until(ready_turned, timeout=1.5, what="ready turning 503 at SIGTERM")
        ready = readies[-1]
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"
        caller.join(timeout=20)
        assert answers[0].status_code == 200
        assert answers[0].json() == {"y": [2500]}
        assert process.wait(timeout=20) == 0
        try:
            httpx.get(f"{url}/health/live", timeout=1)
            raise AssertionError("the gateway still accepts connections after stopping")
        except httpx.TransportError:
            pass


def test_sighup_reloads_and_starts_new_runtimes(tmp_path: Path) -> None:
    root = make_config(tmp_path / "config")
    log = tmp_path / "gateway.log"
    with running_gateway(root, log=log) as (process, url):
        write_model(root, "double", "double", "def predict(x):\n    return x * 2\n")
        write_app(root, "double", "double")
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.2)
            answer = httpx.post(f"{url}/gateway/applications/double", json={"x": [4]}, timeout=5)
            status = answer.status_code
        assert status == 200
        assert httpx.post(f"{url}/gateway/applications/double", json={"x": [4]}, timeout=5).json() == {"y": [8]}
        # A broken config is refused; everything keeps serving.
        (root / "applications" / "double.yaml").write_text("kind: Application\nname: [\n")
        os.kill(process.pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(), what="the broken config refused")
        assert httpx.post(f"{url}/gateway/applications/double", json={"x": [4]}, timeout=5).status_code == 200


def test_readiness_follows_a_dead_runtime(tmp_path: Path) -> None:
    with running_gateway(make_config(tmp_path / "config")) as (process, url):
        runtime = next(pid for pid in descendants(process.pid) if "runtime" in command_line(pid))
        os.kill(runtime, signal.SIGSTOP)  # hung, not dead: only health checks can tell
        try:
            deadline = time.monotonic() + 10
            status = 200
            while time.monotonic() < deadline and status == 200:
                time.sleep(0.2)
                status = httpx.get(f"{url}/health/ready", timeout=5).status_code
            assert status == 503
        finally:
            os.kill(runtime, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.2)
            status = httpx.get(f"{url}/health/ready", timeout=5).status_code
        assert status == 200


def test_watch_reloads_when_a_file_changes(tmp_path: Path) -> None:
    root = make_config(tmp_path / "config")
    with running_gateway(root, "--watch") as (_, url):
        write_app(root, "slow_alias", "slow")
        deadline = time.monotonic() + 20
        status = 404
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.2)
            status = httpx.post(f"{url}/gateway/applications/slow_alias", json={"x": [1]}, timeout=5).status_code
        assert status == 200
