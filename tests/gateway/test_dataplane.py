"""The core against in-memory backends: stages, deadlines, readiness of failed models."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pytest

from gateway.backends import NDArray, UnavailableBackend
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BackendUnavailable, DeadlineExceeded, NotFound
from gateway.manifests import ApplicationManifest, ModelRef, Stage, load_config
from gateway.manifests import Variant as VariantManifest
from gateway.registry import Application, Model, Registry, Variant
from tensorcodecs import Signature
from tests.conftest import CONFIG_DIR
from tests.doubles import InMemoryBackend

MANIFEST = load_config(CONFIG_DIR).models[("increment_model", 1)]


def _model(backend: InMemoryBackend | UnavailableBackend) -> Model:
    return Model(MANIFEST, backend)


def _app(*models: Model) -> Application:
    stages = tuple((Variant(m, 100),) for m in models)
    ref = ModelRef(MANIFEST.name, MANIFEST.version)
    manifest = ApplicationManifest("app", tuple(Stage((VariantManifest(ref),)) for _ in models), "test")
    return Application("app", stages, Signature("app"), manifest)


def _add_one(inputs: Mapping[str, NDArray]) -> dict[str, NDArray]:
    return {"number": inputs["number"] + 1}


async def test_stages_feed_each_other() -> None:
    first, second = InMemoryBackend(_add_one), InMemoryBackend(_add_one)
    app = _app(_model(first), _model(second))
    plane = DataPlane(Registry({}, {"app": app}))
    outputs = await plane.predict(app, {"number": np.array([1], np.int32)}, RequestContext.start("r", 5))
    assert outputs["number"].tolist() == [3]
    assert second.calls[0][0]["number"].tolist() == [2]


async def test_each_stage_gets_what_is_left_of_the_deadline() -> None:
    first, second = InMemoryBackend(_add_one, delay_s=0.05), InMemoryBackend(_add_one)
    app = _app(_model(first), _model(second))
    await DataPlane(Registry({}, {})).predict(app, {"number": np.array([1])}, RequestContext.start("r", 1.0))
    first_timeout, second_timeout = first.calls[0][1], second.calls[0][1]
    assert first_timeout <= 1.0
    assert second_timeout <= first_timeout - 0.04


async def test_a_passed_deadline_is_reported() -> None:
    app = _app(_model(InMemoryBackend(_add_one)))
    context = RequestContext("r", time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        await DataPlane(Registry({}, {})).predict(app, {"number": np.array([1])}, context)


async def test_unavailable_backend_says_why() -> None:
    app = _app(_model(UnavailableBackend("model increment_model:1 is unavailable: exited with code 2")))
    with pytest.raises(BackendUnavailable, match="exited with code 2") as caught:
        await DataPlane(Registry({}, {})).predict(app, {"number": np.array([1])},
                                                  RequestContext.start("r", 1))
    assert caught.value.status == 503


def test_unknown_application() -> None:
    with pytest.raises(NotFound, match="application 'x' does not exist"):
        DataPlane(Registry({}, {})).application("x")
