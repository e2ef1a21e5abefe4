"""Fault tests against `gateway serve` with real runtimes: a flood beyond the concurrency limit,
1,000 malformed bodies, and reloads under load. Each prints its figures (docs/RELIABILITY.md)."""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import write_app, write_model
from tests.e2e.processes import alive, command_line, descendants, running_gateway
from tests.waiting import wait_until

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_flood_beyond_the_concurrency_limit(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "slow", "slow")
    write_app(root, "narrow", "slow", "max_concurrency: 2")
    (root / "gateway.yaml").write_text("kind: Gateway\nlimits: {max_concurrency: 16}\nlogging: {access_log: false}\n")
    with running_gateway(root) as (process, url):
        statuses: Counter[int | str] = Counter()
        lock = threading.Lock()
        rss_before = rss_kib(process.pid)

        def flood(app: str, count: int) -> None:
            with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as client:
                for _ in range(count):
                    try:
                        code: int | str = client.post(f"{url}/gateway/applications/{app}",
                                                      json={"x": [50]}).status_code
                    except httpx.TimeoutException:
                        code = "timeout"
                    with lock:
                        statuses[code] += 1

        threads = [threading.Thread(target=flood, args=("slow" if i % 2 else "narrow", 25)) for i in range(48)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        rss_after = rss_kib(process.pid)
    print(f"\nflood: 48 clients x 25 requests in {elapsed:.1f}s: {dict(statuses)}; "
          f"gateway RSS {rss_before} -> {rss_after} KiB")
    assert set(statuses) <= {200, 429, 503}
    assert statuses[200] > 0
    assert statuses[429] > 0
    assert statuses[503] > 0
    assert rss_after < rss_before + 64 * 1024


def malformed_bodies(count: int, seed: int = 7) -> list[tuple[str, bytes, dict[str, str]]]:
    """Requests a careless or hostile client might send: (path, body, headers)."""
    rng = random.Random(seed)
    native, tf = "/gateway/applications/scaler_app", "/v1/models/scaler_model:predict"
    fixed: list[bytes] = [
        b"", b"{", b"}", b"[", b"null", b"true", b"1", b'"text"', b"[]", b"{}", b'{"features": null}',
        b'{"features": [[1, 2, 3]]}', b'{"features": [[1, 2, 3]], "unit": 5}',
        b'{"features": [[1, 2]], "unit": "cm"}', b'{"features": [[1, 2, "x"]], "unit": "cm"}',
        b'{"features": [[1, 2, 3], [4, 5]], "unit": "cm"}', b'{"features": [[1e400, 2, 3]], "unit": "cm"}',
        b'{"features": [[NaN, Infinity, -Infinity]], "unit": "cm"}', b'{"features": "AAAA", "unit": {"b64": "!!"}}',
        b'{"features": [[1, 2, 3]], "unit": {"b64": "AA=="}, "extra": 1}', b'{"features": [[true, false, 1]]}',
        b'{"features": ' + b"[" * 3000 + b"]" * 3000 + b', "unit": "cm"}', b"\xff\xfe\xfd", b'{"a":' * 500,
        b'{"instances": [{"features": [1, 2, 3], "unit": "cm"}, {"features": [1, 2]}]}',
        b'{"inputs": {"features": [[1, 2, 3]]}, "instances": []}', b'{"signature_name": 5, "instances": [1]}',
        b'{"features": [[99999999999999999999999999, 2, 3]], "unit": "cm"}', "{\"unit\": \"\ud800\"}".encode(
            "utf-8", "surrogatepass"),
    ]
    requests: list[tuple[str, bytes, dict[str, str]]] = []
    json_header = {"content-type": "application/json"}
    for index in range(count):
        path = native if index % 2 else tf
        choice = index % 4
        if choice == 0:
            body = fixed[rng.randrange(len(fixed))]
        elif choice == 1:
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif choice == 2:
            good = b'{"features": [[1, 2, 3]], "unit": "cm"}'
            cut = rng.randrange(1, len(good))
            body = good[:cut] + bytes([rng.randrange(32, 127)]) + good[cut + 1:]
        else:
            body = fixed[rng.randrange(len(fixed))][: rng.randrange(0, 40)]
        headers = json_header if rng.random() < 0.8 else {"content-type": rng.choice(
            ["text/plain", "application/xml", "application/json; charset=latin-1", "multipart/form-data"])}
        if rng.random() < 0.05:
            headers = {**headers, "content-encoding": rng.choice(["gzip", "br", "deflate"])}
        requests.append((path, body, headers))
    return requests


def test_a_thousand_malformed_bodies(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "config"
    with running_gateway(config) as (process, url):
        statuses: Counter[int] = Counter()
        with httpx.Client(base_url=url, timeout=10) as client:
            for path, body, headers in malformed_bodies(1000):
                response = client.post(path, content=body, headers=headers)
                statuses[response.status_code] += 1
                assert response.status_code < 500, (path, body[:80], headers, response.text)
                assert "error" in response.json() or response.status_code == 200
            assert client.post("/gateway/applications/increment_app", json={"number": [1]}).json() == {"number": [2]}
        assert process.poll() is None
        assert len(descendants(process.pid)) >= 2
    print(f"\nmalformed: 1000 requests -> {dict(sorted(statuses.items()))}")


# Reloads one after the other, each with a new runtime: two show that a reload follows a reload
# (the runtime it retires was itself started by one); more repeat the same.
ROUNDS = 2


def test_reloads_under_load_lose_no_request(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m", "m", "def predict(x):\n    return x + 1\n")
    write_app(root, "app", "m")
    (root / "gateway.yaml").write_text("kind: Gateway\ndefaults: {drain_timeout_s: 2}\nlogging: {access_log: false}\n")
    log = tmp_path / "gateway.log"
    with running_gateway(root, log=log) as (process, url):
        statuses: Counter[int | str] = Counter()
        stop = threading.Event()
        lock = threading.Lock()

        def traffic() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    try:
                        response = client.post(f"{url}/gateway/applications/app", json={"x": [1]})
                        code: int | str = response.status_code if response.json() == {"y": [2]} else "wrong"
                    except httpx.TransportError as error:
                        code = type(error).__name__
                    with lock:
                        statuses[code] += 1

        threads = [threading.Thread(target=traffic) for _ in range(6)]
        for thread in threads:
            thread.start()

        def answered() -> int:
            with lock:  # the traffic threads add keys while this counts
                return sum(statuses.values())

        def more_traffic(count: int = 20) -> None:
            before = answered()
            wait_until(lambda: answered() >= before + count, what=f"{count} more answers")

        for round_ in range(1, ROUNDS + 1):
            more_traffic()  # between reloads
            # Touch the model's code so each reload starts a new runtime and retires the old one.
            (root / "models" / "m" / "src" / "func_main.py").write_text(
                f"def predict(x):\n    return x + 1  # revision {round_}\n")
            os.kill(process.pid, signal.SIGHUP)
            wait_until(functools.partial(_reloads_logged, log, round_), timeout=30, what=f"reload {round_} applied")
        # Two SIGHUPs back to back: the second comes while the first reload is under way (they run
        # one after the other), and the gateway ends on the config written last. The new runtime
        # takes a second to import, so the second SIGHUP is sent once the first is being handled
        # (two sent at once could reach the process as one signal) and before that reload is over.
        more_traffic()
        (root / "models" / "m" / "src" / "func_main.py").write_text(
            f"import time\n\ntime.sleep(1)\n\n\ndef predict(x):\n    return x + 1  # revision {ROUNDS + 1}\n")
        before = set(_runtimes(process.pid))
        os.kill(process.pid, signal.SIGHUP)
        wait_until(lambda: bool(set(_runtimes(process.pid)) - before), timeout=30, what=f"reload {ROUNDS + 1} started")
        assert _reloads_logged(log, ROUNDS)  # the first of the two is still under way
        write_app(tmp_path / "staging", "added", "m")  # then moved in whole: the first reload may be reading
        os.replace(tmp_path / "staging" / "applications" / "added.yaml", root / "applications" / "added.yaml")
        os.kill(process.pid, signal.SIGHUP)
        wait_until(functools.partial(_reloads_logged, log, ROUNDS + 2), timeout=60,
                   what="both back-to-back reloads applied")
        added = httpx.post(f"{url}/gateway/applications/added", json={"x": [1]}, timeout=10)
        assert (added.status_code, added.json()) == (200, {"y": [2]})
        # Traffic goes on until the drain timeout (2 s) has passed and every replaced runtime is stopped.
        wait_until(lambda: len(_runtimes(process.pid)) == 1, timeout=30, what="the replaced runtimes stopped")
        more_traffic()
        stop.set()
        for thread in threads:
            thread.join()
    print(f"\nreload under load: {ROUNDS} reloads, each with a new runtime, then 2 back to back: {dict(statuses)}")
    assert set(statuses) == {200}


def _reloads_logged(log: Path, count: int) -> bool:
    return log.read_text().count("reloaded:") == count


def _runtimes(gateway: int) -> list[int]:
    return [pid for pid in descendants(gateway) if alive(pid) and "runtime serve" in command_line(pid)]
