"""SIGTERM under load, one worker: every request a client sent is answered (200, or 503 while
draining); the only failures allowed are connections the stopped gateway refused, whose
request was never sent. Clients keep their connection alive, or open one per request."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_app, write_model
from tests.e2e.processes import running_gateway
from tests.waiting import wait_until

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"
CLIENTS = 16
ANSWERED = 3  # requests each client has had answered before SIGTERM: every client is in its loop


def make_config(root: Path) -> Path:
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "slow", "slow")
    (root / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {shutdown_grace_s: 0.5, drain_timeout_s: 5}\nlogging: {access_log: false}\n")
    return root


@pytest.mark.parametrize(("kept_alive", "workers"), [(True, 1), (False, 1), (False, 2)],
                         ids=["kept-alive", "connection-per-request", "connection-per-request-2-workers"])
def test_sigterm_under_load_resets_no_request_in_flight(tmp_path: Path, kept_alive: bool, workers: int) -> None:
    with running_gateway(make_config(tmp_path / "config"), "--workers", str(workers)) as (process, url):
        outcomes: Counter[str] = Counter()
        answered: Counter[int] = Counter()  # by client
        failures: list[str] = []
        lock = threading.Lock()

        def client(number: int) -> None:
            # Clients in a closed loop until the gateway refuses their connection. Those opening a
            # connection per request race the listener's close (queued connections are reset).
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1 if kept_alive else 0)
            with httpx.Client(base_url=url, timeout=10, limits=limits) as http:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        response = http.post("/gateway/applications/slow", json={"x": [number % 3 * 10]})
                        outcome = str(response.status_code)
                    except httpx.ConnectError:
                        outcome = "refused"  # never sent
                    except httpx.TransportError as error:  # sent, then reset or cut off
                        outcome = "failed"
                        with lock:
                            failures.append(repr(error))
                    with lock:
                        outcomes[outcome] += 1
                        answered[number] += 1
                    if outcome in ("refused", "failed"):
                        return

        # A kept-alive connection left idle: closed at shutdown with a FIN, not a reset.
        host, port = url.removeprefix("http://").split(":")
        idle = socket.create_connection((host, int(port)), timeout=15)
        idle.sendall(b'POST /gateway/applications/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"x": [0]}')
        answer = b""
        while not answer.endswith(b'{"y":[0]}'):
            answer += idle.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        # Load until every client is under way (not a fixed time, which a loaded machine may spend
        # starting the clients' threads or the workers' first requests).
        wait_until(lambda: len(answered) == CLIENTS and min(answered.values()) >= ANSWERED, timeout=30,
                   what=f"{ANSWERED} requests answered to each of {CLIENTS} clients")
        with lock:
            before = sum(outcomes.values())
        stopped_at = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert idle.recv(65536) == b""  # would raise ConnectionResetError on a reset
        idle_closed_s = time.monotonic() - stopped_at
        idle.close()
        for thread in threads:
            thread.join(timeout=30)
        exit_code = process.wait(timeout=20)
        stop_s = time.monotonic() - stopped_at
    kind = "kept-alive" if kept_alive else "a connection per request"
    print(f"\nSIGTERM under load, {workers} worker(s): {CLIENTS} clients ({kind}), "
          f"{before} requests before SIGTERM, "
          f"then {dict(outcomes)} in all; an idle connection closed {idle_closed_s:.2f} s and the gateway "
          f"exited {exit_code} {stop_s:.2f} s after SIGTERM")
    assert failures == [], failures
    assert outcomes["200"] > before > 0  # served through the grace period and the drain
    assert set(outcomes) <= {"200", "503", "refused"}
    assert outcomes["refused"] == CLIENTS
    assert exit_code == 0
    assert stop_s < 10


def _request(sock: socket.socket, body: bytes) -> bytes:
    """One keep-alive POST to the slow application on `sock`; its whole answer (head and body)."""
    sock.sendall(b"POST /gateway/applications/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"]}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer: {answer!r}"
        answer += chunk
    return answer


def test_answers_during_the_grace_close_their_connections(tmp_path: Path) -> None:
    """From SIGTERM on (ready 503 for shutdown_grace_s), every answer says `Connection: close` and
    its connection closes after it: a balancer's kept-alive connections move to other instances.
    The request in flight when the grace begins is answered so too."""
    config = make_config(tmp_path / "config")
    (config / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {shutdown_grace_s: 3, drain_timeout_s: 5}\nlogging: {access_log: false}\n")
    with running_gateway(config) as (process, url):
        host, port = url.removeprefix("http://").split(":")
        kept = socket.create_connection((host, int(port)), timeout=15)
        before = _request(kept, b'{"x": [0]}')
        assert b"connection: close" not in before.lower()
        in_flight = socket.create_connection((host, int(port)), timeout=15)
        in_flight.sendall(b'POST /gateway/applications/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n'
                          b'{"x": [800]}')  # 0.8 s in the model
        time.sleep(0.2)  # the request has reached the model
        os.kill(process.pid, signal.SIGTERM)
        wait_until(lambda: httpx.get(url + "/health/ready", timeout=5).status_code == 503, timeout=5,
                   what="ready 503 once draining")
        during = _request(kept, b'{"x": [0]}')
        assert during.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close\r\n" in during.lower()
        assert kept.recv(65536) == b""  # closed after that answer, not at the end of the grace
        answer = b""
        while not answer.endswith(b"]}"):
            chunk = in_flight.recv(65536)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close\r\n" in answer.lower()
        assert in_flight.recv(65536) == b""
        with httpx.Client(base_url=url, timeout=5) as fresh:  # a new connection in the grace: served, closed
            response = fresh.post("/gateway/applications/slow", json={"x": [0]})
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
        assert process.poll() is None  # all of that inside the grace
        kept.close()
        in_flight.close()
        assert process.wait(timeout=20) == 0
