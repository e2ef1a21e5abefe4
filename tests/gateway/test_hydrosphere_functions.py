"""Hydrosphere's published model functions, served as they are, through the gateway (a real
uvicorn) and a real embedded runtime, over gRPC and over the local wire."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from tensorcodecs.dtypes import TABLE, JsonKind
from tests.conftest import runtimes_for, serve_app, write_app, write_model

# The increment tutorial (docs "Serving Python model"), its `requets_number` typo corrected.
INCREMENT = """
import tensorflow as tf
import hydro_serving_grpc as hs  # this package is already present in the runtime

def increment(number):   # <- keep in mind the signature
    request_number = tf.make_ndarray(number)
    response_number = request_number + 1

    response_tensor_shape = [
        hs.TensorShapeProto.Dim(size=dim) for dim in number.tensor_shape.dim]
    response_tensor = hs.TensorProto(
        int_val=response_number.flatten(),
        dtype=hs.DT_INT32,
        tensor_shape=hs.TensorShapeProto(dim=response_tensor_shape)
    )

    return hs.PredictResponse(
        outputs={"number": response_tensor})
"""

# The same function reading the typed field, as users wrote it without TensorFlow.
INCREMENT_INT_VAL = """
import hydro_serving_grpc as hs

def increment(number):
    response_tensor = hs.TensorProto(
        int_val=[v + 1 for v in number.int_val],
        dtype=hs.DT_INT32,
        tensor_shape=number.tensor_shape)
    return hs.PredictResponse(outputs={"number": response_tensor})
"""

SCALAR_ECHO = """
import hydro_serving_grpc as hs

def echo(input):
    return hs.PredictResponse(outputs={"output": hs.TensorProto(
        dtype=hs.DT_INT64, int64_val=input.int64_val, tensor_shape=hs.TensorShapeProto())})
"""

# The getting-started function: the values of `x.double_val` reshaped, a -1 output size.
GETTING_STARTED = """
import numpy as np
import hydro_serving_grpc as hs

def infer(x):
    data = np.array(x.double_val).reshape([dim.size for dim in x.tensor_shape.dim])
    result = data.sum(axis=1)
    y = hs.TensorProto(
        dtype=hs.DT_DOUBLE,
        double_val=result.flatten(),
        tensor_shape=hs.TensorShapeProto(dim=[hs.TensorShapeProto.Dim(size=-1)]))
    return hs.PredictResponse(outputs={"y": y})
"""

STRING_VAL = """
import hydro_serving_grpc as hs

def shout(text):
    words = [s.decode("utf-8").upper().encode("utf-8") for s in text.string_val]
    return hs.PredictResponse(outputs={"text": hs.TensorProto(
        dtype=hs.DT_STRING, string_val=words, tensor_shape=text.tensor_shape)})
"""

CALCULATOR = """
import hydro_serving_grpc as hs

def add(a, b):
    result = a.int_val[0] + b.int_val[0]
    return hs.PredictResponse(outputs={"sum": hs.TensorProto(
        dtype=hs.DT_INT32, int_val=[result], tensor_shape=hs.TensorShapeProto())})
"""

NUMPY_3X = """
import numpy as np
from hydro_serving_grpc.serving.contract.tensor_pb2 import Tensor, TensorShape
from hydro_serving_grpc.serving.contract.types_pb2 import DT_INT64

def predict(x, n, unit):
    assert isinstance(x, np.ndarray) and x.dtype == np.float32, (type(x), x.dtype)
    assert isinstance(n, np.int64), type(n)
    assert isinstance(unit, np.str_), type(unit)
    return {
        "scaled": x * n,
        "total": float(x.sum()),
        "label": unit + "!",
        "index": Tensor(dtype=DT_INT64, int64_val=list(range(len(x))), tensor_shape=TensorShape(dims=[-1])),
    }
"""

LARGE = 20_000  # float32 values: 80 KB, beyond the local wire's ATTACH_MIN

LARGE_SUM = """
import hydro_serving_grpc as hs

def total(x):
    assert not x.tensor_content
    return hs.PredictResponse(outputs={"sum": hs.TensorProto(
        dtype=hs.DT_DOUBLE, double_val=[sum(x.float_val)], tensor_shape=hs.TensorShapeProto())})
"""

# Every dtype of the table: one input and output per row; 2.x reads and writes the typed field.
ROWS = list(TABLE)
# TensorFlow's typed field of each DataType (tensor.proto), the one Hydrosphere's gateway filled.
TF_FIELDS = {"DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val", "DT_INT16": "int_val",
             "DT_INT8": "int_val", "DT_UINT8": "int_val", "DT_UINT16": "int_val", "DT_INT64": "int64_val",
             "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val", "DT_BOOL": "bool_val", "DT_STRING": "string_val",
             "DT_HALF": "half_val", "DT_COMPLEX64": "scomplex_val", "DT_COMPLEX128": "dcomplex_val"}
ECHO_2X = """
import hydro_serving_grpc as hs

FIELDS = {fields!r}

