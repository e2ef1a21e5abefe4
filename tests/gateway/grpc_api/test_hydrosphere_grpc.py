"""Hydrosphere's GatewayService on the gRPC port of a real uvicorn-served gateway, with the real
embedded runtime behind it (the example config's increment_app: `{"number": [1]}` -> 2)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.hydrosphere import contract_pb2 as contract
from protos.hydrosphere.gateway_pb2 import GatewayPredictRequest
from protos.hydrosphere.runtime_pb2 import PredictResponse
from protos.services import (
    HYDRO_PREDICT_APPLICATION,
    HYDRO_PREDICT_SERVABLE,
    HYDRO_SHADOWLESS_PREDICT_SERVABLE,
    Method,
)
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.gateway.grpc_api.test_tensors import LIAR_ANSWER, liar, liar_config
from tests.tfserving_server import FakeTFServing
from tests.waiting import eventually

Hydro = Method[GatewayPredictRequest, PredictResponse]
INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class Gateway:
    url: str
    channel: grpc.aio.Channel
    app: Starlette

    async def call(self, method: Hydro, request: GatewayPredictRequest | bytes, *,
                   metadata: tuple[tuple[str, str], ...] = (), timeout: float | None = 10) -> PredictResponse:
        stub = self.channel.unary_unary(method.path, request_serializer=_serialize,
                                        response_deserializer=PredictResponse.FromString)
        answer: PredictResponse = await stub(request, metadata=metadata, timeout=timeout)
        return answer

    async def failure(self, method: Hydro, request: GatewayPredictRequest | bytes, *,
                      metadata: tuple[tuple[str, str], ...] = (), timeout: float | None = 10) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.call(method, request, metadata=metadata, timeout=timeout)
        return raised.value


def _serialize(request: GatewayPredictRequest | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


@asynccontextmanager
async def gateway(settings: Settings, config: Config) -> AsyncIterator[Gateway]:
    app = create_app(dataclasses.replace(settings, grpc_port=0), config)
    async with serve_app(app, settings) as url, grpc.aio.insecure_channel(_address(app)) as channel:
        yield Gateway(url, channel, app)


def _address(app: Starlette) -> str:
    return f"127.0.0.1:{app.state.grpc_port}"


def ints(*values: int, dims: tuple[int, ...] | None = None) -> contract.Tensor:
    """An int32 tensor as Hydrosphere's clients send it: typed values and a flat shape."""
    shape = contract.TensorShape(dims=list(dims if dims is not None else (len(values),)))
    return contract.Tensor(dtype=contract.DT_INT32, tensor_shape=shape, int_val=list(values))


def request(name: str, **data: contract.Tensor) -> GatewayPredictRequest:
    return GatewayPredictRequest(name=name, data=data)


@pytest.fixture
async def example(example_config: Config) -> AsyncIterator[Gateway]:
    async with gateway(Settings(), example_config) as door:
        yield door


async def test_predict_application_increments_as_the_tutorial_says(example: Gateway) -> None:
    answer = await example.call(HYDRO_PREDICT_APPLICATION, request("increment_app", number=ints(1)))
    number = answer.outputs["number"]
    assert number.dtype == contract.DT_INT32
    assert list(number.tensor_shape.dims) == [1]
    assert list(number.int_val) == [2]  # the typed field Hydrosphere's clients read
    assert not number.binary_val
    matrix = await example.call(HYDRO_PREDICT_APPLICATION, request("increment_app", number=ints(1, 2, 3)))
    assert list(matrix.outputs["number"].int_val) == [2, 3, 4]


async def test_one_unknown_dim_is_taken_from_the_values(example: Gateway) -> None:
    """hydrosdk sends the contract's shape (`[-1]`, `[-1, 3]`); Hydrosphere's gateway resolves the
    -1 from the number of values (TensorUtil.verifyShape)."""
    for method, name in [(HYDRO_PREDICT_APPLICATION, "increment_app"), (HYDRO_PREDICT_SERVABLE, "increment_model:1")]:
        answer = await example.call(method, request(name, number=ints(1, 2, 3, dims=(-1,))))
        assert list(answer.outputs["number"].int_val) == [2, 3, 4], method.name
        assert list(answer.outputs["number"].tensor_shape.dims) == [3], method.name


