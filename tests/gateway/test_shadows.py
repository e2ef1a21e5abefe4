"""Shadow variants: copies of a stage's requests sent once the caller's answer was sent, bounded
queues, drain, and the comparison of their answers with the live variant's.

End to end over a real uvicorn, with the TF-Serving-protocol test server (grpc.aio) or the
embedded runtime behind the gateway; the comparison's rules as pure functions; the data plane
against the backend double.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import registry
from gateway import shadows as shadows_module
from gateway.app import create_app
from gateway.backends import BackendCall, NDArray, Selector
from gateway.backends.resilience import CircuitState
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import ConfigError
from gateway.manifests import (
    ApplicationManifest,
    CompareSpec,
    ModelManifest,
    ModelRef,
    Stage,
    VariantManifest,
    load_config,
)
from gateway.observability import Metrics
from gateway.registry import Application, Model, Registry, Variant
from gateway.settings import Settings
from gateway.shadow_compare import OutputComparison, compare_outputs, preview
from gateway.shadows import ShadowTraffic
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tests.conftest import CONFIG_DIR, REPO, runtimes_for, serve_app, write_model
from tests.doubles import InMemoryBackend
from tests.gateway.test_observability import sample
from tests.tfserving_server import DEFAULT, Abort, FakeTFServing, Servable
from tests.waiting import eventually

APP = "/gateway/applications/shadowed"
X = {"x": [1.0, 2.0, 3.0]}
FLOATS = {"x": TensorSpec("x", lookup_dtype("float32"), (-1,))}
Y = {"y": TensorSpec("y", lookup_dtype("float32"), (-1,))}


# ---------------------------------------------------------------- the comparison, pure

def _compare(live: Any, shadow: Any, rtol: float = 1e-5, atol: float = 1e-8) -> tuple[bool, float | None]:
    comparison = compare_outputs({"y": np.asarray(live)}, {"y": np.asarray(shadow)}, CompareSpec(rtol, atol))[0]
    return comparison.agreed, comparison.abs_difference


def test_integers_bools_and_strings_compare_exactly() -> None:
    assert _compare(np.array([1, 2], np.int32), np.array([1, 2], np.int64)) == (True, 0.0)
    assert _compare(np.array([1, 2], np.int64), np.array([1, 3], np.int64)) == (False, 1.0)
    assert _compare(np.array([True, False]), np.array([True, True]))[0] is False
    assert _compare(np.array(["a", "b"]), np.array(["a", "b"])) == (True, None)
    assert _compare(np.array([b"a"], object), np.array([b"b"], object)) == (False, None)


def test_floats_agree_within_rtol_and_atol_as_numpy_isclose_says() -> None:
    live = np.array([100.0, 0.0], np.float32)
    assert _compare(live, live * np.float32(1.0001), rtol=1e-3)[0] is True
    agreed, difference = _compare(live, live * np.float32(1.0001))  # the default rtol: 1e-5
    assert agreed is False
    assert difference == pytest.approx(0.01, rel=1e-2)
    assert _compare(np.array([0.0]), np.array([1e-9]))[0] is True  # the default atol
    assert _compare(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == (True, 0.0)  # NaN equals NaN
    assert _compare(np.array([np.nan]), np.array([1.0])) == (False, float("inf"))


def test_a_missing_output_another_shape_or_another_kind_of_dtype_disagrees() -> None:
    spec = CompareSpec()
    missing = compare_outputs({"y": np.array([1.0])}, {"z": np.array([1.0])}, spec)[0]
    assert (missing.agreed, missing.abs_difference) == (False, None)
    assert "did not answer" in missing.reason
    shape = compare_outputs({"y": np.array([1.0, 2.0])}, {"y": np.array([[1.0, 2.0]])}, spec)[0]
    assert not shape.agreed
    assert "shape [1, 2]" in shape.reason
    kind = compare_outputs({"y": np.array([1.0])}, {"y": np.array([1])}, spec)[0]
    assert not kind.agreed
    assert "dtype int64" in kind.reason


def test_a_logged_tensor_shows_its_first_values_only() -> None:
    assert preview(np.arange(3, dtype=np.int32)) == {"dtype": "int32", "shape": [3], "values": [0, 1, 2]}
    big = preview(np.zeros((10, 10), np.float32))
    assert len(big["values"]) == 16
    assert big["truncated"] == 84
    assert big["shape"] == [10, 10]
    assert preview(np.array([b"\xff"], object))["values"] == ["\\xff"]


# ---------------------------------------------------------------- the data plane, with the double

def _shadow_model(manifest: ModelManifest, backend: InMemoryBackend) -> Model:
    """A model some application shadows: the registry gives it its unguarded shadow backend."""
    return Model(manifest, backend, shadow_backend=backend)


def _double_app(live: Model, shadow: Model, then: Model) -> Application:
    ref = ModelRef("m", Selector(1))
    first = registry.Stage(1, (Variant(live, 100),),
                           (Variant(shadow, 0, manifest=VariantManifest(ref, 0, shadow=True)),))
    manifest = ApplicationManifest("app", (Stage((VariantManifest(ref), VariantManifest(ref, 0, True))),
                                           Stage((VariantManifest(ref),))), "test")
    return Application("app", (first, registry.Stage(2, (Variant(then, 100),))), Signature("app"), manifest)


async def test_a_shadow_is_called_only_once_the_answer_was_sent_and_never_feeds_the_next_stage() -> None:
    manifest = load_config(CONFIG_DIR).models[("increment_model", 1)]
    live = InMemoryBackend(lambda inputs: {"number": inputs["number"] + 1})
    shadow = InMemoryBackend(lambda inputs: {"number": inputs["number"] * 100})
    then = InMemoryBackend(lambda inputs: {"number": inputs["number"] + 10})
    app = _double_app(Model(manifest, live), _shadow_model(manifest, shadow), Model(manifest, then))
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {"app": app}), metrics=metrics, shadows=shadows)
    context = RequestContext.start("r1", 5)
    outputs = await plane.predict(app, {"number": np.array([1], np.int32)}, context)
    assert outputs["number"].tolist() == [12]  # 1 + 1 + 10: the shadow's 100 went nowhere
    assert then.calls[0].inputs["number"].tolist() == [2]
    await asyncio.sleep(0.01)
    assert shadow.calls == []  # the answer is not sent yet
    context.answered()
    await eventually(lambda: _true(bool(shadow.calls)), what="the shadow's copy")
    assert shadow.calls[0].inputs["number"].tolist() == [1]  # its stage's input
    assert shadow.calls[0].request_id == "r1"
    await shadows.close()
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "gateway_shadow_comparisons_total", application="app", stage="1", output="number",
                  agreed="false") == 1
    assert sample(text, "gateway_backend_duration_seconds_count", model="increment_model") == 2  # live only


async def test_a_copy_made_before_a_reload_goes_to_the_variant_it_was_made_for() -> None:
    manifest = load_config(CONFIG_DIR).models[("increment_model", 1)]
    then = Model(manifest, InMemoryBackend(dict))
    old_shadow, new_shadow = InMemoryBackend(dict), InMemoryBackend(dict)
    before = _double_app(Model(manifest, InMemoryBackend(dict)), _shadow_model(manifest, old_shadow), then)
    after = _double_app(Model(manifest, InMemoryBackend(dict)), _shadow_model(manifest, new_shadow), then)
    shadows = ShadowTraffic()
    plane = DataPlane(Registry({}, {"app": before}), shadows=shadows)
    context = RequestContext.start("r2", 5)
    await plane.predict(before, {"number": np.array([1], np.int32)}, context)
    plane.registry = Registry({}, {"app": after})  # a reload's swap, before the answer went out
    context.answered()
    await eventually(lambda: _true(shadows.pending() == 0), what="the copy sent")
    assert (len(old_shadow.calls), len(new_shadow.calls)) == (1, 0)
    await shadows.close()


def _shadowed_app(live: Model, shadow: Model, *, max_concurrency: int | None = None,
                  shadow_stage: int = 1) -> Application:
    """Application `app`: one stage of `live` with `shadow` as its shadow, or (`shadow_stage` 2)
    two stages of `live`, the shadow on the second."""
    ref = ModelRef("m", Selector(1))
    shadowing = (Variant(shadow, 0, manifest=VariantManifest(ref, 0, shadow=True)),)
    stages: tuple[registry.Stage, ...]
    if shadow_stage == 1:
        stages = (registry.Stage(1, (Variant(live, 100),), shadowing),)
    else:
        stages = (registry.Stage(1, (Variant(live, 100),)), registry.Stage(2, (Variant(live, 100),), shadowing))
    manifest = ApplicationManifest("app", tuple(Stage((VariantManifest(ref),)) for _ in stages), "test",
                                   max_concurrency=max_concurrency)
    return Application("app", stages, Signature("app"), manifest)


def _increment() -> ModelManifest:
    return load_config(CONFIG_DIR).models[("increment_model", 1)]


async def _served(plane: DataPlane, app: Application, number: NDArray, request_id: str = "r") -> dict[str, NDArray]:
    """One request through `plane`, its answer then "sent" (its shadow copies queued)."""
    context = RequestContext.start(request_id, 30)
    outputs = await plane.predict(app, {"number": number}, context)
    context.answered()
    return outputs


def _outcomes(metrics: Metrics, stage: str = "1") -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {outcome: sample(text, "gateway_shadow_copies_total", application="app", stage=stage, outcome=outcome)
            for outcome in ("answered", "failed", "dropped", "drained")}


async def test_a_big_comparison_runs_off_the_event_loop_while_live_requests_are_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    big = np.arange(shadows_module.COMPARE_INLINE_ELEMENTS + 1, dtype=np.float32)
    events: list[str] = []
    release = threading.Event()

    def held_comparison(*args: Any) -> list[OutputComparison]:
        events.append("comparison started")
        # On the event loop this wait would hold every live request up until it gives up.
        events.append("compared" if release.wait(2) else "comparison gave up waiting")
        return compare_outputs(*args)

    monkeypatch.setattr(shadows_module, "compare_outputs", held_comparison)
    live = Model(_increment(), InMemoryBackend(lambda inputs: {"number": big}))
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(live, _shadow_model(_increment(), InMemoryBackend(lambda inputs: {"number": big.copy()})))
    other = Application("other", (registry.Stage(1, (Variant(Model(_increment(), InMemoryBackend(dict)), 100),)),),
                        Signature("other"), ApplicationManifest("other", (Stage((VariantManifest(ModelRef("m")),)),),
                                                                "test"))
    await _served(plane, app, np.array([1], np.int32))
    await eventually(lambda: _true("comparison started" in events), what="the comparison")
    # The comparison is under way (held); a live request of another application is answered meanwhile.
    assert (await plane.predict(other, {"number": np.array([5], np.int32)}, RequestContext.start("r2", 5)))[
        "number"].tolist() == [5]
    events.append("live request answered")
    release.set()
    await eventually(lambda: _true(shadows.pending() == 0), what="the comparison's end")
    await shadows.close()
    assert events == ["comparison started", "live request answered", "compared"]
    assert sample(generate_latest(metrics.registry).decode(), "gateway_shadow_comparisons_total",
                  application="app", output="number", agreed="true") == 1


async def test_a_shadow_queue_holds_at_most_its_byte_budget() -> None:
    number = np.zeros(1000, np.int32)  # 4000 bytes in, 4000 bytes of live answer out: 8000 a copy
    stuck = InMemoryBackend(dict, delay_s=30)
    metrics = Metrics()
    shadows = ShadowTraffic(metrics, queue_size=100, queue_bytes=20_000, concurrency=1)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), _shadow_model(_increment(), stuck))
    for n in range(4):
        await _served(plane, app, number, f"r{n}")
    # The first copy is being sent, the second waits (16000 bytes held); the third and fourth
    # would go over 20000: dropped, though the queue has room for 98 more by count.
    await eventually(lambda: _true(len(stuck.calls) == 1), what="the first copy's call")
    assert _outcomes(metrics) == {"answered": 0, "failed": 0, "dropped": 2, "drained": 0}
    await shadows.close(0.01)
    assert _outcomes(metrics)["drained"] == 2


async def test_the_live_call_of_a_compared_copy_is_measured_as_the_shadows_is() -> None:
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    live = Model(_increment(), InMemoryBackend(dict, delay_s=0.2))
    app = _shadowed_app(live, _shadow_model(_increment(), InMemoryBackend(dict)))
    await _served(plane, app, np.array([1], np.int32))
    await eventually(lambda: _true(_outcomes(metrics)["answered"] == 1), what="the shadow's answer")
    await shadows.close()
    text = generate_latest(metrics.registry).decode()
    labels = {"application": "app", "stage": "1", "shadow": "increment_model:1"}
    assert sample(text, "gateway_shadow_live_duration_seconds_count", **labels) == 1
    live_seconds = sample(text, "gateway_shadow_live_duration_seconds_sum", **labels)
    shadow_seconds = sample(text, "gateway_shadow_duration_seconds_sum", **labels)
    assert 0.2 <= live_seconds < 5
    assert shadow_seconds < 0.2  # the shadow answered at once: the mean difference is their sums' difference
    assert sample(text, "gateway_shadow_latency_difference_seconds_bucket", **labels, le="-0.1") == 1


async def test_a_shadow_on_the_second_stage_gets_the_first_stages_answer() -> None:
    shadow = InMemoryBackend(lambda inputs: {"number": inputs["number"] * 100})
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    live = Model(_increment(), InMemoryBackend(lambda inputs: {"number": inputs["number"] + 1}))
    app = _shadowed_app(live, _shadow_model(_increment(), shadow), shadow_stage=2)
    assert (await _served(plane, app, np.array([1], np.int32)))["number"].tolist() == [3]
    await eventually(lambda: _true(bool(shadow.calls)), what="the shadow's copy")
    assert shadow.calls[0].inputs["number"].tolist() == [2]  # stage 1's answer, as stage 2's live variant got it
    await shadows.close()
    text = generate_latest(metrics.registry).decode()
    assert sample(text, "gateway_shadow_comparisons_total", application="app", stage="2", output="number",
                  agreed="false") == 1  # 200 against the live 3
    assert _outcomes(metrics, "1") == {"answered": 0, "failed": 0, "dropped": 0, "drained": 0}


async def _called(backend: InMemoryBackend, times: int) -> bool:
    return len(backend.calls) == times


@pytest.mark.parametrize("limit", ["gateway", "application"])
async def test_shadow_calls_under_way_count_against_no_concurrency_limit(limit: str) -> None:
    slow = InMemoryBackend(dict, delay_s=30)
    shadows = ShadowTraffic(concurrency=2)
    plane = DataPlane(Registry({}, {}), max_concurrency=1 if limit == "gateway" else 1024, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), _shadow_model(_increment(), slow),
                        max_concurrency=1 if limit == "application" else None)
    for n in range(3):  # each while the shadow's calls of the ones before still run
        assert (await _served(plane, app, np.array([n], np.int32)))["number"].tolist() == [n]
        await eventually(functools.partial(_called, slow, min(n + 1, 2)), what="the shadow's call")
    assert shadows.pending() == 3
    await shadows.close(0.01)


async def test_a_shadow_model_without_a_shadow_backend_fails_loudly_never_through_the_live_path(
        caplog: pytest.LogCaptureFixture) -> None:
    backend = InMemoryBackend(dict)
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), Model(_increment(), backend))
    with caplog.at_level(logging.ERROR, "gateway.shadow"):
        for n in range(2):
            await _served(plane, app, np.array([n], np.int32))
        await eventually(lambda: _true(_outcomes(metrics)["failed"] == 2), what="the failed copies")
    await shadows.close()
    assert backend.calls == []  # its live backend (breaker, scheduler, limits) was never used instead
    assert [record.message for record in caplog.records] == [
        "shadow increment_model:1 of application app has no shadow backend: its copies fail"]  # once


async def test_no_copy_is_made_once_the_gateway_drains() -> None:
    shadow = InMemoryBackend(dict)
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), _shadow_model(_increment(), shadow))
    draining = False
    shadows.draining = lambda: draining
    await _served(plane, app, np.array([1], np.int32))
    await eventually(lambda: _true(_outcomes(metrics)["answered"] == 1), what="the copy before the drain")
    draining = True
    assert (await _served(plane, app, np.array([2], np.int32)))["number"].tolist() == [2]
    await shadows.close()
    assert len(shadow.calls) == 1
    assert _outcomes(metrics) == {"answered": 1, "failed": 0, "dropped": 0, "drained": 1}


async def test_a_reload_retires_the_queues_of_the_shadows_it_removed() -> None:
    slow = InMemoryBackend(dict, delay_s=0.1)
    metrics = Metrics()
    shadows = ShadowTraffic(metrics, concurrency=1, drain_timeout_s=30)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), _shadow_model(_increment(), slow))
    for n in range(3):
        await _served(plane, app, np.array([n], np.int32))
    workers = [task for task in asyncio.all_tasks() if task.get_name().startswith("shadow app/")]
    assert len(workers) == 1
    shadows.keep_only(Registry({}, {}))  # the reload removed the application
    await _served(plane, app, np.array([9], np.int32))  # made before the swap, queued after it
    await eventually(lambda: _true(workers[0].done()), what="the retired queue's worker to end")
    assert [call.inputs["number"].tolist() for call in slow.calls] == [[0], [1], [2]]  # queued: still sent
    assert _outcomes(metrics) == {"answered": 3, "failed": 0, "dropped": 0, "drained": 1}
    assert shadows.pending() == 0
    await shadows.close()


async def test_a_retired_queue_drops_what_is_left_after_the_drain_timeout() -> None:
    stuck = InMemoryBackend(dict, delay_s=30)
    metrics = Metrics()
    shadows = ShadowTraffic(metrics, concurrency=1, drain_timeout_s=0.2)
    plane = DataPlane(Registry({}, {}), metrics=metrics, shadows=shadows)
    app = _shadowed_app(Model(_increment(), InMemoryBackend(dict)), _shadow_model(_increment(), stuck))
    for n in range(3):
        await _served(plane, app, np.array([n], np.int32))
    await eventually(lambda: _true(len(stuck.calls) == 1), what="the first copy's call")
    shadows.keep_only(Registry({}, {}))
    await eventually(lambda: _true(_outcomes(metrics)["drained"] == 3), what="the rest drained")
    assert not [task for task in asyncio.all_tasks() if "shadow app/" in task.get_name()]
    assert shadows.pending() == 0
    await shadows.close()


async def test_a_failing_job_after_the_answer_is_logged_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []
    context = RequestContext.start("r7", 5)
    context.after_answer += [lambda: 1 / 0, lambda: ran.append("second")]
    with caplog.at_level(logging.ERROR, "gateway.dataplane"):
        assert context.answered() == 1
    assert ran == ["second"]
    assert "request r7: a job run after the answer failed" in caplog.text
    assert "ZeroDivisionError" in caplog.text


async def test_a_shadow_that_cannot_get_its_copy_is_counted_never_the_callers_error(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    shadows = ShadowTraffic(metrics)

    def broken(target: Any) -> None:
        raise RuntimeError("no inputs")

    live = InMemoryBackend(dict)
    app = _shadowed_app(Model(_increment(), live), _shadow_model(_increment(), InMemoryBackend(dict)))
    stage = app.stages[0]
    context = RequestContext.start("r8", 5)
    prediction = await live.predict(BackendCall({"number": np.array([1])}, 5, "r8"))
    with caplog.at_level(logging.ERROR, "gateway.shadow"):
        shadows.copy(app, stage, stage.live[0], {"number": np.array([1])}, prediction, 0.01, context, broken)
    assert context.after_answer == []
    assert _outcomes(metrics)["failed"] == 1
    assert "request r8: no copy for shadow increment_model:1 of application app" in caplog.text


MULTIPROCESS = """
import sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from gateway.observability import Metrics