def echo(**inputs):
    outputs = {{}}
    for name, tensor in inputs.items():
        assert not tensor.tensor_content, name
        field = FIELDS[name]
        out = hs.TensorProto(dtype=tensor.dtype, tensor_shape=tensor.tensor_shape)
        getattr(out, field).extend(getattr(tensor, field))
        outputs["y_" + name[2:]] = out
    return hs.PredictResponse(outputs=outputs)
"""
ECHO_3X = """
import numpy as np
from hydro_serving_grpc.serving.contract.types_pb2 import DT_STRING

KINDS = {kinds!r}

def echo(**inputs):
    for name, value in inputs.items():
        assert isinstance(value, np.ndarray), (name, type(value))
        assert value.dtype.str == KINDS[name] or value.dtype.kind == KINDS[name], (name, value.dtype)
    return {{"y_" + name[2:]: value for name, value in inputs.items()}}
"""
ECHO_NUMPY = """
def echo(**inputs):
    for name, value in inputs.items():
        if name in ("x_string", "x_bytes"):
            kind = str if name == "x_string" else bytes
            assert all(isinstance(v, kind) for v in value.ravel()), (name, value)
    return {"y_" + name[2:]: value for name, value in inputs.items()}
"""

WORDS = """
def words(t):
    return {"n": len(str(t).split())}
"""


def sample(row: Any) -> list[Any]:
    """Two JSON values of the row's dtype, at its extremes where it has them."""
    if row.json_kind is JsonKind.INT:
        info = np.iinfo(row.numpy)
        return [int(info.min), int(info.max)]
    if row.json_kind is JsonKind.FLOAT:
        return [0.5, -1000.5] if row.name == "float16" else [0.1, -3.0e38 if row.name == "float32" else 1e300]
    samples: dict[JsonKind, list[Any]] = {JsonKind.BOOL: [True, False], JsonKind.STRING: ["cm", "né"],
                                          JsonKind.BYTES: [{"b64": "AP8="}, {"b64": ""}],  # b"\x00\xff", b""
                                          JsonKind.COMPLEX: [[1.5, -2.0], [0.0, 0.25]]}
    return samples[row.json_kind]


def field_lines(rows: list[Any], prefix: str) -> str:
    return "\n    ".join(f"{prefix}_{row.name}: {{shape: [2], type: {row.name}}}" for row in rows)


def edge_lines(rows: list[Any], prefix: str) -> str:
    """A scalar and an empty ([0]-shaped) tensor of every dtype."""
    return "\n    ".join(f"{prefix}_{row.name}_scalar: {{shape: scalar, type: {row.name}}}\n    "
                          f"{prefix}_{row.name}_empty: {{shape: [0], type: {row.name}}}" for row in rows)


def write_function(config_dir: Path, name: str, function: str, source: str, inputs: str, outputs: str,
                   extra: str = "") -> None:
    """Model and application `name` whose contract names `function`."""
    yaml = write_model(config_dir, name, name, textwrap.dedent(source), inputs, outputs, extra) / "serving.yaml"
    yaml.write_text(yaml.read_text().replace("contract:\n", f"contract:\n  name: {function}\n"))
    write_app(config_dir, name, name)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hydrosphere")
    number = "number: {shape: [-1], type: int32}"
    large_io = ("x: {shape: [-1], type: float32}", "sum: {shape: scalar, type: double}")
    write_function(path, "increment", "increment", INCREMENT, number, number)
    write_function(path, "increment_int_val", "increment", INCREMENT_INT_VAL, number, number)
    write_function(path, "increment_workers", "increment", INCREMENT_INT_VAL, number, number, "workers: 2")
    write_function(path, "echo", "echo", SCALAR_ECHO, "input: {shape: scalar, type: int64}",
                   "output: {shape: scalar, type: int64}")
    write_function(path, "infer", "infer", GETTING_STARTED, "x: {shape: [-1, 2], type: double}",
                   "y: {shape: [-1], type: double}")
    write_function(path, "shout", "shout", STRING_VAL, "text: {shape: [-1], type: string}",
                   "text: {shape: [-1], type: string}")
    write_function(path, "add", "add", CALCULATOR,
                   "a: {shape: scalar, type: int32}\n    b: {shape: scalar, type: int32}",
                   "sum: {shape: scalar, type: int32}")
    write_function(path, "numpy3x", "predict", NUMPY_3X,
                   "x: {shape: [-1], type: float32}\n    n: {shape: scalar, type: int64}\n"
                   "    unit: {shape: scalar, type: string}",
                   "scaled: {shape: [-1], type: float32}\n    total: {shape: scalar, type: float64}\n"
                   "    label: {shape: scalar, type: string}\n    index: {shape: [-1], type: int64}")
    write_function(path, "total", "total", LARGE_SUM, *large_io)
    write_function(path, "total_workers", "total", LARGE_SUM, *large_io, "workers: 2")
    fields = {f"x_{row.name}": TF_FIELDS[row.enum_name] for row in ROWS}
    edge_fields = {f"x_{row.name}_{edge}": TF_FIELDS[row.enum_name] for row in ROWS for edge in ("scalar", "empty")}
    kinds = {f"x_{row.name}": "U" if row.json_kind is JsonKind.STRING else "O" if row.json_kind is JsonKind.BYTES
             else row.numpy.str for row in ROWS}
    write_function(path, "words", "words", WORDS, "t: {shape: scalar, type: string}", "n: {shape: scalar, type: int32}")
    write_function(path, "nothing", "nothing", "def nothing(x):\n    return None\n", "x: {shape: [-1], type: int32}",
                   "y: {shape: [-1], type: float32}")
    for name, source in (("echo2x", ECHO_2X.format(fields=fields)), ("echo3x", ECHO_3X.format(kinds=kinds)),
                         ("echonumpy", ECHO_NUMPY)):
        write_function(path, name, "echo", source, field_lines(ROWS, "x"), field_lines(ROWS, "y"))
    write_function(path, "echo2x_workers", "echo", ECHO_2X.format(fields=fields), field_lines(ROWS, "x"),
                   field_lines(ROWS, "y"), "workers: 2")
    write_function(path, "echo2x_edges", "echo", ECHO_2X.format(fields=edge_fields), edge_lines(ROWS, "x"),
                   edge_lines(ROWS, "y"))
    return path


