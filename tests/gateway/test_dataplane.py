"""The core against in-memory backends: stages, deadlines, readiness of failed models."""

from __future__ import annotations

import ast
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from gateway import dataplane, registry
from gateway.backends import Backend, NDArray, Selector, UnavailableBackend
from gateway.backends.capabilities import (
    Classifies,
    HasMetadata,
    Regresses,
    ReloadsConfig,
    ReportsStatus,
    ServerConfig,
)
from gateway.backends.pool import ChannelPool
from gateway.backends.scheduling import ScheduledBackend, scheduled
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BackendUnavailable, DeadlineExceeded, NotFound
from gateway.manifests import (
    ApplicationManifest,
    BatchingSpec,
    ModelManifest,
    ModelRef,
    Stage,
    VariantManifest,
    load_config,
)
from gateway.registry import BACKENDS, Application, Model, Registry, Target, Variant
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigResponse
from tensorcodecs import Signature
from tests.conftest import CONFIG_DIR
from tests.doubles import InMemoryBackend
from tests.gateway.test_tfserving_api import write_config

MANIFEST = load_config(CONFIG_DIR).models[("increment_model", 1)]


def _model(backend: Backend) -> Model:
    return Model(MANIFEST, backend)


def _app(*models: Model) -> Application:
    stages = tuple(registry.Stage(n, (Variant(m, 100),)) for n, m in enumerate(models, start=1))
    ref = ModelRef(MANIFEST.name, Selector(MANIFEST.version))
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


def _plane(*models: Model) -> DataPlane:
    return DataPlane(Registry({(m.manifest.name, m.manifest.version): m for m in models}, {}))


async def test_a_selector_reaches_the_backend_in_the_call() -> None:
    backend = InMemoryBackend(_add_one, versions={2: {"serving_default": lambda i: {"number": i["number"] * 10}}})
    plane = _plane(_model(backend))
    target = Target(plane.registry.models[(MANIFEST.name, MANIFEST.version)], Selector(2))
    context = RequestContext.start("r-7", 5)
    prediction = await plane.predict_model(target, {"number": np.array([3])}, context)
    assert prediction.outputs["number"].tolist() == [30]
    assert (backend.calls[0].selector, backend.calls[0].request_id) == (Selector(2), "r-7")
    assert context.labels["version"] == "2"  # the version the backend answered with


async def test_a_backend_that_cannot_describe_is_not_found_one_that_is_unavailable_says_why() -> None:
    plane = _plane(_model(InMemoryBackend(_add_one)))
    target = plane.registry.resolve(MANIFEST.name)
    with pytest.raises(NotFound, match=r"model increment_model:1 does not describe its signatures"):
        await plane.signature(target, "other", RequestContext.start("r", 5))
    down = _plane(_model(UnavailableBackend("model increment_model:1 is unavailable: exited with code 2")))
    with pytest.raises(BackendUnavailable, match="exited with code 2"):
        await down.signature(down.registry.resolve(MANIFEST.name), "other", RequestContext.start("r", 5))


async def test_a_capability_is_asked_for_in_one_place() -> None:
    model = _model(InMemoryBackend(_add_one))
    with pytest.raises(NotFound, match="model increment_model:1 is not served by a TensorFlow Serving backend"):
        _plane(model).capability(model, ReportsStatus)
    down = _model(UnavailableBackend("model increment_model:1 is unavailable: exited with code 2"))
    with pytest.raises(BackendUnavailable, match="exited with code 2"):  # offered, and says why it cannot
        await _plane(down).capability(down, ReportsStatus).status(1.0)
    for kind in (Classifies, Regresses, ReportsStatus, HasMetadata, ReloadsConfig):  # each, and wrapped
        wrapped = _model(scheduled(down.backend, "serving_default", {}, BatchingSpec(8, 1), None))
        for each in (down, wrapped):
            with pytest.raises(BackendUnavailable, match="exited with code 2"):
                _plane(each).capability(each, kind)