metrics = Metrics()
labels = ("app", "1", "s:1")
metrics.shadow_copies.labels(*labels, "answered").inc()
metrics.shadow_comparisons.labels(*labels, "y", "true").inc()
metrics.shadow_agreement.labels(*labels, "y").set(0.75)
metrics.shadow_abs_difference.labels(*labels, "y").observe(0.5)
metrics.shadow_latency_difference.labels(*labels).observe(-0.01)
metrics.shadow_live_seconds.labels(*labels).observe(0.02)
registry = CollectorRegistry()
MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_the_shadow_metrics_work_in_multiprocess_mode(tmp_path: Path) -> None:
    """With --workers N every worker's values are collected from PROMETHEUS_MULTIPROC_DIR."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    text = subprocess.run([sys.executable, "-c", MULTIPROCESS], env=env, cwd=REPO, capture_output=True,
                          text=True, check=True, timeout=60).stdout
    labels = {"application": "app", "stage": "1", "shadow": "s:1"}
    assert sample(text, "gateway_shadow_copies_total", **labels, outcome="answered") == 1
    assert sample(text, "gateway_shadow_comparisons_total", **labels, output="y", agreed="true") == 1
    assert sample(text, "gateway_shadow_agreement_ratio", **labels, output="y") == 0.75
    assert sample(text, "gateway_shadow_abs_difference_count", **labels, output="y") == 1
    assert sample(text, "gateway_shadow_latency_difference_seconds_bucket", **labels, le="-0.01") == 1
    assert sample(text, "gateway_shadow_live_duration_seconds_sum", **labels) == 0.02


async def _true(value: bool) -> bool:
    return value


def predictions(server: FakeTFServing) -> int:
    """Predict calls the server got (health checks aside)."""
    return sum(1 for method, _ in server.calls if method == "Predict")


# ---------------------------------------------------------------- end to end

def _servable(function: Callable[[NDArray], NDArray]) -> Servable:
    signature = Signature(DEFAULT, FLOATS, Y)
    return Servable({DEFAULT: (signature, lambda inputs: {"y": function(inputs["x"]).astype(np.float32)})})


def _fail(x: NDArray) -> NDArray:
    raise Abort(grpc.StatusCode.UNAVAILABLE, "the shadow is down")


def _remote(name: str, target: str, model_name: str) -> str:
    return (f"kind: Model\nname: {name}\nbackend:\n  protocol: tensorflow-serving\n  target: {target}\n"
            f"  model_name: {model_name}\n  version: 1\ncontract:\n  inputs:\n    x: {{type: float32, shape: [-1]}}\n"
            "  outputs:\n    y: {type: float32, shape: [-1]}\n")


def write_shadowed(directory: Path, live_target: str, shadows: Mapping[str, tuple[str, str, str]],
                   app_extra: str = "") -> Path:
    """A config whose application `shadowed` has one stage: `live` (model Live at `live_target`)
    and a shadow per entry of `shadows` (name -> (target, TF model name, extra variant fields))."""
    (directory / "models").mkdir(parents=True)
    (directory / "applications").mkdir()
    (directory / "models" / "live.yaml").write_text(_remote("live", live_target, "Live"))
    variants = ["    - {model: live}"]
    for name, (target, model_name, extra) in shadows.items():
        (directory / "models" / f"{name}.yaml").write_text(_remote(name, target, model_name))
        variants.append(f"    - {{model: {name}, shadow: true{', ' + extra if extra else ''}}}")
    (directory / "applications" / "shadowed.yaml").write_text(
        "kind: Application\nname: shadowed\npipeline:\n  -\n" + "\n".join(variants) + f"\n{app_extra}\n")
    return directory


@contextlib.asynccontextmanager
async def tf_serving(**models: Callable[[NDArray], NDArray]) -> AsyncIterator[FakeTFServing]:
    server = FakeTFServing(repository={name: {1: _servable(function)} for name, function in models.items()})
    await server.start()
    try:
        yield server
    finally:
        if server.hold is not None:
            server.hold.set()
        await server.stop()


@contextlib.asynccontextmanager
async def gateway(config_dir: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(Settings(config_dir=config_dir, access_log=False, **settings), load_config(config_dir))
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client, app


async def copies(client: httpx.AsyncClient, shadow: str) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {outcome: sample(text, "gateway_shadow_copies_total", application="shadowed", stage="1",
                            shadow=shadow, outcome=outcome)
            for outcome in ("answered", "failed", "dropped", "drained")}


async def settled(client: httpx.AsyncClient, shadow: str, total: int, timeout: float = 20) -> dict[str, float]:
    """The copies' outcomes once `total` of them have one."""
    async def done() -> bool:
        return sum((await copies(client, shadow)).values()) >= total
    await eventually(done, timeout, f"{total} copies for {shadow}")
    return await copies(client, shadow)