async def test_binary_val_inputs_are_read_as_tensor_content(example: Gateway) -> None:
    tensor = contract.Tensor(dtype=contract.DT_INT32, tensor_shape=contract.TensorShape(dims=[2]),
                             binary_val=(5).to_bytes(4, "little") + (6).to_bytes(4, "little"))
    answer = await example.call(HYDRO_PREDICT_APPLICATION, request("increment_app", number=tensor))
    assert list(answer.outputs["number"].int_val) == [6, 7]


async def test_application_shadows_get_copies_and_shadowless_servables_none(example: Gateway) -> None:
    answer = await example.call(HYDRO_PREDICT_APPLICATION, request("canary_app", number=ints(41)))
    assert list(answer.outputs["number"].int_val) == [42]
    # The routing metadata is read as HTTP reads the headers: canary_app allows no forced variant.
    error = await example.failure(HYDRO_PREDICT_APPLICATION, request("canary_app", number=ints(41)),
                                  metadata=(("x-gateway-variant", "increment_numpy:1"),))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "allow_variant_override" in (error.details() or "")

    async def copied() -> bool:
        return _copies(await _metrics(example.url)) >= 1
    await eventually(copied, what="a shadow copy for canary_app's increment_numpy:2")
    before = _copies(await _metrics(example.url))
    for method in (HYDRO_PREDICT_SERVABLE, HYDRO_SHADOWLESS_PREDICT_SERVABLE):
        answer = await example.call(method, request("increment_numpy:1", number=ints(41)))
        assert list(answer.outputs["number"].int_val) == [42]
    assert _copies(await _metrics(example.url)) == before


async def test_servable_names_select_the_model_version(example: Gateway) -> None:
    # Version 1 wraps the int32 maximum around; version 2 stays at it.
    for name, want in [("increment_numpy:1", -(2**31)), ("increment_numpy:2", INT32_MAX),
                       ("increment_numpy-1", -(2**31)), ("increment_numpy-2-wild-flower", INT32_MAX),
                       ("increment_model", -(2**31)), ("increment_model:1", -(2**31))]:
        for method in (HYDRO_PREDICT_SERVABLE, HYDRO_SHADOWLESS_PREDICT_SERVABLE):
            answer = await example.call(method, request(name, number=ints(INT32_MAX)))
            assert list(answer.outputs["number"].int_val) == [want], (name, method.name)


async def test_typed_fields_round_trip(tmp_path: Path) -> None:
    """int_val, float_val, string_val and bool_val inputs, as Hydrosphere's clients send them,
    come back in the same typed fields."""
    write_model(tmp_path, "echo", "echo", "def predict(i, f, s, b):\n    return {'i': i, 'f': f, 's': s, 'b': b}\n",
                inputs="i: {shape: [-1], type: int32}\n    f: {shape: [2], type: float32}\n"
                       "    s: {shape: [-1], type: string}\n    b: {shape: [], type: bool}",
                outputs="i: {shape: [-1], type: int32}\n    f: {shape: [2], type: float32}\n"
                        "    s: {shape: [-1], type: string}\n    b: {shape: [], type: bool}")
    write_app(tmp_path, "echo_app", "echo")
    data = {"i": ints(-7, 8),
            "f": contract.Tensor(dtype=contract.DT_FLOAT, tensor_shape=contract.TensorShape(dims=[2]),
                                 float_val=[0.5, -1.25]),
            "s": contract.Tensor(dtype=contract.DT_STRING, tensor_shape=contract.TensorShape(dims=[2]),
                                 string_val=[b"ab", "ü".encode()]),
            "b": contract.Tensor(dtype=contract.DT_BOOL, bool_val=[True])}
    with runtimes_for(load_config(tmp_path)) as config:
        async with gateway(Settings(), config) as door:
            for method, name in [(HYDRO_PREDICT_APPLICATION, "echo_app"), (HYDRO_PREDICT_SERVABLE, "echo:1")]:
                outputs = (await door.call(method, GatewayPredictRequest(name=name, data=data))).outputs
                assert (list(outputs["i"].int_val), list(outputs["i"].tensor_shape.dims)) == ([-7, 8], [2])
                assert list(outputs["f"].float_val) == [0.5, -1.25]
                assert outputs["f"].dtype == contract.DT_FLOAT
                assert list(outputs["s"].string_val) == [b"ab", "ü".encode()]
                assert list(outputs["b"].bool_val) == [True]
                assert list(outputs["b"].tensor_shape.dims) == []


