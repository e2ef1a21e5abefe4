"""`gateway serve --workers N`: N processes share the port; SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, write_app, write_model
from tests.e2e.processes import alive, command_line, descendants, running_gateway, served_port, spawn_gateway, wait_for
from tests.waiting import wait_until

CONFIG_DIR = REPO / "config"


def test_two_workers_share_the_port_and_stop_together() -> None:
    with running_gateway(CONFIG_DIR, "--workers", "2") as (process, url):
        tree = descendants(process.pid)
        workers = [pid for pid in tree if "spawn_main" in command_line(pid)]
        assert len(workers) == 2
        answers = _per_worker(url, "increment_app", {"number": [1]})
        assert [answer for each in answers.values() for answer in each] == [{"number": [2]}] * _asked(answers)
        metrics = httpx.get(f"{url}/metrics").text  # summed over the workers
        total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("gateway_requests_total{") and 'status="200"' in line
                    and "increment_app" in line)
        assert total == _asked(answers)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        while any(alive(pid) for pid in tree) and time.monotonic() - started < 15:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in tree)


def _per_worker(url: str, app: str, body: object = None, workers: int = 2, each: int = 5,
                limit_s: float = 20) -> dict[str, list[object]]:
    """The answers of each worker, asking on a new connection each time (the kernel picks the
    worker) until every one has answered `each` times. A worker is told by the request ids it
    makes (`x-request-id`: 24 hex digits of its own, then a counter)."""
    answers: dict[str, list[object]] = {}
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        response = httpx.post(f"{url}/gateway/applications/{app}", json=body or {"x": [1]}, timeout=10)
        answers.setdefault(response.headers["x-request-id"][:24], []).append(response.json())
        if len(answers) == workers and all(len(got) >= each for got in answers.values()):
            return answers
    raise AssertionError(f"in {limit_s:g}s, {len(answers)} of {workers} workers answered")


def _asked(answers: dict[str, list[object]]) -> int:
    return sum(len(got) for got in answers.values())


def _answers(url: str, app: str) -> list[object]:
    """What every worker answers, once each worker has answered a few times."""
    distinct: list[object] = []
    for got in _per_worker(url, app).values():
        distinct.extend(answer for answer in got if answer not in distinct)
    return distinct


def test_a_reload_reaches_every_worker_and_can_add_local_models(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {runtime_start_timeout_s: 5, drain_timeout_s: 0.5, shutdown_grace_s: 0.2}\n"
        "logging: {access_log: false}\n")
    write_model(config, "first", "first", "def predict(x):\n    return x + 1\n")
    write_app(config, "app", "first")
    log = tmp_path / "gateway.log"
    with running_gateway(config, "--workers", "2", "--watch", log=log) as (process, url):
        assert _answers(url, "app") == [{"y": [2]}]
        # POST /admin/reload reaches one worker; the parent starts the new runtime and every
        # worker swaps before the answer (the watcher's own reload of these files changes nothing).
        write_model(config, "second", "second", "def predict(x):\n    return x + 100\n")
        write_app(config, "app", "second")
        write_app(config, "second_app", "second")
        answer = httpx.post(f"{url}/admin/reload", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["applications"] == ["app", "second_app"]
        assert answer.json()["failed"] == {}
        assert _answers(url, "app") == [{"y": [101]}]
        assert _answers(url, "second_app") == [{"y": [101]}]
        # A broken model is refused for all of them.
        code = config / "models" / "first" / "src" / "func_main.py"
        code.write_text("def predict(x):\n    return (\n")
        write_app(config, "app", "first")
        answer = httpx.post(f"{url}/admin/reload", timeout=30)
        assert answer.status_code == 422
        assert f"{code}:2" in answer.json()["error"]
        assert _answers(url, "app") == [{"y": [101]}]
        # --watch (in the parent) reloads every worker once the code is fixed.
        code.write_text("def predict(x):\n    return x + 1\n")
        deadline = time.monotonic() + 20  # no answer to wait for: poll until every worker serves it
        while _answers(url, "app") != [{"y": [2]}]:
            assert time.monotonic() < deadline, "--watch did not reload every worker"
            time.sleep(0.2)
        # So does SIGHUP to the gateway.
        reloaded = log.read_text().count("reloaded 2 workers")
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while log.read_text().count("reloaded 2 workers") == reloaded:
            assert time.monotonic() < deadline, "SIGHUP did not reload the workers"
            time.sleep(0.1)


def _two_workers_config(tmp_path: Path, code: str = "def predict(x):\n    return x + 1\n") -> Path:
    config = tmp_path / "config"
    (config / "applications").mkdir(parents=True)
    (config / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {runtime_start_timeout_s: 10, drain_timeout_s: 0.5, shutdown_grace_s: 0.2}\n"
        "logging: {access_log: false}\n")
    write_model(config, "first", "first", code)
    write_app(config, "app", "first")
    return config


def test_with_workers_every_failed_reload_is_answered_and_a_lost_worker_is_not_waited_for(tmp_path: Path) -> None:
    config = _two_workers_config(tmp_path)
    with running_gateway(config, "--workers", "2") as (process, url):
        bad = config / "applications" / "bad.yaml"
        bad.write_bytes(b"kind: Application\nname: \xff\n")
        answer = httpx.post(f"{url}/admin/reload", timeout=30)
        assert answer.status_code == 422
        assert answer.json()["error"].startswith(f"{bad}:2: not UTF-8 text")
        bad.write_text("kind: Application\nname: " + "[" * 5000 + "]" * 5000 + "\n")
        answer = httpx.post(f"{url}/admin/reload", timeout=30)
        assert answer.status_code == 422
        assert answer.json()["error"] == f"{bad}:1: invalid YAML: nested too deeply to read"
        bad.unlink()
        # A worker that dies just before the swap is not waited for: its replacement starts on
        # the new config.
        workers = [pid for pid in descendants(process.pid) if "spawn_main" in command_line(pid)]
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: not alive(workers[0]), what="the killed worker gone")
        write_app(config, "second_app", "first")
        started = time.monotonic()
        answer = httpx.post(f"{url}/admin/reload", timeout=30)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 10
        assert answer.json()["applications"] == ["app", "second_app"]
        deadline = time.monotonic() + 20
        while not (replacements := [p for p in descendants(process.pid)
                                    if "spawn_main" in command_line(p) and p not in workers]):
            assert time.monotonic() < deadline, "the lost worker was not replaced"
            time.sleep(0.005)
        os.kill(replacements[0], signal.SIGHUP)  # while it starts: ignored, never its end
        assert _answers(url, "second_app") == [{"y": [2]}]
        assert alive(replacements[0])


def test_sighup_while_starting_or_stopping_does_not_end_the_gateway(tmp_path: Path) -> None:
    config = _two_workers_config(tmp_path, "import time\ntime.sleep(1.5)\n\ndef predict(x):\n    return x + 1\n")
    log = tmp_path / "gateway.log"
    process, _ = spawn_gateway(config, "--workers", "2", log=log)
    try:
        deadline = time.monotonic() + 20
        while not any("runtime serve" in command_line(p) for p in descendants(process.pid)):
            assert time.monotonic() < deadline
            assert process.poll() is None
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGHUP)  # the runtime is still importing the model
        wait_for(f"http://127.0.0.1:{served_port(process, log)}/health/ready", process)
        assert "SIGHUP ignored" in log.read_text()
        os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while process.poll() is None:  # through the drain and the runtimes' stop
            assert time.monotonic() < deadline, "the gateway did not stop"
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGHUP)
            time.sleep(0.05)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