async def test_an_agreeing_shadow_gets_every_copy_and_agrees(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x * 2, Agree=lambda x: x + x) as server:
        config = write_shadowed(tmp_path / "config", server.target, {"agree": (server.target, "Agree", "")})
        async with gateway(config) as (client, _):
            for start in range(0, 500, 25):
                answers = await asyncio.gather(*(client.post(APP, json={"x": [float(n), 1.0]})
                                                 for n in range(start, start + 25)))
                for n, answer in zip(range(start, start + 25), answers, strict=True):
                    assert answer.status_code == 200
                    assert answer.json() == {"y": [2.0 * n, 2.0]}
                    assert answer.headers["x-gateway-variants"] == "live:1"
                await settled(client, "agree:1", start + 25)  # 25 copies at a time: the queue holds 100
            outcomes = await copies(client, "agree:1")
            text = (await client.get("/metrics")).text
    assert outcomes["answered"] >= 495  # >= 99 %
    labels = {"application": "shadowed", "stage": "1", "shadow": "agree:1", "output": "y"}
    assert sample(text, "gateway_shadow_agreement_ratio", **labels) == 1.0
    assert sample(text, "gateway_shadow_comparisons_total", **labels, agreed="true") == outcomes["answered"]
    assert sample(text, "gateway_shadow_comparisons_total", **labels, agreed="false") == 0
    assert sample(text, "gateway_shadow_abs_difference_bucket", **labels, le="0.0") == outcomes["answered"]
    assert sample(text, "gateway_shadow_latency_difference_seconds_count", shadow="agree:1") == outcomes["answered"]
    # Shadow calls are in the shadow metrics only, never in the live path's.
    assert sample(text, "gateway_backend_duration_seconds_count", model="live") == 500
    assert 'model="agree"' not in text


