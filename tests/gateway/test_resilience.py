"""Circuit breakers, retries within a budget, and deadlines that cancel the backend call."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import httpx
import pytest

from gateway.app import create_app
from gateway.backends.pool import ChannelPool
from gateway.backends.resilience import CircuitBreaker, CircuitState
from gateway.errors import BackendUnavailable
from gateway.settings import Settings
from tests.conftest import free_port, serve_app
from tests.gateway.test_tfserving_api import ManualClock, write_config
from tests.tfserving_server import FakeTFServing

UNAVAILABLE, INTERNAL = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL


def test_breaker_opens_after_consecutive_transport_failures() -> None:
    changes: list[CircuitState] = []
    clock = ManualClock()
    breaker = CircuitBreaker("t:1", failures=3, cooldown_s=60, on_change=lambda _t, s: changes.append(s),
                             clock=clock)
    for code in (UNAVAILABLE, UNAVAILABLE, None, UNAVAILABLE, UNAVAILABLE):
        breaker.before_call()
        breaker.record(code)
    assert breaker.state is CircuitState.CLOSED  # a success in between resets the count
    breaker.before_call()
    breaker.record(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert breaker.state.value == "open"
    with pytest.raises(BackendUnavailable, match="circuit is open") as caught:
        breaker.before_call()
    assert caught.value.retry_after_s == 60
    clock.advance(45)
    with pytest.raises(BackendUnavailable, match=r"next try in 15\.0s") as caught:
        breaker.before_call()
    assert caught.value.retry_after_s == 15
    assert changes == [CircuitState.OPEN]


def test_model_errors_do_not_open_the_circuit() -> None:
    breaker = CircuitBreaker("t:1", failures=2)
    for _ in range(5):
        breaker.before_call()
        breaker.record(INTERNAL)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_lets_one_probe_through() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("t:1", failures=1, cooldown_s=0.05, clock=clock)
    breaker.before_call()
    breaker.record(UNAVAILABLE)
    clock.advance(0.04)
    with pytest.raises(BackendUnavailable):
        breaker.before_call()  # still cooling down
    clock.advance(0.02)
    breaker.before_call()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(BackendUnavailable):
        breaker.before_call()  # others wait for the probe
    breaker.record(UNAVAILABLE)
    assert breaker.state.value == "open"
    clock.advance(0.06)
    breaker.before_call()
    breaker.record(None)
    assert breaker.state.value == "closed"


async def test_the_pools_breakers_run_on_its_clock() -> None:
    clock = ManualClock()
    pool = ChannelPool(circuit_failures=1, circuit_cooldown_s=10, clock=clock)
    breaker = pool.breaker("t:1")
    breaker.before_call()
    breaker.record(UNAVAILABLE)
    clock.advance(9)
    with pytest.raises(BackendUnavailable, match=r"next try in 1\.0s"):
        breaker.before_call()
    clock.advance(1)
    breaker.before_call()  # cooled down on the pool's clock: the probe
    assert breaker.state is CircuitState.HALF_OPEN
    await pool.close()


async def test_a_dead_backend_opens_its_circuit(tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "config", target)
    settings = Settings(access_log=False, circuit_failures=3, circuit_cooldown_s=30)
    app = create_app(settings, config)
    async with (serve_app(app) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        clock = ManualClock()
        app.state.reloader.pool.breaker(target).clock = clock  # the cool-down runs on the test's clock
        statuses = []
        for _ in range(4):
            response = await client.post("/gateway/models/toy_one", json={"input_1": [[1, 2]]})
            statuses.append(response.status_code)
        assert statuses == [503] * 4
        assert "circuit is open" in response.json()["error"]["message"]
        assert response.headers["retry-after"] in ("29", "30")
        assert response.headers["retry-after"] == "30"  # no time passed on the breaker's clock
        clock.advance(30)  # cooled down: the next call is the probe, and reaches (nobody at) the target
        probe = await client.post("/gateway/models/toy_one", json={"input_1": [[1, 2]]})
        assert probe.status_code == 503
        assert "circuit is open" not in probe.json()["error"]["message"]
        metrics = (await client.get("/metrics")).text
    assert 'gateway_circuit_state{target="127.0.0.1:' in metrics
    circuit = [line for line in metrics.splitlines() if line.startswith("gateway_circuit_state{")]
    assert any(line.endswith(" 2.0") for line in circuit)


async def test_unavailable_is_retried_within_a_budget(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    settings = Settings(access_log=False, retry_attempts=3, circuit_failures=100)
    async with (serve_app(create_app(settings, config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        before = len(tfs.calls)
        response = await client.post("/v1/models/errors:predict", json={"inputs": UNAVAILABLE.value[0]})
        assert response.status_code == 503
        assert len([c for c in tfs.calls[before:] if c[0] == "Predict"]) == 3
        # The budget: after a run of failures, calls are no longer multiplied.
        for _ in range(10):
            await client.post("/v1/models/errors:predict", json={"inputs": UNAVAILABLE.value[0]})
        before = len(tfs.calls)
        await client.post("/v1/models/errors:predict", json={"inputs": UNAVAILABLE.value[0]})
        assert len([c for c in tfs.calls[before:] if c[0] == "Predict"]) == 1


async def test_model_errors_are_not_retried(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        before = len(tfs.calls)
        response = await client.post("/v1/models/errors:predict", json={"inputs": INTERNAL.value[0]})
        assert response.status_code == 500
        assert len([c for c in tfs.calls[before:] if c[0] == "Predict"]) == 1


async def test_deadline_is_504_in_time_and_the_backend_sees_the_cancel(tfs: FakeTFServing,
                                                                       tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    tfs.delay_s = 5
    async with (serve_app(create_app(Settings(access_log=False), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        started = time.monotonic()
        response = await client.post("/v1/models/toy_double:predict", json={"instances": [[1, 2]]},
                                     headers={"x-request-timeout": "200"})
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert elapsed < 1.0
        deadline = time.monotonic() + 2
        while tfs.cancelled == 0 and time.monotonic() < deadline:
            await client.get("/health/live")
    assert tfs.cancelled == 1


async def test_a_healthy_check_closes_an_open_circuit(tfs: FakeTFServing, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", tfs.target)
    settings = Settings(access_log=False, circuit_failures=2, circuit_cooldown_s=60, health_interval_s=0.2)
    async with (serve_app(create_app(settings, config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        await tfs.stop()
        for _ in range(3):
            refused = await client.post("/v1/models/toy_double:predict", json={"instances": [[1, 2]]})
        assert refused.status_code == 503
        assert "circuit is open" in refused.json()["error"]
        await tfs.start()  # back on the same port; the next health check is the probe
        deadline = time.monotonic() + 5
        status = 503
        while status != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = (await client.post("/v1/models/toy_double:predict", json={"instances": [[1, 2]]})).status_code
        assert status == 200
