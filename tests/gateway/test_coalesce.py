"""Opt-in coalescing: concurrent requests to one model share backend calls."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.backends.base import BackendCall, Prediction, Selector
from gateway.backends.coalesce import Coalescer
from gateway.backends.pool import ChannelPool
from gateway.backends.scheduling import MAX_SCHEDULERS, ScheduledBackend, scheduled
from gateway.backends.tfserving import connect
from gateway.errors import BackendError, ConfigError, ModelError
from gateway.manifests import BatchingSpec, load_config
from gateway.settings import Settings
from tests.conftest import REPO, serve_app, write_app
from tests.tfserving_server import FakeTFServing


class Model:
    """Adds 1 to every row after a short pause; records the batch sizes it was called with."""

    def __init__(self, fail: bool = False, drop_row: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.drop_row = drop_row

    async def __call__(self, call: BackendCall) -> Prediction:
        inputs = call.inputs
        self.batches.append(len(inputs["x"]))
        await asyncio.sleep(0.01)
        if self.fail:
            raise ModelError("ValueError: no")
        out = inputs["x"] + 1
        return Prediction({"y": out[1:] if self.drop_row else out})


async def test_unloaded_requests_go_alone() -> None:
    model = Model()
    coalescer = Coalescer(model, "t", max_batch_size=100, max_calls=2)
    for i in range(3):
        answer = await coalescer.predict(BackendCall({"x": np.array([i])}, 1.0))
        assert answer.outputs["y"].tolist() == [i + 1]
    assert model.batches == [1, 1, 1]


async def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = Model()
    coalescer = Coalescer(model, "t", max_batch_size=100, max_calls=1)
    answers = await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([i, 10 * i])}, 1.0))
                                     for i in range(20)))
    assert [a.outputs["y"].tolist() for a in answers] == [[i + 1, 10 * i + 1] for i in range(20)]
    assert model.batches == [2, 38]  # the first alone, the rest together
    assert coalescer.running == 0


async def test_batches_stay_within_max_batch_size() -> None:
    model = Model()
    coalescer = Coalescer(model, "t", max_batch_size=4, max_calls=1)
    await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([i])}, 1.0)) for i in range(10)))
    assert max(model.batches) <= 4
    assert sum(model.batches) == 10


async def test_a_failed_call_fails_every_request_in_it() -> None:
    coalescer = Coalescer(Model(fail=True), "t", max_batch_size=100, max_calls=1)
    results = await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([i])}, 1.0)) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)


async def test_an_answer_without_one_row_per_input_row_is_a_backend_error() -> None:
    coalescer = Coalescer(Model(drop_row=True), "t", max_batch_size=100, max_calls=1)
    results = await asyncio.gather(*(coalescer.predict(BackendCall({"x": np.array([i])}, 1.0)) for i in range(3)),
                                   return_exceptions=True)
    assert isinstance(results[1], BackendError)
    assert "rows" in str(results[1])


def test_batching_in_a_manifest(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    serving = config / "models/increment_model/serving.yaml"
    serving.write_text(serving.read_text() + "batching:\n  max_batch_size: 64\n")
    model = load_config(config).models[("increment_model", 1)]
    assert model.batching == BatchingSpec(max_batch_size=64, max_calls=2)
    scaler = config / "models/scaler_model/serving.yaml"  # has scalar inputs: cannot be batched
    scaler.write_text(scaler.read_text() + "batching: {}\n")
    with pytest.raises(ConfigError, match="batch"):
        load_config(config)


@pytest.mark.parametrize(("model", "declared"), [("toy:1", True), ("toy:1", False), ("toy@stable", False)])
async def test_requests_for_a_version_of_a_floating_model_are_batched_too(
        tmp_path: Path, model: str, declared: bool) -> None:
    """An application naming a version (or label) of a model that floats on TF Serving, with a
    declared or a discovered contract: its concurrent requests still share calls."""
    server = FakeTFServing(delay_s=0.02)
    await server.start()
    root = tmp_path / "config"
    (root / "models").mkdir(parents=True)
    contract = ("contract:\n  inputs:\n    input_1: {shape: [-1, 2], type: float32}\n"
                "  outputs:\n    output_1: {shape: [-1, 1], type: float32}\n") if declared else ""
    (root / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nbatching: {max_batch_size: 64, max_calls: 1}\n"
        f"backend:\n  protocol: tensorflow-serving\n  target: {server.target}\n  model_name: Toy\n{contract}")
    write_app(root, "toy_app", model)
    rows = [[float(i), 1.0] for i in range(12)]
    try:
        async with serve_app(create_app(Settings(config_dir=root), load_config(root))) as url, \
                httpx.AsyncClient() as client:
            posts = [client.post(f"{url}/gateway/applications/toy_app", json={"input_1": [row]}) for row in rows]
            responses = await asyncio.gather(*posts)
    finally:
        await server.stop()
    assert [r.status_code for r in responses] == [200] * len(rows)
    assert [r.json()["output_1"] for r in responses] == [[[2 * a + 3 * b]] for a, b in rows]  # version 1
    predicts = [request for name, request in server.calls if name == "Predict"]
    assert len(predicts) < len(rows)  # some calls carried several requests' rows
    assert all(request.model_spec.HasField("version") or request.model_spec.version_label  # type: ignore[attr-defined]
               for request in predicts)


async def test_schedulers_per_version_are_capped_and_idle_ones_give_way(tmp_path: Path) -> None:
    """Versions come from requests (`/v1/models/toy/versions/N`): a scheduler each, up to a cap;
    an idle one makes room for a new one; when all are busy, requests go out on their own."""
    root = tmp_path / "config"
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy.yaml").write_text(
        "kind: Model\nname: toy\nbatching: {max_batch_size: 64, max_calls: 1}\n"
        "backend:\n  protocol: tensorflow-serving\n  target: 127.0.0.1:1\n  model_name: Toy\n"
        "contract:\n  inputs:\n    input_1: {shape: [-1, 2], type: float32}\n"
        "  outputs:\n    output_1: {shape: [-1, 1], type: float32}\n")
    model = load_config(root).models[("toy", 0)]
    pool = ChannelPool()
    backend = scheduled(connect(model, pool), "serving_default", model.signature.inputs, model.batching, None)
    assert isinstance(backend, ScheduledBackend)
    pinned = backend.scheduler
    assert pinned is not None
    made = [backend._scheduler_for(Selector(version), None, backend.specs) for version in range(1, 30)]
    assert all(scheduler is not None for scheduler in made)
    assert len(backend._schedulers) == MAX_SCHEDULERS
    assert backend._scheduler_for(None, None, backend.specs) is pinned  # never given away
    # Keyed on the values: an equal contract (not the same object) finds the same scheduler.
    assert backend._scheduler_for(Selector(29), "serving_default", dict(backend.specs)) is made[-1]
    for scheduler in backend._schedulers.values():
        scheduler.running = 1  # all busy
    assert backend._scheduler_for(Selector(99), None, backend.specs) is None
    await pool.close()


async def test_a_contract_without_a_batch_dimension_is_never_joined(tmp_path: Path) -> None:
    """A version or signature whose inputs have no leading -1 (here a scalar) goes out alone."""
    server = FakeTFServing(delay_s=0.02)
    await server.start()
    root = tmp_path / "config"
    (root / "models").mkdir(parents=True)
    (root / "models" / "errs.yaml").write_text(
        "kind: Model\nname: errs\nbatching: {max_batch_size: 64, max_calls: 1}\n"
        f"backend:\n  protocol: tensorflow-serving\n  target: {server.target}\n  model_name: Errors\n")
    write_app(root, "errs_app", "errs:1")
    try:
        async with serve_app(create_app(Settings(config_dir=root), load_config(root))) as url, \
                httpx.AsyncClient() as client:
            responses = await asyncio.gather(*(client.post(f"{url}/gateway/applications/errs_app",
                                                           json={"code": 0}) for _ in range(8)))
    finally:
        await server.stop()
    assert [(r.status_code, r.json()) for r in responses] == [(200, {"code": 0})] * 8
    assert sum(name == "Predict" for name, _ in server.calls) == 8


@pytest.mark.parametrize(("value", "error"), [
    ("2.5", None), ("0", None), ("-1", "between 0 and 10000"), ("20000", "between 0 and 10000"),
    (".nan", "between 0 and 10000"), ("soon", "expected a number"),
])
def test_max_delay_ms_in_a_manifest(tmp_path: Path, value: str, error: str | None) -> None:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    serving = config / "models/increment_model/serving.yaml"
    serving.write_text(serving.read_text() + f"batching: {{max_batch_size: 8, max_delay_ms: {value}}}\n")
    if error is None:
        model = load_config(config).models[("increment_model", 1)]
        assert model.batching == BatchingSpec(max_batch_size=8, max_calls=2, max_delay_ms=float(value))
    else:
        with pytest.raises(ConfigError, match=error):
            load_config(config)