async def test_a_disagreeing_shadow_is_measured_and_logged_with_both_answers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with tf_serving(Live=lambda x: x * 2, Wrong=lambda x: x * 2 + 0.5,
                          Close=lambda x: x * 2 * np.float32(1.0001)) as server:
        config = write_shadowed(tmp_path / "config", server.target,
                                {"wrong": (server.target, "Wrong", ""),
                                 "close": (server.target, "Close", "compare: {rtol: 0.001}")})
        caplog.set_level(logging.INFO, logger="gateway.shadow")
        async with gateway(config, shadow_log_sample=1.0) as (client, _):
            for _ in range(4):
                answer = await client.post(APP, json=X, headers={"x-request-id": "req-7"})
                assert answer.json() == {"y": [2.0, 4.0, 6.0]}
            await settled(client, "wrong:1", 4)
            await settled(client, "close:1", 4)
            text = (await client.get("/metrics")).text
    off = {"application": "shadowed", "stage": "1", "shadow": "wrong:1", "output": "y"}
    assert sample(text, "gateway_shadow_agreement_ratio", **off) == 0.0
    assert sample(text, "gateway_shadow_comparisons_total", **off, agreed="false") == 4
    assert sample(text, "gateway_shadow_abs_difference_count", **off) == 4
    assert sample(text, "gateway_shadow_abs_difference_sum", **off) == pytest.approx(2.0)
    assert sample(text, "gateway_shadow_abs_difference_bucket", **off, le="0.1") == 0
    assert sample(text, "gateway_shadow_abs_difference_bucket", **off, le="1.0") == 4
    close = {**off, "shadow": "close:1"}
    assert sample(text, "gateway_shadow_agreement_ratio", **close) == 1.0  # within its rtol
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "gateway.shadow"]
    assert len(lines) == 4
    assert {line["shadow"] for line in lines} == {"wrong:1"}
    line = lines[0]
    assert line["request_id"] == "req-7"
    assert line["application"] == "shadowed"
    assert line["stage"] == 1
    assert line["live"] == "live:1"
    assert line["outputs"] == ["y"]
    assert line["live_answer"]["y"]["values"] == [2.0, 4.0, 6.0]
    assert line["shadow_answer"]["y"]["values"] == [2.5, 4.5, 6.5]
    assert line["differences"]["y"]["max_abs_difference"] == pytest.approx(0.5)


