"""Hydrosphere fidelity of the runtime: 2.x functions see typed TensorProto fields on every wire,
3.x functions get hydrosdk's numpy values, results are converted and checked as documented."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from protos.hydrosphere import contract_pb2 as hydro_contract
from protos.hydrosphere import runtime_pb2 as hydro_runtime
from protos.local_wire import ATTACH_MIN, Attachments
from protos.runtime.calls_pb2 import PredictManyRequest, PredictManyResponse
from protos.services import HYDRO_PREDICT, RUNTIME_PREDICT_MANY
from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.errors import OutputError
from runtime.server import ModelServer
from runtime.styles import Style, detect_style, to_response
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor, tensor_header
from tests.conftest import write_model
from tests.runtime.test_local import PREDICT, PREDICT_MANY, call_attached
from tests.runtime.test_server import call, predict

# What a 2.x function sees: the typed field filled, no tensor_content, make_ndarray agreeing.
SEEN = """
import hydro_serving_grpc as hs
import tensorflow as tf

def predict(x, k):
    assert not x.tensor_content and not k.tensor_content
    assert len(k.tensor_shape.dim) == 0, k.tensor_shape
    assert list(tf.make_ndarray(x).ravel()) == list(x.float_val)
    return hs.PredictResponse(outputs={
        "count": hs.TensorProto(dtype=hs.DT_INT64, int64_val=[len(x.float_val)], tensor_shape=hs.TensorShapeProto()),
        "total": hs.TensorProto(dtype=hs.DT_DOUBLE, double_val=[sum(x.float_val) * k.int64_val[0]],
                                tensor_shape=hs.TensorShapeProto()),
    })