async def test_contract_violations_are_invalid_argument_with_the_field_path(example: Gateway) -> None:
    map_tensor = contract.Tensor(dtype=contract.DT_MAP, map_val=[contract.MapTensorData(
        subtensors={"a": ints(1)})])
    cases: list[tuple[GatewayPredictRequest | bytes, str]] = [
        (request("increment_app", number=map_tensor), 'data["number"].dtype: DT_MAP tensors are not supported'),
        (request("increment_app", number=contract.Tensor(dtype=contract.DT_QINT8, int_val=[1])),
         'data["number"].dtype: unknown or unsupported dtype 11'),
        (request("increment_app", number=contract.Tensor(dtype=contract.DT_INT64, int64_val=[1],
                                                         tensor_shape=contract.TensorShape(dims=[1]))),
         'data["number"]: expects int32 but int64 is provided'),
        (request("increment_app", number=ints(1, 2, dims=(1, 2))),
         'data["number"]: expects shape [-1], got [1, 2]'),
        (request("increment_app", number=ints(1, 2, 3, dims=(2,))), 'data["number"]: '),
        (request("increment_app", number=ints(1, dims=(-2,))),
         'data["number"].tensor_shape: [-2] has a negative size other than one -1'),
        (request("increment_app", number=ints(1, dims=(-1, -1))),
         'data["number"].tensor_shape: [-1, -1] has a negative size other than one -1'),
        (request("increment_app", number=ints(1, 2, 3, dims=(-1, 2))),
         'data["number"].tensor_shape: 3 values do not fit shape [-1, 2]'),
        # Values a decoder would not read: never taken as zeros or empty strings.
        (request("increment_app", number=contract.Tensor(dtype=contract.DT_INT32, float_val=[1.5],
                                                         tensor_shape=contract.TensorShape(dims=[1]))),
         'data["number"].float_val: DT_INT32 tensors carry their values in int_val or binary_val'),
        (request("increment_app", number=contract.Tensor(dtype=contract.DT_STRING, binary_val=b"hello",
                                                         tensor_shape=contract.TensorShape(dims=[1]))),
         'data["number"].binary_val: DT_STRING tensors carry their values in string_val'),
        (request("increment_app", number=contract.Tensor(dtype=contract.DT_STRING, int_val=[1],
                                                         tensor_shape=contract.TensorShape(dims=[1]))),
         'data["number"].int_val: DT_STRING tensors carry their values in string_val'),
        (request("increment_app", number=ints(1), extra=ints(1)),
         'data["extra"]: input tensor alias not found in signature: extra'),
        (request("increment_app"), 'data["number"]: missing input'),
        (b"\xff\xff", "the request is not a valid gatewayproto.hydrosphere.gateway.GatewayPredictRequest"),
    ]
    for method in (HYDRO_PREDICT_APPLICATION, HYDRO_PREDICT_SERVABLE, HYDRO_SHADOWLESS_PREDICT_SERVABLE):
        for sent, words in cases:
            if isinstance(sent, GatewayPredictRequest) and method is not HYDRO_PREDICT_APPLICATION:
                sent = GatewayPredictRequest(name="increment_model:1", data=sent.data)
            error = await example.failure(method, sent)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, words)
            assert words in (error.details() or ""), (method.name, error.details())
            assert "Traceback" not in (error.details() or "")