async def test_a_sampled_shadow_gets_about_its_share(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x, Half=lambda x: x) as server:
        config = write_shadowed(tmp_path / "config", server.target, {"half": (server.target, "Half", "sample: 0.5")})
        async with gateway(config) as (client, app):
            shadows = app.state.dataplane.shadows
            for _ in range(16):
                await asyncio.gather(*(client.post(APP, json=X) for _ in range(25)))
                await eventually(lambda: _true(shadows.pending() == 0), what="the copies sent")
            outcomes = await copies(client, "half:1")
    assert 140 <= outcomes["answered"] <= 260  # 400 requests, p = 0.5: within 6 standard deviations
    assert outcomes["failed"] == outcomes["dropped"] == 0


async def test_a_failing_shadow_leaves_answers_intact_and_the_live_circuit_closed(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x + 1, Failing=_fail) as server:  # one target for both
        config = write_shadowed(tmp_path / "config", server.target, {"failing": (server.target, "Failing", "")})
        async with gateway(config, circuit_failures=2, retry_attempts=1) as (client, app):
            for _ in range(8):
                answer = await client.post(APP, json=X)
                assert answer.status_code == 200
                assert answer.json() == {"y": [2.0, 3.0, 4.0]}
            outcomes = await settled(client, "failing:1", 8)
            assert app.state.reloader.pool.breaker(server.target).state is CircuitState.CLOSED
            text = (await client.get("/metrics")).text
    assert outcomes["failed"] == 8
    assert 'model="failing"' not in text  # no live backend error nor latency for the shadow
    assert sample(text, "gateway_circuit_state", target=server.target) == 0