"""
SEEN_IO = ("x: {shape: [-1], type: float32}\n    k: {shape: scalar, type: int64}",
           "count: {shape: scalar, type: int64}\n    total: {shape: scalar, type: float64}")
LARGE = np.arange(ATTACH_MIN, dtype=np.float32) / 4  # 4 x ATTACH_MIN bytes: travels attached


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Any]:
    servers: list[ModelServer] = []

    def start(folder: Path) -> ModelServer:
        server = ModelServer.for_folder(folder, chdir=False, local_socket=str(tmp_path / f"{len(servers)}.sock"))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(0).wait()


def seen_request(values: np.ndarray, k: int, sent: Attachments | None = None, item: int = 0) -> PredictRequest:
    request = PredictRequest()
    if sent is not None:
        sent.sent.append((item, "x", tensor_header(request.inputs["x"], values, lookup_dtype("float32"))))
    else:
        request.inputs["x"].CopyFrom(encode_tensor(values, lookup_dtype("float32")))  # tensor_content
    request.inputs["k"].CopyFrom(encode_tensor(np.array(k, np.int64), lookup_dtype("int64")))
    return request


def seen_answer(response: PredictResponse) -> tuple[int, float]:
    return int(decode_tensor(response.outputs["count"])), float(decode_tensor(response.outputs["total"]))


@pytest.mark.parametrize("extra", ["", "workers: 2"])
def test_typed_fields_on_every_wire(started: Any, tmp_path: Path, extra: str) -> None:
    server = started(write_model(tmp_path / "cfg", "seen", "seen", SEEN, *SEEN_IO, extra))
    expected = (LARGE.size, float(LARGE.astype(np.float64).sum()) * 3)
    small = np.array([1.5, 2.5], np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    assert seen_answer(predict(channel, seen_request(small, 2))) == (2, 8.0)  # gRPC Predict
    many = call(channel, RUNTIME_PREDICT_MANY, PredictManyRequest(requests=[seen_request(small, 2),
                                                                             seen_request(LARGE, 3)]))
    assert [seen_answer(result.response) for result in many.results] == [(2, 8.0), expected]
    hydro = hydro_runtime.PredictRequest()  # the Hydrosphere 3.x API, values as binary_val
    hydro.inputs["x"].dtype = hydro_contract.DT_FLOAT
    hydro.inputs["x"].tensor_shape.dims.append(2)
    hydro.inputs["x"].binary_val = small.tobytes()
    hydro.inputs["k"].dtype = hydro_contract.DT_INT64
    hydro.inputs["k"].int64_val.append(2)
    answer = call(channel, HYDRO_PREDICT, hydro)
    assert list(answer.outputs["count"].int64_val) == [2]  # typed fields back, for hydrosdk
    assert list(answer.outputs["total"].double_val) == [8.0]
    assert not answer.outputs["total"].binary_val
    with socket.socket(socket.AF_UNIX) as connection:  # the local wire, the large input attached
        connection.connect(server._local.path)
        sent = Attachments()
        code, _, message, _ = call_attached(connection, PREDICT, seen_request(LARGE, 3, sent).SerializeToString(), sent)
        assert code == 0, message
        assert seen_answer(PredictResponse.FromString(message)) == expected
        sent = Attachments()
        both = PredictManyRequest(requests=[seen_request(small, 2), seen_request(LARGE, 3, sent, item=1)])
        code, _, message, _ = call_attached(connection, PREDICT_MANY, both.SerializeToString(), sent)
        assert code == 0, message
        results = PredictManyResponse.FromString(message).results
        assert [seen_answer(result.response) for result in results] == [(2, 8.0), expected]


@pytest.mark.parametrize(
    ("source", "style"),
    [
        ("from hydro_serving_grpc.serving.contract.tensor_pb2 import Tensor\n", Style.HYDROSPHERE3),
        ("import hydro_serving_grpc.serving.runtime.api_pb2 as api\n", Style.HYDROSPHERE3),
        ("from hydro_serving_grpc import serving\n", Style.HYDROSPHERE3),
        ("import tensorflow as tf\nfrom hydro_serving_grpc.serving.contract import types_pb2\n", Style.HYDROSPHERE3),
        ("import hydro_serving_grpc as hs\n", Style.HYDROSPHERE),
        ("from hydro_serving_grpc import TensorProto\n", Style.HYDROSPHERE),
        ("from hydrosdk.data.conversions import np_to_tensor_proto\n", Style.HYDROSPHERE3),  # built on 3.x
        ("import hydrosdk\nimport tensorflow\n", Style.HYDROSPHERE3),
        ("from .hydro_serving_grpc.serving import x\n", Style.NUMPY),
        ("import hydro_serving_grpc_extra\nimport numpy\n", Style.NUMPY),
    ],
)
def test_style_detection(tmp_path: Path, source: str, style: Style) -> None:
    path = tmp_path / "func_main.py"
    path.write_text(source)
    assert detect_style(path) is style


def test_style_in_serving_yaml_wins(started: Any, tmp_path: Path) -> None:
    source = ("def predict(x):\n    assert x.dtype.kind == 'U' and x.shape == (2,), x\n"
              "    return {'y': [len(v) for v in x]}\n")
    folder = write_model(tmp_path / "cfg", "words", "words", source, "x: {shape: [2], type: string}",
                         "y: {shape: [2], type: int32}", "style: hydrosphere3")
    server = started(folder)
    request = PredictRequest()
    request.inputs["x"].CopyFrom(encode_tensor(np.array([b"ab", "né".encode()], object), lookup_dtype("string")))
    response = predict(grpc.insecure_channel(f"127.0.0.1:{server.port}"), request)
    assert decode_tensor(response.outputs["y"]).tolist() == [2, 2]


def invalid_argument(server: ModelServer, request: PredictRequest) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        predict(grpc.insecure_channel(f"127.0.0.1:{server.port}"), request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details() or ""


@pytest.mark.parametrize("style", ["numpy", "hydrosphere", "hydrosphere3"])
def test_inputs_outside_the_contract_are_invalid_argument(started: Any, tmp_path: Path, style: str) -> None:
    folder = write_model(tmp_path / "cfg", "m", "m", "def predict(x, t):\n    return {'y': [1]}\n",
                         "x: {shape: [-1, 2], type: int32}\n    t: {shape: scalar, type: string}",
                         extra=f"style: {style}")
    server = started(folder)

    def request(x: TensorProto, text: bytes = b"ok") -> PredictRequest:
        message = PredictRequest()
        message.inputs["x"].CopyFrom(x)
        message.inputs["t"].CopyFrom(encode_tensor(np.array(text, object), lookup_dtype("string")))
        return message

    wrong_dtype = request(encode_tensor(np.zeros((1, 2), np.float32)))
    assert invalid_argument(server, wrong_dtype) == "input 'x' has dtype float32, contract says int32"
    wrong_shape = request(encode_tensor(np.zeros(3, np.int32)))
    assert invalid_argument(server, wrong_shape) == "input 'x' has shape [3], contract says [-1, 2]"
    short = request(encode_tensor(np.zeros((1, 2), np.int32)))
    short.inputs["x"].tensor_content = b"\0" * 5
    assert invalid_argument(server, short).startswith("input 'x' is malformed: tensor_content holds 5 bytes")
    if style != "hydrosphere":  # 2.x functions get the bytes in string_val, as on Hydrosphere
        not_text = request(encode_tensor(np.zeros((1, 2), np.int32)), b"\xff")
        assert invalid_argument(server, not_text).startswith("input 't' is declared string but holds bytes "
                                                             "that are not UTF-8")


INT = TensorSpec("y", lookup_dtype("int32"), (-1,))
FLOAT = TensorSpec("y", lookup_dtype("float32"), (-1,))


def one(spec: TensorSpec) -> Signature:
    return Signature("f", outputs={"y": spec})


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        (np.array([1, 2], np.int64), INT, [1, 2]),  # fits: kept
        ([1, 2], INT, [1, 2]),
        (np.array([1.0, 2.0]), INT, [1, 2]),
        (0.1, TensorSpec("y", lookup_dtype("float32"), ()), np.float32(0.1)),  # a python float rounds
        (np.array([np.nan, 1.5]), FLOAT, [np.nan, 1.5]),
        (np.array([1 + 0j]), FLOAT, [1.0]),
        (np.int64(7), TensorSpec("y", lookup_dtype("int64"), ()), 7),
        (np.array(["a", "é"]), TensorSpec("y", lookup_dtype("string"), (-1,)), [b"a", "é".encode()]),
        (hydro_contract.Tensor(dtype=hydro_contract.DT_INT64, int64_val=[4, 5],
                               tensor_shape=hydro_contract.TensorShape(dims=[-1])), INT, [4, 5]),
        (encode_tensor(np.array([3, 4], np.int64), typed=True), INT, [3, 4]),
    ],
)
def test_3x_outputs_take_the_contract_dtype_when_nothing_is_lost(value: Any, spec: TensorSpec, expected: Any) -> None:
    response = to_response(Style.HYDROSPHERE3, {"y": value}, one(spec), "m")
    tensor = response.outputs["y"]
    assert tensor.dtype == spec.dtype.enum
    np.testing.assert_array_equal(decode_tensor(tensor), np.array(expected, dtype=decode_tensor(tensor).dtype))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.array([1.5]), "output 'y' has float64 values that are not integers, contract says int32"),
        (np.array([2**40]), "output 'y' has int64 values out of range for int32 (the contract's dtype)"),
        ([0.5], "output 'y' has float64 values that are not integers"),
        (np.array([1 + 1j]), "output 'y' has complex128 values with an imaginary part, contract says int32"),
        (np.array(["1"]), "output 'y' has dtype <U1, contract says int32"),
        (None, "output 'y' is None, contract says int32 of shape [-1]"),
        (hydro_contract.TensorShape(dims=[1]), "output 'y' is a gatewayproto.hydrosphere.contract.TensorShape "
                                              "message, expected a Tensor"),
    ],
)
def test_3x_outputs_that_would_change_are_errors(value: Any, words: str) -> None:
    with pytest.raises(OutputError) as caught:
        to_response(Style.HYDROSPHERE3, {"y": value}, one(INT), "m")
    assert words in str(caught.value)


U8, I32, U64, I64 = (TensorSpec("y", lookup_dtype(name), (-1,)) for name in ("uint8", "int32", "uint64", "int64"))
HALF, BOOL = TensorSpec("y", lookup_dtype("float16"), (-1,)), TensorSpec("y", lookup_dtype("bool"), (-1,))
C64 = TensorSpec("y", lookup_dtype("complex64"), (-1,))


@pytest.mark.parametrize("style", [Style.NUMPY, Style.HYDROSPHERE3])
@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        (np.array([0.1, -2.5]), FLOAT, np.array([0.1, -2.5], np.float32)),  # float64 rounds, as numbers do in TF
        ([0.1], FLOAT, np.array([0.1], np.float32)),
        (np.array([np.nan, np.inf, -np.inf]), HALF, np.array([np.nan, np.inf, -np.inf], np.float16)),  # kept
        (np.array([1 + 0.1j]), C64, np.array([1 + 0.1j], np.complex64)),
        (np.array([2**24 + 1]), FLOAT, np.array([2**24], np.float32)),  # ints round like floats
        (np.array([0, 255], np.int64), U8, [0, 255]),
        (np.array([-(2**31), 2**31 - 1], np.int64), I32, [-(2**31), 2**31 - 1]),
        (np.array([2**63 - 1], np.uint64), I64, [2**63 - 1]),
        ([2**64 - 1], U64, [2**64 - 1]),
        (np.array([3.0, -0.0]), I32, [3, 0]),
        (np.array([-(2.0**31)]), I32, [-(2**31)]),
        (np.array([True, False]), I32, [1, 0]),
        ([1, 0], BOOL, [True, False]),
        (np.array([1.0, 0.0]), BOOL, [True, False]),
        (np.array([], np.int64), U8, np.array([], np.uint8)),  # nothing to check
        (np.array([], np.float64), HALF, np.array([], np.float16)),
    ],
)
def test_outputs_convert_when_every_value_fits(style: Style, value: Any, spec: TensorSpec, expected: Any) -> None:
    tensor = to_response(style, {"y": value}, one(spec), "m").outputs["y"]
    assert tensor.dtype == spec.dtype.enum
    np.testing.assert_array_equal(decode_tensor(tensor), np.asarray(expected, spec.dtype.numpy))


@pytest.mark.parametrize("style", [Style.NUMPY, Style.HYDROSPHERE3])
@pytest.mark.parametrize(
    ("value", "spec", "words"),
    [
        (np.array([-1, -128], np.int8), U8, "has int8 values out of range for uint8 (the contract's dtype)"),
        ([-1, -5], U64, "has int64 values out of range for uint64"),
        (np.array([4_000_000_000], np.uint32), I32, "has uint32 values out of range for int32"),
        (np.array([2**63, 2**64 - 1], np.uint64), I64, "has uint64 values out of range for int64"),
        (hydro_contract.Tensor(dtype=hydro_contract.DT_INT64, int64_val=[-1],
                               tensor_shape=hydro_contract.TensorShape(dims=[1])), U64,
         "has int64 values out of range"),
        ([1e10, 70000.0], HALF, "has float64 values that overflow float16 (the contract's dtype)"),
        (np.array([1e300]), FLOAT, "has float64 values that overflow float32"),
        (np.array([1e300 + 1j]), C64, "has complex128 values that overflow complex64"),
        (np.array([2**64 - 1], np.uint64), HALF, "has uint64 values that overflow float16"),
        ([1.7, -2.9], I32, "has float64 values that are not integers, contract says int32"),
        (np.array([np.nan]), I32, "has float64 values that are not integers"),
        (np.array([np.inf]), I32, "has float64 values out of range for int32"),
        (np.array([2.0**31]), I32, "has float64 values out of range for int32"),
        (np.array([2.0**63]), I64, "has float64 values out of range for int64"),
        (np.array([-1.0]), U8, "has float64 values out of range for uint8"),
        ([2, 0.5], BOOL, "has float64 values other than 0 and 1, contract says bool"),
        ([2], BOOL, "has int64 values other than 0 and 1"),
        ([2**70], I64, "has dtype object, contract says int64"),
    ],
)
def test_outputs_that_do_not_fit_name_the_output(style: Style, value: Any, spec: TensorSpec, words: str) -> None:
    with pytest.raises(OutputError) as caught:
        to_response(style, {"y": value}, one(spec), "m")
    assert str(caught.value).startswith(f"model m: output 'y' {words}")


@pytest.mark.parametrize("style", list(Style))
def test_a_function_returning_none_says_so(style: Style) -> None:
    with pytest.raises(OutputError) as caught:
        to_response(style, None, one(FLOAT), "m")
    assert str(caught.value).startswith("model m: the function returned None, expected ")


def test_3x_functions_return_a_dict() -> None:
    with pytest.raises(OutputError, match=r"returned ndarray, expected a dict with the outputs \['y'\]"):
        to_response(Style.HYDROSPHERE3, np.zeros(1), one(FLOAT), "m")


def typed(shape: list[int], values: list[int]) -> PredictResponse:
    response = PredictResponse()
    tensor = response.outputs["y"]
    tensor.dtype = lookup_dtype("int32").enum  # type: ignore[assignment]
    tensor.tensor_shape.dim.extend([TensorProto().tensor_shape.Dim(size=size) for size in shape])
    tensor.int_val.extend(values)
    return response


@pytest.mark.parametrize(
    ("shape", "values", "contract", "expected"),
    [
        ([-1], [1, 2, 3], (-1,), [1, 2, 3]),
        ([-1, 2], [1, 2, 3, 4], (-1, 2), [[1, 2], [3, 4]]),
        ([2, -1], [], (2, -1), np.zeros((2, 0))),
        ([3], [7], (3,), [7, 7, 7]),  # TF's rule: the last value fills the shape
        ([2, 2], [1, 2], (2, 2), [[1, 2], [2, 2]]),
    ],
)
def test_2x_output_shapes_resolve_and_fill(shape: list[int], values: list[int], contract: tuple[int, ...],
                                           expected: Any) -> None:
    returned = typed(shape, values)
    response = to_response(Style.HYDROSPHERE, returned, one(TensorSpec("y", lookup_dtype("int32"), contract)), "m")
    np.testing.assert_array_equal(decode_tensor(response.outputs["y"]), np.array(expected, np.int32))
    assert returned == typed(shape, values)  # the function's own message is left as it was


@pytest.mark.parametrize(
    ("shape", "values", "words"),
    [
        ([-1, 2], [1, 2, 3], "output 'y' is malformed: 3 values do not fit shape [-1, 2]"),
        ([-1, -1], [1, 2], "output 'y' is malformed: 2 values do not fit shape [-1, -1]"),
        ([-1, 0], [], "output 'y' is malformed: 0 values do not fit shape [-1, 0]"),
        ([2], [1, 2, 3], "output 'y' is malformed: int_val holds 3 values for 2 elements"),
    ],
)
def test_2x_output_shapes_that_do_not_resolve_name_the_output(shape: list[int], values: list[int],
                                                              words: str) -> None:
    with pytest.raises(OutputError) as caught:
        to_response(Style.HYDROSPHERE, typed(shape, values), one(TensorSpec("y", lookup_dtype("int32"), None)), "m")
    assert str(caught.value) == f"model m: {words}"


@pytest.mark.parametrize(
    ("array", "typed_fields", "shape", "resolved"),
    [
        (np.arange(6, dtype=np.int32), False, [-1, 3], (2, 3)),  # tensor_content: 24 bytes of int32
        (np.array([1 + 2j, 3 - 4j], np.complex64), True, [-1], (2,)),  # scomplex_val holds pairs
        (np.array([b"a", b"b", b"c"], object), True, [3, -1], (3, 1)),
    ],
)
def test_a_minus_one_size_counts_values_in_any_field(array: np.ndarray, typed_fields: bool, shape: list[int],
                                                     resolved: tuple[int, ...]) -> None:
    response = PredictResponse()
    response.outputs["y"].CopyFrom(encode_tensor(array, typed=typed_fields))
    response.outputs["y"].tensor_shape.ClearField("dim")
    response.outputs["y"].tensor_shape.dim.extend([TensorProto().tensor_shape.Dim(size=size) for size in shape])
    spec = TensorSpec("y", lookup_dtype("string") if array.dtype == object else
                      lookup_dtype(array.dtype.name), None)
    answer = to_response(Style.HYDROSPHERE, response, one(spec), "m")
    np.testing.assert_array_equal(decode_tensor(answer.outputs["y"]), array.reshape(resolved))


# A 2.x function answering with an output the contract does not name (-1 size, unknown dtype).
EXTRA_OUTPUTS = """
import hydro_serving_grpc as hs