async def test_unknown_names_are_not_found(example: Gateway) -> None:
    for method, name in [(HYDRO_PREDICT_APPLICATION, "nope"), (HYDRO_PREDICT_APPLICATION, "increment_model"),
                         (HYDRO_PREDICT_SERVABLE, "nope"), (HYDRO_PREDICT_SERVABLE, "increment_numpy:7"),
                         (HYDRO_PREDICT_SERVABLE, "increment_numpy-7-wild-flower"),
                         (HYDRO_SHADOWLESS_PREDICT_SERVABLE, "increment_app")]:
        error = await example.failure(method, request(name, number=ints(1)))
        assert error.code() == grpc.StatusCode.NOT_FOUND, (method.name, name)
        assert name.partition(":")[0].partition("-")[0] in (error.details() or "")
    for name in ("", ":1", "increment_numpy:"):
        error = await example.failure(HYDRO_PREDICT_SERVABLE, request(name, number=ints(1)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert (error.details() or "").startswith("name: ")


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_api_keys_guard_applications_and_servables(example_config: Config) -> None:
    auth = AuthSettings(api_keys=(ApiKey("inc", _sha("inc-key"), ("increment_app", "increment_model")),))
    async with gateway(Settings(auth=auth), example_config) as door:
        error = await door.failure(HYDRO_PREDICT_APPLICATION, request("increment_app", number=ints(1)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        key = (("authorization", "Bearer inc-key"),)
        answer = await door.call(HYDRO_PREDICT_APPLICATION, request("increment_app", number=ints(1)), metadata=key)
        assert list(answer.outputs["number"].int_val) == [2]
        answer = await door.call(HYDRO_PREDICT_SERVABLE, request("increment_model-1", number=ints(1)), metadata=key)
        assert list(answer.outputs["number"].int_val) == [2]
        # A name the key may not call is refused before it is looked up: whether it exists stays unsaid.
        for method, name in [(HYDRO_PREDICT_APPLICATION, "canary_app"), (HYDRO_PREDICT_SERVABLE, "increment_numpy:1"),
                             (HYDRO_SHADOWLESS_PREDICT_SERVABLE, "increment_numpy-2"),
                             (HYDRO_PREDICT_APPLICATION, "no_such_app"), (HYDRO_PREDICT_SERVABLE, "no_such_model:1")]:
            error = await door.failure(method, request(name, number=ints(1)), metadata=key)
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Config]:
    """A model that raises, one that takes a second, an application with a 0.2 s timeout and one
    that takes one call at a time."""
    write_model(tmp_path, "boom", "boom", "def predict(x):\n    raise ValueError('no luck for ' + str(x[0]))\n")
    write_model(tmp_path, "slow", "slow", "import time\n\ndef predict(x):\n    time.sleep(1)\n    return x\n")
    write_app(tmp_path, "boom_app", "boom")
    write_app(tmp_path, "hasty_app", "slow", "timeout_s: 0.2")
    write_app(tmp_path, "narrow_app", "slow", "max_concurrency: 1")
    with runtimes_for(load_config(tmp_path)) as config:
        yield config


async def test_model_errors_deadlines_and_overload(faulty: Config) -> None:
    async with gateway(Settings(max_concurrency=2, max_elements=4), faulty) as door:
        error = await door.failure(HYDRO_PREDICT_SERVABLE, request("boom:1", x=ints(1, 2, 3, 4, 5)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "the request holds 5 tensor elements; the limit is 4"
        for method, name in [(HYDRO_PREDICT_APPLICATION, "boom_app"), (HYDRO_PREDICT_SERVABLE, "boom:1")]:
            error = await door.failure(method, request(name, x=ints(3)))
            assert error.code() == grpc.StatusCode.INTERNAL
            assert "no luck for 3" in (error.details() or "")
            assert "Traceback" not in (error.details() or "")
        # The application's own timeout (no client deadline: answered by the gateway), then the client's.
        error = await door.failure(HYDRO_PREDICT_APPLICATION, request("hasty_app", x=ints(1)), timeout=None)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        error = await door.failure(HYDRO_PREDICT_SERVABLE, request("slow", x=ints(1)), timeout=0.2)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(_idle(door), what="the timed-out calls to end")
        # One call in flight fills narrow_app (max_concurrency 1): 429's RESOURCE_EXHAUSTED; a second
        # fills the gateway (max_concurrency 2): 503's UNAVAILABLE.
        narrow = asyncio.create_task(door.call(HYDRO_PREDICT_APPLICATION, request("narrow_app", x=ints(4))))
        await eventually(_busy(door, 1), what="narrow_app's call in flight")
        error = await door.failure(HYDRO_PREDICT_APPLICATION, request("narrow_app", x=ints(1)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        busy = asyncio.create_task(door.call(HYDRO_PREDICT_SERVABLE, request("slow:1", x=ints(5))))
        await eventually(_busy(door, 2), what="both slow calls in flight")
        error = await door.failure(HYDRO_SHADOWLESS_PREDICT_SERVABLE, request("boom", x=ints(1)))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert list((await narrow).outputs["y"].int_val) == [4]
        assert list((await busy).outputs["y"].int_val) == [5]


def _idle(door: Gateway) -> Callable[[], Awaitable[bool]]:
    async def holds() -> bool:
        return bool(door.app.state.dataplane.in_flight == 0)
    return holds


def _busy(door: Gateway, calls: int) -> Callable[[], Awaitable[bool]]:
    async def holds() -> bool:
        return bool(door.app.state.dataplane.in_flight >= calls)
    return holds


async def _metrics(url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/metrics")).text


def _copies(text: str) -> float:
    return sum(float(value) for value in re.findall(
        r'^gateway_shadow_copies_total\{[^}]*application="canary_app"[^}]*\} (\S+)$', text, re.MULTILINE))


def floats(rows: list[list[float]]) -> contract.Tensor:
    return contract.Tensor(dtype=contract.DT_FLOAT, tensor_shape=contract.TensorShape(dims=[len(rows), len(rows[0])]),
                           float_val=[value for row in rows for value in row])


async def test_a_tf_serving_backend_with_its_contract_discovered(tfs: FakeTFServing, tmp_path: Path) -> None:
    """Toy on a TF Serving backend, no contract declared: the gateway asks for it, checks the
    Hydrosphere tensors against it and selects versions and labels as the servable name says."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "toy.yaml").write_text(
        f"kind: Model\nname: toy\nbackend:\n  protocol: tensorflow-serving\n  target: {tfs.target}\n"
        "  model_name: Toy\n")
    write_app(tmp_path, "toy_canary", "toy@canary")
    async with gateway(Settings(), load_config(tmp_path)) as door:
        answer = await door.call(HYDRO_PREDICT_APPLICATION, request("toy_canary", input_1=floats([[1, 2], [1, 3]])))
        output = answer.outputs["output_1"]
        assert [round(value, 5) for value in output.float_val] == [0.3, 0.4]  # version 2: (a + b) / 10
        assert list(output.tensor_shape.dims) == [2, 1]
        for name, want in [("toy:1", [8.0, 11.0]), ("toy:stable", [8.0, 11.0]), ("toy-1", [8.0, 11.0]),
                           ("toy:canary", [0.3, 0.4])]:
            answer = await door.call(HYDRO_PREDICT_SERVABLE, request(name, input_1=floats([[1, 2], [1, 3]])))
            assert [round(value, 5) for value in answer.outputs["output_1"].float_val] == want, name
        error = await door.failure(HYDRO_PREDICT_SERVABLE, request("toy:1", input_1=floats([[1, 2, 3]])))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert 'data["input_1"]: expects shape [-1, 2], got [1, 3]' in (error.details() or "")
        # A label the backend does not know: TF Serving's own answer comes through.
        error = await door.failure(HYDRO_PREDICT_SERVABLE, request("toy:nightly", input_1=floats([[1, 2]])))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "Unrecognized servable version label: nightly"


@pytest.fixture
async def lying_backend() -> AsyncIterator[FakeTFServing]:
    server = FakeTFServing(loose_outputs=True, repository={"Liar": {1: liar()}})
    await server.start()
    yield server
    await server.stop()


async def test_answers_are_never_cast_to_a_contract_dtype_that_changes_them(lying_backend: FakeTFServing,
                                                                             tmp_path: Path) -> None:
    """A backend answering float64 for its int32 and bool outputs is answered its values, as HTTP
    answers them; an int64 answer that fits the int32 contract takes the contract's dtype."""
    async with gateway(Settings(), liar_config(tmp_path, lying_backend)) as door:
        for method, name in [(HYDRO_PREDICT_APPLICATION, "liar_app"), (HYDRO_PREDICT_SERVABLE, "liar:1"),
                             (HYDRO_SHADOWLESS_PREDICT_SERVABLE, "liar")]:
            x = contract.Tensor(dtype=contract.DT_FLOAT, tensor_shape=contract.TensorShape(dims=[1]), float_val=[1])
            outputs = (await door.call(method, request(name, x=x))).outputs
            got = {key: (contract.DataType.Name(tensor.dtype), list(tensor.double_val or tensor.int_val))
                   for key, tensor in outputs.items()}
            assert got == LIAR_ANSWER, (method.name, got)