class HoldLastSend:
    """Outermost layer: an answer starts only once no shadow copy is queued or being sent (had
    one been made before the answer was sent, its call comes first); its last message is handed
    to the server, then the layer waits until the client says it has received the whole answer;
    only then does the app below learn that its last send returned."""

    def __init__(self, app: ASGIApp, received: asyncio.Event, events: list[str],
                 shadows: Callable[[], ShadowTraffic]) -> None:
        self.app, self.received, self.events, self.shadows = app, received, events, shadows

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/gateway/"):
            await self.app(scope, receive, send)
            return

        async def holding(message: Message) -> None:
            if message["type"] == "http.response.start":
                async with asyncio.timeout(5):
                    while self.shadows().pending() and "shadow called" not in self.events:
                        await asyncio.sleep(0.005)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await asyncio.wait_for(self.received.wait(), 5)
                self.events.append("last send returned")

        await self.app(scope, receive, holding)


async def test_the_shadow_is_called_only_after_the_client_received_the_answer(tmp_path: Path) -> None:
    events: list[str] = []

    def shadow(x: NDArray) -> NDArray:
        events.append("shadow called")
        return x

    async with tf_serving(Live=lambda x: x, Shadow=shadow) as server:
        config = write_shadowed(tmp_path / "config", server.target, {"shadow": (server.target, "Shadow", "")})
        app = create_app(Settings(access_log=False), load_config(config))
        received = asyncio.Event()
        app.add_middleware(HoldLastSend, received=received, events=events,
                           shadows=lambda: app.state.dataplane.shadows)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            answer = await client.post(APP, json=X)
            events.append("client received the answer")
            assert answer.json() == {"y": [1.0, 2.0, 3.0]}
            received.set()
            await settled(client, "shadow:1", 1)
    assert events == ["client received the answer", "last send returned", "shadow called"]


