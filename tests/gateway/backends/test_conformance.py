"""The contract every backend keeps, run against each of them alike: the TF Serving backend on a
real grpc.aio server, the v2 (Open Inference Protocol) backend on the v2 test server, on a real
embedded runtime over the local wire (and over gRPC when its
socket is gone), the scheduling wrapper over each, `UnavailableBackend` and the test double.

Predict answers outputs and the spec it answered with; the selector and signature are honoured;
describe answers the signatures (or says it cannot); failures are `GatewayError`s with the
status of their kind; health says true or false; capabilities are offered as declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.backends import Backend, BackendCall, NDArray, NotDescribed, Selector, UnavailableBackend
from gateway.backends.base import default_signature
from gateway.backends.capabilities import (
    Classifies,
    HasMetadata,
    PredictsMany,
    Regresses,
    ReloadsConfig,
    ReportsStatus,
    offered,
)
from gateway.backends.oip import connect as connect_v2
from gateway.backends.pool import ChannelPool
from gateway.backends.resilience import CircuitState
from gateway.backends.scheduling import ScheduledBackend, scheduled
from gateway.backends.tfserving import RuntimeBackend, connect
from gateway.errors import GatewayError
from gateway.manifests import BatchingSpec, ModelManifest, load_config
from protos.local_wire import ATTACH_MIN
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tests.conftest import free_port, runtimes_for, write_model
from tests.doubles import InMemoryBackend
from tests.gateway.backends.test_oip import write_v2_config
from tests.gateway.test_tfserving_api import write_config
from tests.oip_server import FakeOIPServer
from tests.tfserving_server import FakeTFServing

TF_API: set[Any] = {Classifies, Regresses, ReportsStatus, HasMetadata, ReloadsConfig}
EVERY_CAPABILITY: set[Any] = {*TF_API, PredictsMany}
Outputs = Mapping[str, Any]


@dataclass
class Case:
    """A backend and what it answers: `calls` are (call, outputs, answered version) it must
    answer so; `missing` a call it must fail with `missing_status`."""

    backend: Backend
    calls: Sequence[tuple[BackendCall, Outputs, int | None]]
    missing: BackendCall
    missing_status: int = 404
    unknown_signature_status: int = 400
    signatures: dict[Selector | None, set[str]] | None = None  # None: it cannot describe
    healthy: bool = True
    capabilities: set[Any] = field(default_factory=set)


def call(inputs: Mapping[str, Any], selector: Selector | None = None, signature: str | None = None,
         dtype: str = "float32") -> BackendCall:
    arrays: dict[str, NDArray] = {name: np.asarray(value, dtype) for name, value in inputs.items()}
    return BackendCall(arrays, 5.0, "conformance", selector, signature)


# ---------------------------------------------------------------- the backends

TOY = {"input_1": [[1, 2]]}
TOY_CALLS = [
    (call(TOY), {"output_1": [[8.0]]}, 1),  # pinned version 1: 2a + 3b
    (call(TOY, Selector(2)), {"output_1": [[0.3]]}, 2),  # (a + b) / 10
    (call(TOY, Selector(label="canary")), {"output_1": [[0.3]]}, 2),
    (call(TOY, Selector(2), "scaled"), {"scaled": [[100.0, 200.0]]}, 2),
]


@contextlib.asynccontextmanager
async def tf_serving(tmp_path: Path, batching: bool = False, guarded: bool = True) -> AsyncIterator[Case]:
    server = FakeTFServing()
    await server.start()
    pool = ChannelPool()
    manifest = write_config(tmp_path / "config", server.target).models[("toy_one", 1)]  # Toy, pinned v1
    backend: Backend = connect(manifest, pool, guarded=guarded)
    if batching:
        backend = _scheduled(backend, dataclasses.replace(manifest, batching=BatchingSpec(8, 1)))
        assert isinstance(backend, ScheduledBackend)
    try:
        yield Case(backend, TOY_CALLS, call(TOY, Selector(7)),
                   signatures={None: {"serving_default"}, Selector(2): {"serving_default", "scaled"}},
                   capabilities=TF_API)
    finally:
        await pool.close()
        await server.stop()


ADD = {"x": [1, 2]}
V2_CALLS = [
    (call(ADD), {"y": [2.0, 3.0]}, 1),  # pinned version 1: x + 1
    (call(ADD, Selector(2)), {"y": [11.0, 12.0]}, 2),  # x + 10
    (call(ADD, Selector(2), "serving_default"), {"y": [11.0, 12.0]}, 2),  # its one signature, by name
]


@contextlib.asynccontextmanager
async def v2(tmp_path: Path, batching: bool = False, guarded: bool = True) -> AsyncIterator[Case]:
    server = FakeOIPServer()
    await server.start()
    pool = ChannelPool()
    manifest = write_v2_config(tmp_path / "config", server.target).models[("add_one", 1)]  # add, pinned v1
    backend: Backend = connect_v2(manifest, pool, guarded=guarded)
    if batching:
        backend = _scheduled(backend, dataclasses.replace(manifest, batching=BatchingSpec(8, 1)))
        assert isinstance(backend, ScheduledBackend)
    try:
        yield Case(backend, V2_CALLS, call(ADD, Selector(7)),
                   signatures={None: {"serving_default"}, Selector(2): {"serving_default"}})
    finally:
        await pool.close()
        await server.stop()


INCREMENT = "def predict(x):\n    return {'y': x + 1}\n"
RUNTIME_CALLS = [
    (call({"x": [1, 2]}, dtype="int32"), {"y": [2, 3]}, 1),
    (call({"x": [5]}, Selector(1), "serving_default", dtype="int32"), {"y": [6]}, 1),
]


@contextlib.asynccontextmanager
async def embedded_runtime(tmp_path: Path, local_wire: bool = True, socket_gone: bool = False,
                           scheduling: bool = False, guarded: bool = True) -> AsyncIterator[Case]:
    write_model(tmp_path / "config", "inc", "inc", INCREMENT)
    pool = ChannelPool()
    with runtimes_for(load_config(tmp_path / "config"), local_wire=local_wire) as config:
        manifest = config.models[("inc", 1)]
        assert manifest.backend is not None
        if socket_gone:
            assert manifest.backend.local_socket is not None
            Path(manifest.backend.local_socket).unlink()  # predictions fall back to gRPC
        backend: Backend = connect(manifest, pool, guarded=guarded)
        if scheduling:
            backend = _scheduled(backend, manifest)
            assert isinstance(backend, ScheduledBackend)  # a Multiplexer: it offers PredictMany
        try:
            yield Case(backend, RUNTIME_CALLS, call({"x": [1]}, Selector(7), dtype="int32"),
                       signatures={None: {manifest.signature.name, "serving_default"}},  # its own, and TF's alias
                       capabilities=EVERY_CAPABILITY)
        finally:
            await pool.close()


def _scheduled(backend: Backend, manifest: ModelManifest) -> Backend:
    assert manifest.backend is not None
    return scheduled(backend, default_signature(manifest), manifest.signature.inputs, manifest.batching,
                     manifest.backend.shared_calls)


@contextlib.asynccontextmanager
async def unavailable(tmp_path: Path, batching: bool = False) -> AsyncIterator[Case]:
    backend: Backend = UnavailableBackend.for_model("inc:1", "the runtime exited with code 3", None)
    if batching:
        specs = {"x": TensorSpec("x", lookup_dtype("float32"), (-1,))}
        backend = scheduled(backend, "serving_default", specs, BatchingSpec(8, 1), None)
        assert isinstance(backend, ScheduledBackend)
    # It offers no capability: the data plane answers one asked of it with its 503 (test_dataplane).
    yield Case(backend, [], call({"x": [1]}), missing_status=503, healthy=False)


def _double(batching: bool) -> Backend:
    spec = Signature("serving_default")
    double = InMemoryBackend(lambda inputs: {"y": inputs["x"] * 2}, name="twice",
                             versions={2: {"serving_default": lambda inputs: {"y": inputs["x"] * 3},
                                           "negate": lambda inputs: {"y": -inputs["x"]}}},
                             labels={"canary": 2}, signatures={"serving_default": spec})
    if not batching:
        return double
    specs = {"x": TensorSpec("x", lookup_dtype("float32"), (-1,))}
    scheduled_double = scheduled(double, "serving_default", specs, BatchingSpec(8, 1), None)
    assert isinstance(scheduled_double, ScheduledBackend)
    return scheduled_double


@contextlib.asynccontextmanager
async def in_memory(tmp_path: Path, batching: bool = False) -> AsyncIterator[Case]:
    calls = [(call({"x": [1, 2]}), {"y": [2.0, 4.0]}, 1),
             (call({"x": [1]}, Selector(2)), {"y": [3.0]}, 2),
             (call({"x": [1]}, Selector(label="canary"), "negate"), {"y": [-1.0]}, 2)]
    yield Case(_double(batching), calls, call({"x": [1]}, Selector(7)),
               signatures={None: {"serving_default"}, Selector(2): {"serving_default"}})


CASES: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[Case]]] = {
    "tfserving-grpc": tf_serving,
    "tfserving-grpc-scheduled": lambda path: tf_serving(path, batching=True),
    "v2-grpc": v2,
    "v2-grpc-scheduled": lambda path: v2(path, batching=True),
    "runtime-local-wire": embedded_runtime,
    "runtime-local-wire-scheduled": lambda path: embedded_runtime(path, scheduling=True),
    "runtime-grpc-fallback": lambda path: embedded_runtime(path, socket_gone=True),
    "runtime-grpc-fallback-scheduled": lambda path: embedded_runtime(path, socket_gone=True, scheduling=True),
    "runtime-grpc-only-scheduled": lambda path: embedded_runtime(path, local_wire=False, scheduling=True),
    # What shadow copies go through: the same backend without the target's circuit breaker.
    "tfserving-grpc-unguarded": lambda path: tf_serving(path, guarded=False),
    "v2-grpc-unguarded": lambda path: v2(path, guarded=False),
    "runtime-local-wire-unguarded": lambda path: embedded_runtime(path, guarded=False),
    "unavailable": unavailable,
    "unavailable-scheduled": lambda path: unavailable(path, batching=True),
    "in-memory": in_memory,
    "in-memory-scheduled": lambda path: in_memory(path, batching=True),
}


@pytest.fixture(params=sorted(CASES))
async def case(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    async with CASES[request.param](tmp_path) as made:
        yield made


# ---------------------------------------------------------------- the contract

def assert_outputs(got: Mapping[str, NDArray], expected: Outputs) -> None:
    assert set(got) == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-6)


async def test_predict_answers_outputs_and_the_spec_it_answered_with(case: Case) -> None:
    for sent, outputs, version in case.calls:
        prediction = await case.backend.predict(sent)
        assert_outputs(prediction.outputs, outputs)
        assert prediction.spec is not None
        assert prediction.spec.version == version
        assert prediction.spec.signature_name == (sent.signature_name or prediction.spec.signature_name)


async def test_calls_at_once_are_each_answered_their_own(case: Case) -> None:
    if not case.calls:
        return
    sent, outputs, _ = case.calls[0]
    answers = await asyncio.gather(*(case.backend.predict(sent) for _ in range(6)))
    for answer in answers:
        assert_outputs(answer.outputs, outputs)


async def test_a_version_it_does_not_have_fails_with_a_gateway_error(case: Case) -> None:
    with pytest.raises(GatewayError) as caught:
        await case.backend.predict(case.missing)
    assert caught.value.status == case.missing_status


async def test_a_signature_it_does_not_have_fails_with_a_gateway_error(case: Case) -> None:
    sent = case.calls[0][0]._replace(signature_name="no_such_signature") if case.calls else case.missing
    expected = case.unknown_signature_status if case.calls else case.missing_status
    with pytest.raises(GatewayError) as caught:
        await case.backend.predict(sent)
    assert caught.value.status == expected


async def test_describe_answers_the_signatures_of_the_selected_version(case: Case) -> None:
    if case.signatures is None:
        assert not case.backend.describes
        with pytest.raises((NotDescribed, GatewayError)):
            await case.backend.describe(None, 5.0)
        return
    assert case.backend.describes
    for selector, names in case.signatures.items():
        signatures = await case.backend.describe(selector, 5.0, "conformance")
        assert set(signatures) == names
        assert all(isinstance(signature, Signature) for signature in signatures.values())
    with pytest.raises(GatewayError) as caught:
        await case.backend.describe(case.missing.selector, 5.0)
    assert caught.value.status == case.missing_status


async def test_healthy_says_whether_it_answers(case: Case) -> None:
    assert await case.backend.healthy(5.0) is case.healthy


async def test_capabilities_are_offered_as_declared(case: Case) -> None:
    assert {kind for kind in EVERY_CAPABILITY if offered(case.backend, kind) is not None} == case.capabilities
    assert isinstance(case.backend.target, str)


# ---------------------------------------------------------------- beyond the shared contract

async def test_a_tf_serving_backend_nobody_answers_is_unhealthy_and_unavailable(tmp_path: Path) -> None:
    manifest = write_config(tmp_path / "config", f"127.0.0.1:{free_port()}").models[("toy_one", 1)]
    pool = ChannelPool(retry_attempts=1)
    try:
        backend = connect(manifest, pool)
        assert await backend.healthy(2.0) is False
        with pytest.raises(GatewayError) as caught:
            await backend.predict(call(TOY))
        assert caught.value.status == 503
    finally:
        await pool.close()


async def test_an_unguarded_backend_leaves_the_circuit_breaker_of_its_target_alone(tmp_path: Path) -> None:
    """Shadow copies go through `connect(..., guarded=False)`: their failures never open the
    circuit live calls to the same target go through, nor are they refused by an open one."""
    manifest = write_config(tmp_path / "config", f"127.0.0.1:{free_port()}").models[("toy_one", 1)]
    pool = ChannelPool(retry_attempts=1, circuit_failures=1)
    try:
        unguarded = connect(manifest, pool, guarded=False)
        for _ in range(3):
            with pytest.raises(GatewayError) as caught:
                await unguarded.predict(call(TOY))
            assert "circuit is open" not in caught.value.message
        breaker = pool.breaker(manifest.backend.target if manifest.backend else "")
        states = [breaker.state]
        with pytest.raises(GatewayError):
            await connect(manifest, pool).predict(call(TOY))  # a live call: it opens
        states.append(breaker.state)
        assert states == [CircuitState.CLOSED, CircuitState.OPEN]
        with pytest.raises(GatewayError) as caught:
            await unguarded.predict(call(TOY))
        assert "circuit is open" not in caught.value.message  # still asked the target
    finally:
        await pool.close()


async def test_the_request_id_travels_to_a_remote_server_as_metadata(tmp_path: Path) -> None:
    server = FakeTFServing()
    await server.start()
    pool = ChannelPool()
    try:
        backend = connect(write_config(tmp_path / "config", server.target).models[("toy_one", 1)], pool)
        await backend.predict(call(TOY)._replace(request_id="trace-7"))
        await backend.status(5.0, None, "trace-8")
        await backend.predict(call(TOY)._replace(request_id=""))
    finally:
        await pool.close()
        await server.stop()
    assert [metadata.get("x-request-id") for metadata in server.metadata] == ["trace-7", "trace-8", None]


async def test_large_tensors_meant_for_the_local_wire_go_inside_the_message_when_it_falls_back(
        tmp_path: Path) -> None:
    """The transport leaves the local wire for gRPC; the backend (which knows its messages) puts
    the tensors meant to travel beside back inside: Predict and PredictMany alike."""
    async with embedded_runtime(tmp_path, socket_gone=True) as case:
        backend = case.backend
        assert isinstance(backend, RuntimeBackend)
        assert backend.transport.carries_attachments
        large = np.arange(ATTACH_MIN, dtype=np.int32)  # 4 x ATTACH_MIN bytes: sent beside on the wire
        prediction = await backend.predict(BackendCall({"x": large}, 5.0, "big"))
        assert prediction.outputs["y"].tolist() == (large + 1).tolist()
        outcomes, _ = await backend.predict_many([BackendCall({"x": large}, 5.0, "a"),
                                                  BackendCall({"x": large * 2}, 5.0, "b")], 5.0)
        assert [outcome.outputs["y"].tolist() for outcome in outcomes if not isinstance(outcome, GatewayError)] \
            == [(large + 1).tolist(), (large * 2 + 1).tolist()]
