"""`gateway serve --config config/` as a user runs it, driven over HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIG_DIR
from tests.e2e.processes import alive, descendants, local_socket_of, running_gateway

PREDICT = "/gateway/applications/increment_app"


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    url: str


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with running_gateway(CONFIG_DIR) as (process, url):
        yield Gateway(process, url)


def test_readme_curl(gateway: Gateway) -> None:
    result = subprocess.run(
        ["curl", "-s", "-X", "POST", "--header", "Content-Type: application/json",
         "--header", "Accept: application/json", "-d", '{ "number": [1] }', gateway.url + PREDICT],
        capture_output=True, timeout=30, check=True,
    )
    assert result.stdout == b'{"number":[2]}'


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "answer"),
    [
        ("POST", PREDICT, b'{"number":[1,2,3]}', 200, {"number": [2, 3, 4]}),
        ("POST", PREDICT, b'{"number":"x"}', 400, "number"),
        ("POST", PREDICT, b'{"num":[1]}', 400, "number"),
        ("POST", PREDICT, b"not json", 400, None),
        ("POST", "/gateway/applications/unknown_app", b'{"number":[1]}', 404, None),
        ("PUT", PREDICT, None, 405, None),
        ("GET", PREDICT, None, 200, {  # the application's plan
            "name": "increment_app", "inputs": [{"name": "number", "dtype": "int32", "shape": [-1]}],
            "outputs": [{"name": "number", "dtype": "int32", "shape": [-1]}],
            "stages": [{"stage": 1, "variants": [{"model": "increment_model:1", "shadow": False, "weight": 100,
                                                  "share": 100.0}],
                        "inputs": [{"name": "number", "dtype": "int32", "shape": [-1]}],
                        "outputs": [{"name": "number", "dtype": "int32", "shape": [-1]}]}],
            "dropped": [], "problems": []}),
    ],
)
def test_requests(gateway: Gateway, method: str, path: str, body: bytes | None, status: int,
                  answer: object) -> None:
    response = httpx.request(method, gateway.url + path, content=body,
                             headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == status
    if isinstance(answer, dict):
        assert response.json() == answer
    elif isinstance(answer, str):
        assert response.json()["error"]["field"] == answer
    if status >= 400:
        assert set(response.json()["error"]) >= {"code", "message"}


def test_sigterm_stops_the_whole_process_tree() -> None:
    with running_gateway(CONFIG_DIR) as (process, _):
        tree = descendants(process.pid)
        assert tree, "the runtime process is missing"
        sockets = {local_socket_of(pid) for pid in tree}
        assert all(Path(path).is_socket() for path in sockets)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        while any(alive(pid) for pid in tree) and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in tree)
        assert not any(Path(path).parent.exists() for path in sockets)  # the runtimes' socket folder is gone


def test_a_gateway_set_to_log_warnings_only_is_still_found_on_its_port(tmp_path: Path) -> None:
    # The port is read from an INFO line of the gateway's own log: the test gateway logs INFO.
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\nlogging: {log_level: warning}\n")
    with running_gateway(tmp_path, ready_path="/health/live") as (process, url):
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
        assert process.poll() is None