async def test_a_full_queue_drops_copies_and_shutdown_drains_the_rest(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x) as live, tf_serving(Stuck=lambda x: x) as stuck:
        config = write_shadowed(tmp_path / "config", live.target, {"stuck": (stuck.target, "Stuck", "")})
        app = create_app(Settings(access_log=False, shadow_queue_size=1, shadow_concurrency=1,
                                  drain_timeout_s=0.2), load_config(config))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            stuck.hold = asyncio.Event()  # the shadow's calls wait until the test ends
            for _ in range(5):
                assert (await client.post(APP, json=X)).status_code == 200
            # One copy is being sent, one waits in the queue, the other three found it full.
            await eventually(lambda: _true(predictions(stuck) == 1), what="the first copy's call")
            assert await copies(client, "stuck:1") == {"answered": 0, "failed": 0, "dropped": 3, "drained": 0}
            stopping = time.monotonic()
        stopped = time.monotonic() - stopping
        text = generate_latest(app.state.metrics.registry).decode()
    assert stopped < 5  # a shadow call under way does not hold up shutdown
    labels = {"application": "shadowed", "stage": "1", "shadow": "stuck:1"}
    assert sample(text, "gateway_shadow_copies_total", **labels, outcome="drained") == 2  # queued + cancelled
    assert sample(text, "gateway_shadow_copies_total", **labels, outcome="dropped") == 3


SLOW = "import asyncio\n\nasync def predict(x):\n    await asyncio.sleep(3)\n    return {'y': x + 1}\n"
INCREMENT = "def predict(x):\n    return {'y': x + 1}\n"