@pytest.fixture(scope="module", params=["grpc", "local"])
def config(request: pytest.FixtureRequest, config_dir: Path) -> Iterator[Config]:
    """Real runtimes for every model, reached over gRPC or over the local wire."""
    with runtimes_for(load_config(config_dir), local_wire=request.param == "local") as config:
        yield config


async def post_all(config: Config, calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[int, Any]]:
    async with serve_app(create_app(Settings(), config)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        answers = []
        for app, body in calls:
            response = await client.post(f"/gateway/applications/{app}", json=body)
            answers.append((response.status_code, response.json()))
        return answers


async def test_tutorial_functions_answer_as_on_hydrosphere(config: Config) -> None:
    big = np.arange(LARGE, dtype=np.float32) / 8
    calls: list[tuple[str, dict[str, Any]]] = [
        ("increment", {"number": [1, 2, 3]}),
        ("increment_int_val", {"number": [1, 2, 3]}),
        ("echo", {"input": 7}),
        ("infer", {"x": [[1.0, 2.0], [3.0, 4.5]]}),
        ("shout", {"text": ["cm", "né"]}),
        ("add", {"a": 2, "b": 40}),
        ("numpy3x", {"x": [1.5, 2.5], "n": 2, "unit": "cm"}),
        ("total", {"x": big.tolist()}),
        ("total_workers", {"x": big.tolist()}),
        ("increment_workers", {"number": [5, 6]}),
    ]
    assert await post_all(config, calls) == [
        (200, {"number": [2, 3, 4]}),
        (200, {"number": [2, 3, 4]}),
        (200, {"output": 7}),
        (200, {"y": [3.0, 7.5]}),
        (200, {"text": ["CM", "NÉ"]}),
        (200, {"sum": 42}),
        (200, {"scaled": [3.0, 5.0], "total": 4.0, "label": "cm!", "index": [0, 1]}),
        (200, {"sum": float(big.astype(np.float64).sum())}),
        (200, {"sum": float(big.astype(np.float64).sum())}),
        (200, {"number": [6, 7]}),
    ]


@pytest.mark.parametrize("app", ["echo2x", "echo2x_workers", "echo3x", "echonumpy"])
async def test_every_dtype_reaches_each_style_and_comes_back(config: Config, app: str) -> None:
    body = {f"x_{row.name}": sample(row) for row in ROWS}
    [(status, answer)] = await post_all(config, [(app, body)])
    assert status == 200, answer
    expected = {f"y_{row.name}": sample(row) for row in ROWS}
    assert answer == expected


async def test_scalars_and_empty_tensors_of_every_dtype_reach_a_2x_function(config: Config) -> None:
    body: dict[str, Any] = {}
    for row in ROWS:
        body[f"x_{row.name}_scalar"], body[f"x_{row.name}_empty"] = sample(row)[0], []
    [(status, answer)] = await post_all(config, [("echo2x_edges", body)])
    assert status == 200, answer
    assert answer == {"y" + name[1:]: value for name, value in body.items()}


async def test_text_is_str_and_client_and_model_mistakes_are_told_apart(config: Config) -> None:
    answers = await post_all(config, [("words", {"t": "two words"}), ("words", {"t": {"b64": "/w=="}}),
                                      ("nothing", {"x": [1]})])
    assert answers[0] == (200, {"n": 2})  # str(t) of a numpy-style string input is its text
    assert answers[1][0] == 400
    assert answers[1][1]["error"]["code"] == "invalid_argument"
    assert answers[1][1]["error"]["message"].startswith("input 't' is declared string but holds bytes that are not")
    assert answers[2][0] == 500
    assert "the function returned None, expected a dict with the outputs ['y']" in answers[2][1]["error"]["message"]