def predict(x):
    unknown = hs.TensorShapeProto(dim=[hs.TensorShapeProto.Dim(size=-1)])
    return hs.PredictResponse(outputs={
        "y": hs.TensorProto(dtype=hs.DT_INT32, int_val=[v + 1 for v in x.int_val], tensor_shape=unknown),
        "debug": hs.TensorProto(dtype=hs.DT_INT32, int_val=[1, 2, 3], tensor_shape=unknown),
        "odd": hs.TensorProto(dtype=99, tensor_shape=hs.TensorShapeProto()),
    })
"""
INT_IO = ("x: {shape: [-1], type: int32}", "y: {shape: [-1], type: int32}")


def hydro_tensor(dtype: int, field: str, values: list[Any]) -> hydro_contract.Tensor:
    tensor = hydro_contract.Tensor(dtype=dtype)  # type: ignore[arg-type]
    tensor.tensor_shape.dims.append(len(values))
    getattr(tensor, field).extend(values)
    return tensor


def test_outputs_outside_the_contract_are_dropped(started: Any, tmp_path: Path) -> None:
    server = started(write_model(tmp_path / "cfg", "extra", "extra", EXTRA_OUTPUTS, *INT_IO))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    request = PredictRequest()
    request.inputs["x"].CopyFrom(encode_tensor(np.array([1, 2], np.int32)))
    answer = predict(channel, request)
    assert list(answer.outputs) == ["y"]
    assert decode_tensor(answer.outputs["y"]).tolist() == [2, 3]
    hydro = hydro_runtime.PredictRequest()
    hydro.inputs["x"].CopyFrom(hydro_tensor(hydro_contract.DT_INT32, "int_val", [1, 2]))
    answer = call(channel, HYDRO_PREDICT, hydro)
    assert list(answer.outputs) == ["y"]
    assert list(answer.outputs["y"].int_val) == [2, 3]
    assert list(answer.outputs["y"].tensor_shape.dims) == [2]


# A 2.x function keeping one response message for every call, its output size -1.
KEPT_RESPONSE = """
import hydro_serving_grpc as hs

