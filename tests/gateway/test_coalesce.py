"""Opt-in coalescing: concurrent requests to one model share backend calls."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from gateway.backends.base import NDArray, Prediction
from gateway.backends.coalesce import Coalescer
from gateway.errors import BackendError, ConfigError, ModelError
from gateway.manifests import BatchingSpec, load_config
from tests.conftest import REPO


class Model:
    """Adds 1 to every row after a short pause; records the batch sizes it was called with."""

    def __init__(self, fail: bool = False, drop_row: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.drop_row = drop_row

    async def __call__(self, inputs: Mapping[str, NDArray], timeout: float) -> Prediction:
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
        answer = await coalescer.predict({"x": np.array([i])}, 1.0)
        assert answer.outputs["y"].tolist() == [i + 1]
    assert model.batches == [1, 1, 1]


async def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    model = Model()
    coalescer = Coalescer(model, "t", max_batch_size=100, max_calls=1)
    answers = await asyncio.gather(*(coalescer.predict({"x": np.array([i, 10 * i])}, 1.0)
                                     for i in range(20)))
    assert [a.outputs["y"].tolist() for a in answers] == [[i + 1, 10 * i + 1] for i in range(20)]
    assert model.batches == [2, 38]  # the first alone, the rest together
    assert coalescer.running == 0


async def test_batches_stay_within_max_batch_size() -> None:
    model = Model()
    coalescer = Coalescer(model, "t", max_batch_size=4, max_calls=1)
    await asyncio.gather(*(coalescer.predict({"x": np.array([i])}, 1.0) for i in range(10)))
    assert max(model.batches) <= 4
    assert sum(model.batches) == 10


async def test_a_failed_call_fails_every_request_in_it() -> None:
    coalescer = Coalescer(Model(fail=True), "t", max_batch_size=100, max_calls=1)
    results = await asyncio.gather(*(coalescer.predict({"x": np.array([i])}, 1.0) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, ModelError) for r in results)


async def test_an_answer_without_one_row_per_input_row_is_a_backend_error() -> None:
    coalescer = Coalescer(Model(drop_row=True), "t", max_batch_size=100, max_calls=1)
    results = await asyncio.gather(*(coalescer.predict({"x": np.array([i])}, 1.0) for i in range(3)),
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
