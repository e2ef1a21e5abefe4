"""How model functions are called and what they may return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protos.tensorflow_serving.predict_pb2 import PredictResponse
from runtime.errors import OutputError
from runtime.styles import Style, detect_style, to_response
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor
from tests.conftest import CONFIG_DIR

FLOATS = TensorSpec("y", lookup_dtype("float32"), (-1,))
ONE_OUTPUT = Signature("f", outputs={"y": FLOATS})


def test_styles_of_the_examples() -> None:
    assert detect_style(CONFIG_DIR / "models/increment_model/src/func_main.py") is Style.HYDROSPHERE
    assert detect_style(CONFIG_DIR / "models/scaler_model/src/func_main.py") is Style.NUMPY


@pytest.mark.parametrize(
    ("source", "style"),
    [
        ("import tensorflow as tf\n", Style.HYDROSPHERE),
        ("from hydro_serving_grpc.tf import x\n", Style.HYDROSPHERE),
        ("import numpy as np\n", Style.NUMPY),
        ("", Style.NUMPY),
    ],
)
def test_style_detection(tmp_path: Path, source: str, style: Style) -> None:
    path = tmp_path / "func_main.py"
    path.write_text(source)
    assert detect_style(path) is style


def test_one_array_answers_a_single_output_contract() -> None:
    response = to_response(Style.NUMPY, np.array([1.5], np.float32), ONE_OUTPUT, "m")
    assert decode_tensor(response.outputs["y"]).tolist() == [1.5]


def test_lists_and_safe_casts_are_accepted() -> None:
    signature = Signature("f", outputs={"y": FLOATS, "n": TensorSpec("n", lookup_dtype("int64"), ())})
    response = to_response(Style.NUMPY, {"y": np.array([1, 2], np.int16), "n": 3}, signature, "m")
    assert decode_tensor(response.outputs["y"]).dtype == np.float32
    assert decode_tensor(response.outputs["n"]).tolist() == 3


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ({"z": np.array([1.0], np.float32)}, "output 'y' is missing from the answer"),
        ({"y": np.array([1e300], np.float64)}, "output 'y' has float64 values that overflow float32"),
        ({"y": np.array([[1.0]], np.float32)}, "output 'y' has shape [1, 1], contract says [-1]"),
        ({"y": ["a"]}, "output 'y' has dtype <U1, contract says float32"),
        ("text", "output 'y' has dtype <U4, contract says float32"),
        ({"y": [[1.0], [2.0, 3.0]]}, "output 'y' is not float32"),
    ],
)
def test_outputs_outside_the_contract(result: object, words: str) -> None:
    with pytest.raises(OutputError, match=r"^model m: ") as caught:
        to_response(Style.NUMPY, result, ONE_OUTPUT, "m")
    assert words in str(caught.value)


def test_several_outputs_need_a_dict() -> None:
    signature = Signature("f", outputs={"a": FLOATS, "b": FLOATS})
    with pytest.raises(OutputError, match="expected a dict with the outputs"):
        to_response(Style.NUMPY, np.zeros(1, np.float32), signature, "m")


def test_hydrosphere_results_are_checked_too() -> None:
    response = PredictResponse()
    response.outputs["y"].CopyFrom(encode_tensor(np.array([1], np.int32)))
    with pytest.raises(OutputError, match="output 'y' has dtype int32, contract says float32"):
        to_response(Style.HYDROSPHERE, response, ONE_OUTPUT, "m")
    with pytest.raises(OutputError, match="the function returned dict, expected a PredictResponse"):
        to_response(Style.HYDROSPHERE, {"y": 1}, ONE_OUTPUT, "m")