RESPONSE = hs.PredictResponse()
RESPONSE.outputs["y"].dtype = hs.DT_INT32
RESPONSE.outputs["y"].tensor_shape.dim.add().size = -1

def predict(x):
    y = RESPONSE.outputs["y"]
    assert [dim.size for dim in y.tensor_shape.dim] == [-1], y.tensor_shape
    assert not RESPONSE.HasField("model_spec"), RESPONSE.model_spec
    del y.int_val[:]
    y.int_val.extend([v * 10 for v in x.int_val])
    return RESPONSE
"""


@pytest.mark.parametrize("extra", ["", "workers: 2"])
def test_a_response_the_function_keeps_is_left_as_it_was(started: Any, tmp_path: Path, extra: str) -> None:
    server = started(write_model(tmp_path / "cfg", "kept", "kept", KEPT_RESPONSE, *INT_IO, extra))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    for values in ([1, 2, 3], [4], [5, 6]):
        request = PredictRequest()
        request.inputs["x"].CopyFrom(encode_tensor(np.array(values, np.int32)))
        answer = predict(channel, request)
        assert decode_tensor(answer.outputs["y"]).tolist() == [v * 10 for v in values]
        assert answer.model_spec.name == "kept"
    many = call(channel, RUNTIME_PREDICT_MANY, PredictManyRequest(requests=[request, request]))
    assert [decode_tensor(result.response.outputs["y"]).tolist() for result in many.results] == [[50, 60]] * 2


ECHO = "def predict(x, f):\n    return {'y': x, 'g': f}\n"
ECHO_IO = ("x: {shape: [-1], type: int32}\n    f: {shape: [-1], type: float32}",
           "y: {shape: [-1], type: int32}\n    g: {shape: [-1], type: float32}")


@pytest.mark.parametrize("style", ["numpy", "hydrosphere3"])
def test_inputs_of_another_dtype_are_converted_when_every_value_fits(started: Any, tmp_path: Path,
                                                                    style: str) -> None:
    """hydrosdk clients send python ints as DT_INT64 and floats as DT_DOUBLE, whatever the contract."""
    server = started(write_model(tmp_path / "cfg", "conv", "conv", ECHO, *ECHO_IO, f"style: {style}"))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")

    def hydro_call(x: hydro_contract.Tensor, f: hydro_contract.Tensor) -> Any:
        request = hydro_runtime.PredictRequest()
        request.inputs["x"].CopyFrom(x)
        request.inputs["f"].CopyFrom(f)
        return call(channel, HYDRO_PREDICT, request)

    ints = hydro_tensor(hydro_contract.DT_INT64, "int64_val", [1, -(2**31)])
    doubles = hydro_tensor(hydro_contract.DT_DOUBLE, "double_val", [0.1, float("nan")])
    answer = hydro_call(ints, doubles)
    assert list(answer.outputs["y"].int_val) == [1, -(2**31)]
    floats_back = np.array(answer.outputs["g"].float_val, np.float32)
    np.testing.assert_array_equal(floats_back, np.array([0.1, np.nan], np.float32))
    floats = hydro_tensor(hydro_contract.DT_FLOAT, "float_val", [0.5])
    mistakes = [
        (hydro_tensor(hydro_contract.DT_INT64, "int64_val", [2**31]), floats,
         "input 'x' has int64 values out of range for int32 (the contract's dtype)"),
        (hydro_tensor(hydro_contract.DT_UINT32, "uint32_val", [2**32 - 1]), floats,
         "input 'x' has uint32 values out of range for int32 (the contract's dtype)"),
        (hydro_tensor(hydro_contract.DT_DOUBLE, "double_val", [1.0]), floats,
         "input 'x' has dtype float64, contract says int32"),  # no int <-> float conversion
        (hydro_tensor(hydro_contract.DT_BOOL, "bool_val", [True]), floats,
         "input 'x' has dtype bool, contract says int32"),
        (ints, hydro_tensor(hydro_contract.DT_DOUBLE, "double_val", [1e300]),
         "input 'f' has float64 values that overflow float32 (the contract's dtype)"),
    ]
    for x, f, words in mistakes:
        with pytest.raises(grpc.RpcError) as caught:
            hydro_call(x, f)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == words
    request = PredictRequest()  # TF Predict converts the same way
    request.inputs["x"].CopyFrom(encode_tensor(np.array([7], np.int16)))
    request.inputs["f"].CopyFrom(encode_tensor(np.array([0.25], np.float16)))
    answer = predict(channel, request)
    assert decode_tensor(answer.outputs["y"]).tolist() == [7]
    assert decode_tensor(answer.outputs["g"]).tolist() == [0.25]


def test_half_val_out_of_float16_bit_patterns_is_malformed(started: Any, tmp_path: Path) -> None:
    half_io = ("h: {shape: [-1], type: float16}", "y: {shape: [-1], type: float16}")
    server = started(write_model(tmp_path / "cfg", "half", "half", "def predict(h):\n    return {'y': h}\n",
                                 *half_io))
    request = PredictRequest()
    request.inputs["h"].dtype = lookup_dtype("float16").enum  # type: ignore[assignment]
    request.inputs["h"].tensor_shape.dim.add().size = 2
    request.inputs["h"].half_val.extend([0x3C00, 0x13C00])  # 1.0, then 1.0 plus a bit beyond 16
    assert invalid_argument(server, request) == ("input 'h' is malformed: half_val holds values that are not "
                                                 "float16 bit patterns (-32768..65535)")
    response = PredictResponse()
    response.outputs["y"].CopyFrom(request.inputs["h"])
    response.outputs["y"].half_val[1] = -32769  # one below the sign-extended 0x8000
    with pytest.raises(OutputError, match="output 'y' is malformed: half_val holds values that are not float16"):
        to_response(Style.HYDROSPHERE, response, one(TensorSpec("y", lookup_dtype("float16"), (-1,))), "m")
