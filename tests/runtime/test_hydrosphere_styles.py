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
        (np.array([1.5]), "output 'y' has float64 values that int32 (the contract's dtype) cannot hold exactly"),
        (np.array([2**40]), "output 'y' has int64 values that int32"),
        ([0.5], "output 'y' has float64 values that int32"),
        (np.array([1 + 1j]), "output 'y' has complex128 values that int32"),
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


def test_float64_arrays_narrow_to_float32_only_when_exact() -> None:
    assert decode_tensor(to_response(Style.HYDROSPHERE3, {"y": np.array([0.5])}, one(FLOAT), "m").outputs["y"]) == 0.5
    with pytest.raises(OutputError, match="float64 values that float32"):
        to_response(Style.HYDROSPHERE3, {"y": np.array([0.1])}, one(FLOAT), "m")


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
    response = typed(shape, values)
    to_response(Style.HYDROSPHERE, response, one(TensorSpec("y", lookup_dtype("int32"), contract)), "m")
    np.testing.assert_array_equal(decode_tensor(response.outputs["y"]), np.array(expected, np.int32))


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
    to_response(Style.HYDROSPHERE, response, one(spec), "m")
    np.testing.assert_array_equal(decode_tensor(response.outputs["y"]), array.reshape(resolved))
