"""Batching that is safe to turn on: every caller gets exactly its rows, a bad row fails only its
own request, `max_delay_ms` trades a known wait for fuller calls, and each call is reported
(size, trigger, queue delays) for the metrics."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.backends.base import BackendCall, Prediction
from gateway.backends.coalesce import Coalescer
from gateway.backends.sharing import CALL_FREE, FULL, IMMEDIATE, MAX_DELAY
from gateway.errors import BadRequest, DeadlineExceeded, ModelError
from gateway.manifests import load_config
from gateway.settings import Settings
from tests.conftest import serve_app, write_app
from tests.tfserving_server import FakeTFServing


class RowModel:
    """y[i] = 7 * x[i, 0] - x[i, 1] + 0.5: each row's answer depends on that row's values only, so a
    row given to the wrong caller, or in the wrong order, is seen. Refuses (as a backend's
    INVALID_ARGUMENT) any call holding a negative value; records the rows of every call."""

    def __init__(self, pause_s: float = 0.0, seed: int = 0) -> None:
        self.batches: list[int] = []
        self.pause_s = pause_s
        self.random = random.Random(seed)

    async def __call__(self, call: BackendCall) -> Prediction:
        x = call.inputs["x"]
        self.batches.append(len(x))
        await asyncio.sleep(self.random.uniform(0, self.pause_s))
        if (x < 0).any():
            raise BadRequest("negative values are not allowed")
        return Prediction({"y": 7 * x[:, 0] - x[:, 1] + 0.5})


def expected(x: np.ndarray) -> list[float]:
    return [float(v) for v in 7 * x[:, 0] - x[:, 1] + 0.5]


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, list[float]]] = []

    def __call__(self, size: int, trigger: str, waits: Sequence[float]) -> None:
        self.calls.append((size, trigger, list(waits)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(callers=st.integers(1, 64), seed=st.integers(0, 2**32 - 1), max_batch_size=st.integers(1, 80),
       max_calls=st.integers(1, 4), delay_ms=st.sampled_from([0.0, 0.0, 1.0, 3.0]))
def test_every_caller_gets_exactly_its_rows(callers: int, seed: int, max_batch_size: int, max_calls: int,
                                            delay_ms: float) -> None:
    rng = np.random.default_rng(seed)
    rows = [int(rng.integers(1, 9)) for _ in range(callers)]
    inputs = [rng.integers(0, 1000, size=(n, 2)).astype(np.float64) + caller * 1000 for caller, n in enumerate(rows)]
    model = RowModel(pause_s=0.003, seed=seed)
    reports = Reports()

    async def run() -> list[Prediction]:
        coalescer = Coalescer(model, "t", max_batch_size, max_calls, delay_ms / 1000, reports)

        async def caller(index: int) -> Prediction:
            await asyncio.sleep(float(rng.uniform(0, 0.004)))  # arrivals spread over the calls
            return await coalescer.predict(BackendCall({"x": inputs[index]}, 5.0))

        answers = await asyncio.gather(*(caller(i) for i in range(callers)))
        assert coalescer.idle
        return answers

    answers = asyncio.run(run())
    for index, answer in enumerate(answers):
        assert answer.outputs["y"].tolist() == expected(inputs[index]), f"caller {index}"
    assert sum(model.batches) == sum(rows)  # every row sent once: nothing refused, nothing resent
    assert len(reports.calls) == len(model.batches)
    for size, _, waits in reports.calls:
        assert size <= max_batch_size or len(waits) == 1  # only a request larger than a batch goes over it
    assert sum(len(waits) for _, _, waits in reports.calls) == callers  # each request's wait, once


async def test_a_refused_batch_is_sent_again_request_by_request() -> None:
    """A joined call refused as the client's fault (INVALID_ARGUMENT: one request's bad row) is
    sent again request by request: the bad request alone fails, its neighbours are answered."""
    model = RowModel(pause_s=0.002)
    coalescer = Coalescer(model, "t", max_batch_size=64, max_calls=1)
    inputs = [np.array([[float(i), 1.0]]) for i in range(8)]
    inputs[5] = np.array([[-1.0, 1.0]])
    results = await asyncio.gather(*(coalescer.predict(BackendCall({"x": x}, 2.0)) for x in inputs),
                                   return_exceptions=True)
    assert isinstance(results[5], BadRequest)
    for index, result in enumerate(results):
        if index != 5:
            assert isinstance(result, Prediction), (index, result)
            assert result.outputs["y"].tolist() == expected(inputs[index])
    assert model.batches[0] == 1  # the first alone,
    assert 7 in model.batches  # then the other seven joined
    assert model.batches.count(1) >= 8  # ... and, refused, each of those seven again on its own


async def test_other_failures_go_to_every_request_of_the_call() -> None:
    class Failing(RowModel):
        async def __call__(self, call: BackendCall) -> Prediction:
            self.batches.append(len(call.inputs["x"]))
            await asyncio.sleep(0.002)
            raise ModelError("ValueError: the model broke")

    model = Failing()
    coalescer = Coalescer(model, "t", max_batch_size=64, max_calls=1)
    results = await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([[1.0, 2.0]])}, 2.0))
                                     for _ in range(6)), return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)
    assert model.batches == [1, 5]  # not retried one by one


async def test_without_a_delay_nothing_waits_and_the_triggers_say_why_calls_left() -> None:
    reports = Reports()
    coalescer = Coalescer(RowModel(pause_s=0.005), "t", max_batch_size=3, max_calls=1, observe=reports)
    await coalescer.predict(BackendCall({"x": np.array([[1.0, 1.0]])}, 2.0))
    assert reports.calls == [(1, IMMEDIATE, [0.0])]
    reports.calls.clear()
    await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([[float(i), 1.0]])}, 2.0))
                           for i in range(6)))
    # the first alone; five wait for the busy call: three fill a call, then the last two leave when it is free
    assert [(size, trigger) for size, trigger, _ in reports.calls] == [(1, IMMEDIATE), (3, FULL), (2, CALL_FREE)]
    assert all(wait > 0 for _, _, waits in reports.calls[1:] for wait in waits)


async def test_max_delay_waits_for_a_fuller_call_at_most_that_long() -> None:
    reports = Reports()
    model = RowModel()
    coalescer = Coalescer(model, "t", max_batch_size=4, max_calls=2, max_delay_s=0.2, observe=reports)
    started = time.monotonic()
    alone = await coalescer.predict(BackendCall({"x": np.array([[2.0, 1.0]])}, 2.0))
    waited = time.monotonic() - started
    assert alone.outputs["y"].tolist() == [13.5]
    assert waited >= 0.2  # an unloaded request waits the delay: the cost asked for
    assert [(size, trigger) for size, trigger, _ in reports.calls] == [(1, MAX_DELAY)]
    reports.calls.clear()

    async def later(i: int) -> Prediction:
        await asyncio.sleep(0.01 * i)  # 0, 10, 20 ms: all inside the delay
        return await coalescer.predict(BackendCall({"x": np.array([[float(i), 0.0]])}, 2.0))

    answers = await asyncio.gather(*(later(i) for i in range(3)))
    assert [a.outputs["y"].tolist() for a in answers] == [[0.5], [7.5], [14.5]]
    assert [(size, trigger) for size, trigger, _ in reports.calls] == [(3, MAX_DELAY)]  # one call, not three
    assert max(reports.calls[0][2]) >= 0.2  # the oldest waited the delay
    reports.calls.clear()
    started = time.monotonic()
    await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([[1.0, 1.0]])}, 2.0)) for _ in range(4)))
    assert [(size, trigger) for size, trigger, _ in reports.calls] == [(4, FULL)]  # full: leaves at once
    assert time.monotonic() - started < 0.2


async def test_a_request_whose_deadline_is_shorter_than_the_delay_is_answered_504_in_time() -> None:
    coalescer = Coalescer(RowModel(), "t", max_batch_size=4, max_calls=1, max_delay_s=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await coalescer.predict(BackendCall({"x": np.array([[1.0, 1.0]])}, 0.05))
    assert time.monotonic() - started < 0.4
    await asyncio.sleep(0.5)  # the delay's timer finds only a caller that has gone
    assert coalescer.idle


async def test_a_batching_model_exports_its_batches(tmp_path: Path) -> None:
    """Over a real gRPC backend: the batch size and queue delay histograms and the batches by trigger."""
    server = FakeTFServing(delay_s=0.02)
    await server.start()
    root = tmp_path / "config"
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nbatching: {max_batch_size: 64, max_calls: 1, max_delay_ms: 2}\n"
        f"backend:\n  protocol: tensorflow-serving\n  target: {server.target}\n  model_name: Toy\n  version: 1\n"
        "contract:\n  inputs:\n    input_1: {shape: [-1, 2], type: float32}\n"
        "  outputs:\n    output_1: {shape: [-1, 1], type: float32}\n")
    write_app(root, "toy_app", "toy")
    rng = random.Random(7)
    requests = [[[float(rng.randrange(100)), float(rng.randrange(100))] for _ in range(rng.randrange(1, 6))]
                for _ in range(40)]
    try:
        async with serve_app(create_app(Settings(config_dir=root, access_log=False), load_config(root))) as url, \
                httpx.AsyncClient(timeout=10) as client:
            responses = await asyncio.gather(*(client.post(f"{url}/gateway/applications/toy_app",
                                                           json={"input_1": rows}) for rows in requests))
            metrics = (await client.get(f"{url}/metrics")).text
    finally:
        await server.stop()
    for rows, response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        assert response.json()["output_1"] == [[2 * a + 3 * b] for a, b in rows]  # its own rows, in order
    predicts = sum(1 for name, _ in server.calls if name == "Predict")
    assert predicts < len(requests)
    assert f'gateway_batch_size_count{{model="toy",version="1"}} {float(predicts)}' in metrics
    assert f'gateway_batch_size_sum{{model="toy",version="1"}} {float(sum(map(len, requests)))}' in metrics
    assert f'gateway_batch_queue_delay_seconds_count{{model="toy",version="1"}} {float(len(requests))}' in metrics
    by_trigger = {trigger: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith('gateway_batches_total{model="toy"')
                  for trigger in [line.split('trigger="')[1].split('"')[0]]}
    assert set(by_trigger) == {IMMEDIATE, CALL_FREE, FULL, MAX_DELAY}
    assert sum(by_trigger.values()) == predicts
    assert by_trigger[IMMEDIATE] == 0  # with a delay nothing leaves at once
