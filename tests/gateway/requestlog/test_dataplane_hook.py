"""The data plane's hook: every stage's call of a sampled request recorded with the stage's own
inputs, nothing looked at while no log is configured, and a record that cannot be made counted
without touching the caller's answer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gateway import registry
from gateway.backends import NDArray, Selector
from gateway.dataplane import DataPlane, RequestContext
from gateway.manifests import ApplicationManifest, ModelManifest, ModelRef, Stage, VariantManifest, load_config
from gateway.manifests.types import FileSinkSpec, RequestLogSpec
from gateway.observability import Metrics
from gateway.registry import Application, Model, Registry, Variant
from gateway.requestlog import LoggedCall
from gateway.requestlog.logs import RequestLogs
from tensorcodecs import Signature
from tensorcodecs.tensor_proto import decode_tensor
from tests.conftest import CONFIG_DIR
from tests.doubles import InMemoryBackend
from tests.gateway.requestlog.tfrecords import closed_files, index_of, read_index, read_tfrecord
from tests.waiting import wait_until


def _increment() -> ModelManifest:
    return load_config(CONFIG_DIR).models[("increment_model", 1)]


def _pipeline(models: list[Model], log: RequestLogSpec | None) -> Application:
    ref = ModelRef("increment_model", Selector(1))
    stages = tuple(registry.Stage(number, (Variant(model, 100),)) for number, model in enumerate(models, start=1))
    manifest = ApplicationManifest("app", tuple(Stage((VariantManifest(ref),)) for _ in models), "test",
                                   request_log=log)
    return Application("app", stages, Signature("app"), manifest)


def _plane(app: Application, metrics: Metrics) -> tuple[DataPlane, RequestLogs]:
    plane_registry = Registry({}, {"app": app})
    logs = RequestLogs(metrics, capacity=100, max_bytes=1 << 20)
    logs.for_registry(plane_registry)
    return DataPlane(plane_registry, metrics=metrics, request_logs=logs), logs


def _plus(amount: int) -> InMemoryBackend:
    def answer(inputs: Mapping[str, NDArray]) -> dict[str, NDArray]:
        return {"number": inputs["number"] + amount}
    return InMemoryBackend(answer)


async def test_each_stage_call_of_a_sampled_request_is_recorded_with_its_own_inputs(tmp_path: Path) -> None:
    manifest = _increment()
    app = _pipeline([Model(manifest, _plus(1)), Model(manifest, _plus(10))],
                    RequestLogSpec(1.0, FileSinkSpec(tmp_path)))
    plane, logs = _plane(app, Metrics())
    context = RequestContext.start("r1", 5)
    outputs = await plane.predict(app, {"number": np.array([1, 2], np.int32)}, context)
    assert outputs["number"].tolist() == [12, 13]
    assert context.logged is True
    logs.close(5.0)
    [file] = closed_files(tmp_path)
    lines = read_index(index_of(file))
    assert [(line["request_id"], line["stage"], line["variant"]) for line in lines] == [
        ("r1", 1, "increment_model:1"), ("r1", 2, "increment_model:1")]
    (_, _, first), (_, _, second) = read_tfrecord(file)
    assert decode_tensor(first.predict_log.request.inputs["number"]).tolist() == [1, 2]
    assert decode_tensor(second.predict_log.request.inputs["number"]).tolist() == [2, 3]  # stage 1's answer
    assert decode_tensor(second.predict_log.response.outputs["number"]).tolist() == [12, 13]


async def test_without_a_log_configured_no_call_is_looked_at(tmp_path: Path) -> None:
    app = _pipeline([Model(_increment(), _plus(1))], None)
    plane, logs = _plane(app, Metrics())
    assert logs.active is False
    context = RequestContext.start("r1", 5)
    await plane.predict(app, {"number": np.array([1], np.int32)}, context)
    assert context.logged is None
    assert list(tmp_path.iterdir()) == []


async def test_a_record_that_cannot_be_made_is_counted_and_the_caller_is_answered(tmp_path: Path) -> None:
    def odd(inputs: Mapping[str, NDArray]) -> dict[str, NDArray]:
        if inputs["number"][0] == 0:  # an answer no TensorProto can hold
            return {"number": np.array(["2026-12-01"], dtype="datetime64[D]")}
        return {"number": inputs["number"] + 1}

    metrics = Metrics()
    app = _pipeline([Model(_increment(), InMemoryBackend(odd))], RequestLogSpec(1.0, FileSinkSpec(tmp_path)))
    plane, logs = _plane(app, metrics)
    first = await plane.predict(app, {"number": np.array([0], np.int32)}, RequestContext.start("r0", 5))
    assert first["number"].dtype.kind == "M"
    second = await plane.predict(app, {"number": np.array([5], np.int32)}, RequestContext.start("r1", 5))
    assert second["number"].tolist() == [6]
    logs.close(5.0)
    [file] = closed_files(tmp_path)
    assert [line["request_id"] for line in read_index(index_of(file))] == ["r1"]
    sink = f"file:{tmp_path}"
    assert metrics.registry.get_sample_value("gateway_request_log_records_total",
                                             {"sink": sink, "outcome": "failed"}) == 1
    assert metrics.registry.get_sample_value("gateway_request_log_records_total",
                                             {"sink": sink, "outcome": "written"}) == 1


def test_a_call_in_flight_across_a_reload_reaches_its_sink_or_is_counted_dropped(tmp_path: Path) -> None:
    metrics = Metrics()
    first, moved = tmp_path / "first", tmp_path / "moved"
    spec_a = RequestLogSpec(1.0, FileSinkSpec(first), source="app.yaml:5")
    spec_b = RequestLogSpec(1.0, FileSinkSpec(first), source="app.yaml:6")  # its line moved only
    spec_c = RequestLogSpec(1.0, FileSinkSpec(moved), source="app.yaml:6")
    logs = RequestLogs(metrics, capacity=100, max_bytes=1 << 20)
    apps = {spec: _pipeline([Model(_increment(), _plus(1))], spec) for spec in (spec_a, spec_b, spec_c)}
    logs.for_registry(Registry({}, {"app": apps[spec_a]}))
    call = LoggedCall("r1", 1_780_000_000.0, 0.001, "increment_model", 1, "s", {"number": np.array([1])}, None)
    logs.keep_only(Registry({}, {"app": apps[spec_b]}))
    [kept] = logs.sinks(spec_a, None)  # a request of the old registry: the same sink
    logs.record(call, [kept])
    logs.keep_only(Registry({}, {"app": apps[spec_c]}))  # `first` closed
    [closed] = logs.sinks(spec_b, None)
    assert closed is kept
    wait_until(lambda: bool(closed_files(first)), what="the removed sink closed")
    logs.record(call, [closed])
    logs.keep_only(Registry({}, {"app": apps[spec_b]}))  # a second reload since spec_a's registry
    assert logs.sinks(spec_a, None) == []  # its sink forgotten: the call is counted dropped all the same
    logs.close(5.0)
    [file] = closed_files(first)
    assert len(read_tfrecord(file)) == 1
    assert metrics.registry.get_sample_value("gateway_request_log_records_total",
                                             {"sink": f"file:{first}", "outcome": "dropped"}) == 2
