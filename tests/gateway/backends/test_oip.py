"""The v2 (Open Inference Protocol) backend against the v2 test server (tests/oip_server.py, a
real grpc.aio server on loopback): what goes on the wire, every datatype both ways, raw and
typed contents, versions, contract discovery, health, errors, and batching."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway.backends import BackendCall, Selector
from gateway.backends.base import default_signature
from gateway.backends.oip import OIPBackend, connect, signature_from_metadata
from gateway.backends.pool import ChannelPool
from gateway.backends.scheduling import ScheduledBackend, scheduled
from gateway.errors import BackendError, BackendUnavailable, GatewayError
from gateway.manifests import BatchingSpec, Config, ModelManifest, load_config
from protos.inference.grpc_service_pb2 import ModelInferResponse, ModelMetadataResponse
from tensorcodecs import CodecError, lookup_dtype
from tensorcodecs.oip_tensors import array_to_contents, array_to_raw
from tests.oip_server import FakeOIPServer

# name -> the backend fields after protocol and target
MODELS = {
    "add": "model_name: add",  # floating: every version
    "add_one": "model_name: add\n  version: 1",
    "add_typed": "model_name: add\n  version: 1\n  contents: typed",
    "echo": "model_name: echo",
    "echo_typed": "model_name: echo\n  contents: typed",
    "typed": "model_name: typed",
    "failing": "model_name: failing\n  version: 1",
    "loading": "model_name: loading\n  version: 1",
    "bf16": "model_name: bf16",
}


def write_v2_config(directory: Path, target: str) -> Config:
    """A config of one v2 model manifest per MODELS row, served by `target`."""
    (directory / "models").mkdir(parents=True)
    for name, fields in MODELS.items():
        (directory / "models" / f"{name}.yaml").write_text(
            f"kind: Model\nname: {name}\nbackend:\n  protocol: v2\n  target: '{target}'\n  {fields}\n")
    return load_config(directory)


@dataclasses.dataclass
class Setup:
    server: FakeOIPServer
    config: Config
    pool: ChannelPool

    def model(self, name: str) -> ModelManifest:
        return next(m for (n, _), m in self.config.models.items() if n == name)

    def backend(self, name: str) -> OIPBackend:
        return connect(self.model(name), self.pool)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    server = FakeOIPServer()
    await server.start()
    pool = ChannelPool(retry_attempts=1)
    try:
        yield Setup(server, write_v2_config(tmp_path / "config", server.target), pool)
    finally:
        await pool.close()
        await server.stop()


def f32(*values: float) -> np.ndarray:
    return np.asarray(values, np.float32)


# ---------------------------------------------------------------- predict

async def test_a_pinned_model_sends_raw_contents_its_version_and_the_request_id(setup: Setup) -> None:
    prediction = await setup.backend("add_one").predict(BackendCall({"x": f32(1, 2)}, 5.0, "req-1"))
    assert prediction.outputs["y"].tolist() == [2.0, 3.0]
    assert prediction.spec is not None
    assert prediction.spec.header() == \
        "name=add; version=1; signature_name=serving_default"
    (sent,) = setup.server.infers()
    assert (sent.model_name, sent.model_version, sent.id) == ("add", "1", "req-1")
    assert [(t.name, t.datatype, list(t.shape), t.HasField("contents")) for t in sent.inputs] == \
        [("x", "FP32", [2], False)]
    assert list(sent.raw_input_contents) == [f32(1, 2).tobytes()]
    assert setup.server.metadata[-1]["x-request-id"] == "req-1"


async def test_a_floating_model_forwards_the_version_asked_else_the_server_chooses(setup: Setup) -> None:
    backend = setup.backend("add")
    latest = await backend.predict(BackendCall({"x": f32(1)}, 5.0))
    first = await backend.predict(BackendCall({"x": f32(1)}, 5.0, selector=Selector(1)))
    assert (latest.outputs["y"].tolist(), first.outputs["y"].tolist()) == ([11.0], [2.0])
    assert [latest.spec.version if latest.spec else None, first.spec.version if first.spec else None] == [2, 1]
    assert [request.model_version for request in setup.server.infers()] == ["", "1"]
    assert "x-request-id" not in setup.server.metadata[0]  # no request id: no metadata


ECHO: dict[str, np.ndarray] = {
    "f32": np.array([[1.5, -2.0], [0.25, 3.0]], np.float32),
    "i64": np.array([2**40, -7], np.int64),
    "text": np.array(["héllo".encode(), b"\x00\xff"], dtype=object),
    "flag": np.array([True, False]),
    "half": np.array([0.5, -1.25], np.float16),
}


async def test_every_datatype_travels_raw_both_ways(setup: Setup) -> None:
    prediction = await setup.backend("echo").predict(BackendCall(ECHO, 5.0))
    for name, array in ECHO.items():
        assert prediction.outputs[name].dtype == (array.dtype if array.dtype != object else np.dtype(object))
        assert prediction.outputs[name].tolist() == array.tolist()
    (sent,) = setup.server.infers()
    assert [t.datatype for t in sent.inputs] == ["FP32", "INT64", "BYTES", "BOOL", "FP16"]
    # BYTES: each element a 4-byte little-endian length, then its bytes.
    assert sent.raw_input_contents[2] == b"\x06\x00\x00\x00h\xc3\xa9llo\x02\x00\x00\x00\x00\xff"


async def test_typed_contents_for_a_server_that_takes_no_raw_contents(setup: Setup) -> None:
    setup.server.accepts_raw = False
    with pytest.raises(GatewayError, match="raw_input_contents are not supported"):
        await setup.backend("add_one").predict(BackendCall({"x": f32(1)}, 5.0))
    prediction = await setup.backend("add_typed").predict(BackendCall({"x": f32(1, 2)}, 5.0))
    assert prediction.outputs["y"].tolist() == [2.0, 3.0]
    sent = setup.server.infers()[-1]
    assert not sent.raw_input_contents
    assert list(sent.inputs[0].contents.fp32_contents) == [1.0, 2.0]
    # Typed contents have no FP16 field: refused before any call, naming the input.
    no_half = {name: array for name, array in ECHO.items() if name != "half"}
    calls = len(setup.server.calls)
    with pytest.raises(GatewayError) as caught:
        await setup.backend("echo_typed").predict(BackendCall({**no_half, "half": ECHO["half"]}, 5.0))
    assert caught.value.status == 400
    assert caught.value.field == "half"
    assert "FP16 has no typed contents field" in caught.value.message
    assert len(setup.server.calls) == calls


async def test_answers_are_read_from_typed_and_mixed_contents(setup: Setup) -> None:
    # `typed` answers typed contents to a raw request, as MLServer does to a typed one.
    prediction = await setup.backend("typed").predict(BackendCall({"x": np.array([1, 2], np.int32)}, 5.0))
    assert prediction.outputs["y"].tolist() == [2, 4]
    assert prediction.outputs["y"].dtype == np.int32
    # Mixed: the outputs without typed contents take the raw entries, in order.
    response = ModelInferResponse(model_name="echo")
    for name in ("a", "b", "c"):
        response.outputs.add(name=name, datatype="FP16" if name != "b" else "INT32", shape=[2])
    array_to_contents(np.array([5, 6], np.int32), response.outputs[1].contents)
    response.raw_output_contents.extend([array_to_raw(np.array([1, 2], np.float16)),
                                         array_to_raw(np.array([3, 4], np.float16))])
    outputs = setup.backend("echo").outputs(response)
    assert {name: array.tolist() for name, array in outputs.items()} == {"a": [1, 2], "b": [5, 6], "c": [3, 4]}


def _answer(*tensors: tuple[str, str, list[int]], raw: list[bytes]) -> ModelInferResponse:
    response = ModelInferResponse()
    for name, datatype, shape in tensors:
        response.outputs.add(name=name, datatype=datatype, shape=shape)
    response.raw_output_contents.extend(raw)
    return response


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (_answer(("y", "FP32", [3]), raw=[f32(1, 2).tobytes()]), "y: raw contents of 8 bytes for 3 FP32 elements"),
        (_answer(("y", "BF16", [1]), raw=[b"\0\0"]), "y: unsupported datatype 'BF16'"),
        (_answer(("y", "FP32", [-1]), raw=[b""]), "y: shape [-1] has a negative dimension"),
        (_answer(("y", "FP32", [1]), ("y", "FP32", [1]), raw=[f32(1).tobytes()] * 2), "y: the output is named twice"),
        (_answer(("y", "FP32", [1]), ("z", "FP32", [1]), ("w", "FP32", [1]), raw=[f32(1).tobytes()] * 2),
         "2 raw output contents for 3 outputs"),
        (_answer(("y", "INT32", [2]), raw=[]), "0 values in int_contents for shape [2]"),
    ],
)
async def test_a_malformed_answer_is_the_backend_s_failure_naming_the_output(
        setup: Setup, response: ModelInferResponse, words: str) -> None:
    with pytest.raises(BackendError) as caught:
        setup.backend("add").outputs(response)
    assert caught.value.status == 502
    assert caught.value.message.startswith("the backend of model add answered a malformed tensor: ")
    assert words in caught.value.message
    assert setup.server.target not in caught.value.message


async def test_a_label_or_another_signature_is_refused_without_a_call(setup: Setup) -> None:
    backend = setup.backend("add")
    with pytest.raises(GatewayError) as caught:
        await backend.predict(BackendCall({"x": f32(1)}, 5.0, selector=Selector(label="stable")))
    assert caught.value.status == 404
    assert "a v2 server has no labels" in caught.value.message
    with pytest.raises(GatewayError) as caught:
        await backend.predict(BackendCall({"x": f32(1)}, 5.0, signature_name="scaled"))
    assert caught.value.status == 400
    assert 'one signature, "serving_default"' in caught.value.message
    assert await backend.predict(BackendCall({"x": f32(1)}, 5.0, signature_name="serving_default"))
    assert len(setup.server.infers()) == 1


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [(3, 400, "invalid_argument"), (9, 400, "failed_precondition"), (8, 429, "resource_exhausted"),
     (13, 500, "model_error"), (14, 503, "backend_unavailable"), (5, 404, "not_found")],
)
async def test_server_errors_map_through_the_gateway_s_table(setup: Setup, code: int, status: int, kind: str) -> None:
    backend = setup.backend("failing")
    assert (await backend.predict(BackendCall({"code": np.array(0, np.int32)}, 5.0))).outputs["code"].tolist() == 0
    with pytest.raises(GatewayError) as caught:
        await backend.predict(BackendCall({"code": np.array(code, np.int32)}, 5.0,
                                          selector=Selector(1) if code == 5 else None))
    assert (caught.value.status, caught.value.code) == (status, kind)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT])
async def test_a_model_still_loading_is_unavailable_not_missing(setup: Setup, code: grpc.StatusCode) -> None:
    """Triton answers UNAVAILABLE for a model it is loading (a 503 as it is), MLServer
    INVALID_ARGUMENT "... is not ready yet"; a model of the manifest the server does not have
    (yet) answers NOT_FOUND: each is a 503 for the manifest's own version. A version the
    request named stays a 404."""
    setup.server.loading_code = code
    backend = setup.backend("loading")
    words = ("the backend of model loading is unavailable" if code is grpc.StatusCode.UNAVAILABLE
             else "model loading:1 is not available on its backend yet: Model loading is not ready yet.")
    with pytest.raises(BackendUnavailable, match=words):
        await backend.predict(BackendCall({"x": f32(1)}, 5.0))
    with pytest.raises(BackendUnavailable, match=words):
        await backend.describe(None, 5.0)
    setup.server.loading.clear()
    del setup.server.repository["add"]
    with pytest.raises(BackendUnavailable, match="model add:0 is not available on its backend yet: "
                                                 "Request for unknown model: 'add' is not found"):
        await setup.backend("add").describe(None, 5.0)
    setup.server.repository["add"] = {1: setup.server.repository["typed"][1]}
    with pytest.raises(GatewayError) as caught:
        await setup.backend("add").predict(BackendCall({"x": f32(1)}, 5.0, selector=Selector(7)))
    assert caught.value.status == 404


# ---------------------------------------------------------------- describe and health

async def test_describe_answers_the_metadata_as_the_model_s_one_signature(setup: Setup) -> None:
    signatures = await setup.backend("add").describe(Selector(2), 5.0, "req-2")
    assert set(signatures) == {"serving_default"}
    (signature,) = signatures.values()
    assert [(s.name, s.dtype.name, s.shape) for s in signature.inputs.values()] == [("x", "float32", (-1,))]
    assert [(s.name, s.dtype.name, s.shape) for s in signature.outputs.values()] == [("y", "float32", (-1,))]
    echo = (await setup.backend("echo").describe(None, 5.0))["serving_default"]
    assert {n: (s.dtype.name, s.shape) for n, s in echo.inputs.items()} == {
        "f32": ("float32", (-1, 2)), "i64": ("int64", (-1,)), "text": ("string", (-1,)),
        "flag": ("bool", (-1,)), "half": ("float16", (-1,))}
    assert (await setup.backend("failing").describe(None, 5.0))["serving_default"].inputs["code"].shape == ()
    sent = [request for name, request in setup.server.calls if name == "ModelMetadata"]
    assert [(r.name, r.version) for r in sent] == [("add", "2"), ("echo", ""), ("failing", "1")]  # type: ignore[attr-defined]
    with pytest.raises(GatewayError) as caught:
        await setup.backend("add").describe(Selector(7), 5.0)
    assert caught.value.status == 404


async def test_an_unknown_datatype_leaves_the_model_undescribed_naming_the_tensor(setup: Setup) -> None:
    with pytest.raises(BackendError) as caught:
        await setup.backend("bf16").describe(None, 5.0)
    assert caught.value.status == 502
    assert caught.value.message.startswith("the backend of model bf16:0 answered unusable metadata: "
                                           "input 'x': unsupported datatype 'BF16'")


def test_signature_from_metadata_refuses_what_no_contract_says() -> None:
    response = ModelMetadataResponse(name="m")
    with pytest.raises(CodecError, match=r"no inputs .*declare the model's contract in its manifest"):
        signature_from_metadata(response, "serving_default")  # MLServer's, for settings without inputs
    response.inputs.add(name="x", datatype="FP64", shape=[-1, 3])
    signature = signature_from_metadata(response, "serving_default")
    assert signature.inputs["x"].dtype == lookup_dtype("float64")
    assert signature.inputs["x"].shape == (-1, 3)
    response.outputs.add(name="y", datatype="INT8", shape=[-2])
    with pytest.raises(CodecError, match=r"output 'y' has shape \[-2\]"):
        signature_from_metadata(response, "s")
    del response.outputs[:]
    response.inputs.add(name="x", datatype="FP64", shape=[1])
    with pytest.raises(CodecError, match="input 'x' is described twice"):
        signature_from_metadata(response, "s")


async def test_healthy_is_server_live_and_model_ready(setup: Setup) -> None:
    assert await setup.backend("add_one").healthy(5.0) is True
    assert await setup.backend("add").healthy(5.0) is True
    assert await setup.backend("loading").healthy(5.0) is False
    ready = [request for name, request in setup.server.calls if name == "ModelReady"]
    assert [(r.name, r.version) for r in ready] == [("add", "1"), ("add", ""), ("loading", "1")]  # type: ignore[attr-defined]
    await setup.server.stop()
    assert await setup.backend("add_one").healthy(2.0) is False


# ---------------------------------------------------------------- batching

async def test_batching_joins_concurrent_calls_along_the_first_dimension(setup: Setup) -> None:
    manifest = dataclasses.replace(setup.model("add_one"), batching=BatchingSpec(8, 1))
    specs = (await setup.backend("add_one").describe(None, 5.0))["serving_default"].inputs  # x: [-1]
    backend = scheduled(connect(manifest, setup.pool), default_signature(manifest), specs, manifest.batching, None)
    assert isinstance(backend, ScheduledBackend)
    setup.server.delay_s = 0.2
    answers = await asyncio.gather(*(backend.predict(BackendCall({"x": f32(i, 10 * i)}, 5.0, specs=specs))
                                     for i in range(5)))
    assert [a.outputs["y"].tolist() for a in answers] == [[i + 1.0, 10 * i + 1.0] for i in range(5)]
    assert [list(r.inputs[0].shape) for r in setup.server.infers()] == [[2], [8]]  # the first alone, then the rest