class OwnMetadata(InMemoryBackend):
    """Another protocol's backend with a `metadata` and a `status` of its own, offering no capability."""

    async def metadata(self, timeout: float, selector: Selector | None = None, request_id: str = "") -> dict[str, str]:
        return {"protocol": "another"}

    async def status(self, timeout: float, selector: Selector | None = None, request_id: str = "") -> str:
        return "READY"


async def test_capabilities_are_what_a_backend_declares_not_its_method_names() -> None:
    model = _model(OwnMetadata(_add_one))
    for kind in (HasMetadata, ReportsStatus):
        with pytest.raises(NotFound, match="is not served by a TensorFlow Serving backend"):
            _plane(model).capability(model, kind)
    declared = _model(Reloading(_add_one))
    answered: object = _plane(declared).capability(declared, ReloadsConfig)
    assert answered is declared.backend


class Reloading(InMemoryBackend):
    """A double that offers ReloadsConfig (and says so), recording the request of each reload."""

    capabilities = frozenset({ReloadsConfig})

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reloads: list[str] = []

    async def reload_config(self, config: ServerConfig, timeout: float, request_id: str = "") -> ReloadConfigResponse:
        self.reloads.append(request_id)
        return ReloadConfigResponse()


async def test_contracts_of_every_model_on_a_server_are_forgotten_together() -> None:
    same, other = Reloading(_add_one, target="a:1"), InMemoryBackend(_add_one, target="b:1")
    first = _model(same)
    second = Model(dataclasses.replace(MANIFEST, version=2), InMemoryBackend(_add_one, target="a:1"))
    third = Model(dataclasses.replace(MANIFEST, version=3), other)
    for model in (first, second, third):
        model.contracts.by_selector[None] = {"serving_default": Signature("serving_default")}
    await _plane(first, second, third).reload_config(first, ServerConfig(), RequestContext.start("r-9", 1.0))
    assert [bool(m.contracts.by_selector) for m in (first, second, third)] == [False, False, True]
    assert same.reloads == ["r-9"]  # the request's id, in the call


async def test_the_backend_of_a_manifest_comes_from_its_protocol_row(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """A protocol is a module and a row in `registry.BACKENDS`: the registry builds what the row
    makes, the scheduling wrapper around it when the model batches, and requests reach it."""
    made: list[InMemoryBackend] = []

    def connect(manifest: ModelManifest, pool: ChannelPool, *, guarded: bool = True) -> InMemoryBackend:
        made.append(InMemoryBackend(lambda inputs: {"output_1": inputs["input_1"][:, :1] * 2},
                                    target=manifest.backend.target if manifest.backend else ""))
        return made[-1]

    monkeypatch.setitem(BACKENDS, "tensorflow-serving", connect)
    config = write_config(tmp_path / "config", "127.0.0.1:1")
    toy = config.models[("toy_one", 1)]
    config = dataclasses.replace(config, models={**config.models, ("toy_one", 1): dataclasses.replace(
        toy, batching=BatchingSpec(8, 1))})
    registry = Registry.build(config, ChannelPool())
    backend = registry.models[("toy_one", 1)].backend
    assert isinstance(backend, ScheduledBackend)
    assert backend.inner in made
    prediction = await DataPlane(registry).predict_model(registry.resolve("toy_one"),
                                                         {"input_1": np.array([[1.0, 2.0]])},
                                                         RequestContext.start("r", 5))
    assert prediction.outputs["output_1"].tolist() == [[2.0]]


def test_the_data_plane_imports_no_protocol_module() -> None:
    """The core speaks to backends through the interface alone: adding a protocol never edits it."""
    source = Path(dataplane.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.startswith(("protos", "gateway.backends.tfserving",
                                                               "gateway.backends.transports", "grpc"))}
    assert "TFServingBackend" not in source