async def test_a_slow_shadow_on_the_embedded_runtime_neither_delays_nor_limits_the_caller(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "inc", "inc", INCREMENT)
    write_model(root, "slow", "slow", SLOW)
    (root / "applications").mkdir()
    (root / "applications" / "shadowed.yaml").write_text(
        "kind: Application\nname: shadowed\ntimeout_s: 2\nmax_concurrency: 1\npipeline:\n"
        "  - [{model: inc}, {model: slow, shadow: true}]\n")
    with runtimes_for(load_config(root)) as config:
        app = create_app(Settings(access_log=False, drain_timeout_s=0.2), config)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            for n in range(4):  # each while the copies before it still run (or wait)
                started = time.monotonic()
                answer = await client.post(APP, json={"x": [n]})
                assert (answer.status_code, answer.json()) == (200, {"y": [n + 1]})
                assert time.monotonic() - started < 1  # well before the shadow's 2 s deadline (and 3 s sleep)
            outcomes = await settled(client, "slow:1", 2, timeout=10)  # the first two hit their deadline
            assert outcomes["failed"] >= 2
            assert outcomes["answered"] == 0


def test_the_shadow_settings_come_from_their_section_of_gateway_yaml(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "kind: Gateway\nshadows: {shadow_queue_size: 5, shadow_concurrency: 3, shadow_log_sample: 0,\n"
        "          shadow_queue_bytes: 1000}\n")
    settings = Settings.load(tmp_path, load_config(tmp_path).gateway.values, env={})
    assert (settings.shadow_queue_size, settings.shadow_concurrency, settings.shadow_log_sample) == (5, 3, 0.0)
    assert settings.shadow_queue_bytes == 1000
    assert Settings().shadow_queue_bytes == 64 << 20
    assert Settings.load(tmp_path, env={"GATEWAY_SHADOW_LOG_SAMPLE": "1"}).shadow_log_sample == 1.0
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\nshadows: {shadow_log_sample: 1.5}\n")
    with pytest.raises(ConfigError, match=r"shadow_log_sample must be between 0\.0 and 1\.0"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="shadow_queue_size must be greater than 0"):
        Settings.load(tmp_path, env={"GATEWAY_SHADOW_QUEUE_SIZE": "0"})


async def test_a_draining_gateway_makes_no_copies_and_a_failing_copy_job_is_counted(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x, Shadow=lambda x: x) as server:
        config = write_shadowed(tmp_path / "config", server.target, {"shadow": (server.target, "Shadow", "")})
        async with gateway(config) as (client, app):
            assert (await client.post(APP, json=X)).status_code == 200
            assert await settled(client, "shadow:1", 1) == {"answered": 1, "failed": 0, "dropped": 0, "drained": 0}
            shadows = app.state.dataplane.shadows

            def broken(copy: Any) -> None:
                raise RuntimeError("the queue is broken")

            shadows.submit = broken  # a fault in a job run after the answer
            answer = await client.post(APP, json=X)
            assert (answer.status_code, answer.json()) == (200, {"y": [1.0, 2.0, 3.0]})
            await eventually(lambda: _true(sample(generate_latest(app.state.metrics.registry).decode(),
                                                  "gateway_after_answer_errors_total") == 1), what="the count")
            del shadows.submit
            app.state.draining = True  # SIGTERM: /health/ready says 503, requests are still served
            assert (await client.post(APP, json=X)).status_code == 200
            assert await settled(client, "shadow:1", 2) == {"answered": 1, "failed": 0, "dropped": 0, "drained": 1}


async def test_a_reload_removing_a_shadow_ends_its_workers_and_its_late_copies_count_drained(tmp_path: Path) -> None:
    async with tf_serving(Live=lambda x: x) as live, tf_serving(Stuck=lambda x: x) as stuck:
        config = write_shadowed(tmp_path / "config", live.target, {"stuck": (stuck.target, "Stuck", "")})
        async with gateway(config, shadow_concurrency=1, drain_timeout_s=0.5) as (client, _app):
            stuck.hold = asyncio.Event()  # its calls wait until the test ends
            for _ in range(3):
                assert (await client.post(APP, json=X)).status_code == 200
            await eventually(lambda: _true(predictions(stuck) == 1), what="the first copy's call")
            workers = [task for task in asyncio.all_tasks() if task.get_name() == "shadow shadowed/1/stuck:1"]
            assert len(workers) == 1
            (config / "applications" / "shadowed.yaml").write_text(
                "kind: Application\nname: shadowed\nsingular: {model: live}\n")
            assert (await client.post("/admin/reload")).status_code == 200
            assert (await client.post(APP, json=X)).status_code == 200  # no shadow any more
            # The drain timeout passed: the call under way and the two queued copies are dropped
            # before the reload closes the shadow's channel (never counted as its failures).
            await eventually(lambda: _true(workers[0].done()), what="the removed shadow's worker to end")
            assert await copies(client, "stuck:1") == {"answered": 0, "failed": 0, "dropped": 0, "drained": 3}
