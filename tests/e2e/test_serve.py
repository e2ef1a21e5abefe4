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
from tests.gateway.test_observability import sample
from tests.waiting import wait_until

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


def _curl(url: str, body: str, *headers: str) -> tuple[dict[str, str], bytes]:
    """The answer's headers (lower-case names) and body, as `curl -si` shows them."""
    options = [arg for header in ("Content-Type: application/json", *headers) for arg in ("-H", header)]
    result = subprocess.run(["curl", "-si", "-X", "POST", *options, "-d", body, url],
                            capture_output=True, timeout=30, check=True)
    head, _, answer = result.stdout.partition(b"\r\n\r\n")
    fields = (line.split(":", 1) for line in head.decode().splitlines()[1:])
    return {name.strip().lower(): value.strip() for name, value in fields}, answer


def test_readme_pipeline_and_canary_curls(gateway: Gateway) -> None:
    headers, body = _curl(gateway.url + "/gateway/applications/pipeline_app", '{"fahrenheit": [-40, 32, 212]}')
    assert body == b'{"phase":["ice","water","steam"]}'
    assert headers["x-gateway-variants"] == "celsius_model:1, kelvin_model:1, phase_model:1"
    assert [part.split(";")[0] for part in headers["server-timing"].split(", ")] == [
        "decode", "stage1", "stage2", "stage3", "encode"]
    _, body = _curl(gateway.url + "/gateway/models/celsius_model", '{"fahrenheit": [-40, 32, 212]}')
    assert body == b'{"celsius":[-40.0,0.0,100.0],"readings":3}'
    _, body = _curl(gateway.url + "/gateway/applications/pipeline_app", '{"fahrenheit": [32]}',
                    "x-request-timeout: 0.001")
    assert body == (b'{"error":{"code":"deadline_exceeded","message":"stage 1 (celsius_model:1): the request\'s '
                    b'deadline passed before the answer was ready"}}')
    canary = gateway.url + "/gateway/applications/canary_app"
    headers, body = _curl(canary, '{"number": [1, 2147483647]}')
    assert body == b'{"number":[2,-2147483648]}'
    assert headers["x-gateway-variants"] in ("increment_model:1", "increment_numpy:1")
    for key, variant in (("user-42", "increment_numpy:1"), ("user-1", "increment_model:1")):
        headers, body = _curl(canary, '{"number": [1]}', f"x-gateway-route-key: {key}")
        assert (headers["x-gateway-variants"], body) == (variant, b'{"number":[2]}')

    def disagreed() -> float:  # the shadow, increment_numpy:2, keeps 2147483647
        return sample(httpx.get(gateway.url + "/metrics", timeout=5).text, "gateway_shadow_comparisons_total",
                      application="canary_app", shadow="increment_numpy:2", agreed="false")

    wait_until(lambda: disagreed() == 1, what="the shadow's disagreement counted")


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
            "dropped": [], "problems": [], "shadow_problems": []}),
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
