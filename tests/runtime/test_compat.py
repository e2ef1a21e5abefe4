"""Hydrosphere model functions run as published, against the runtime's stand-in modules."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from protos.tensorflow_serving.predict_pb2 import PredictRequest
from runtime.model import load_model, provide_compat_modules
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor

# Hydrosphere's "Serving Python model" tutorial function, with only its typo
# (`requets_number`) fixed.
SEED_FUNCTION = '''import tensorflow as tf
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
'''

SERVING_YAML = '''kind: Model
name: "increment_model"
runtime: "hydrosphere/serving-runtime-python-3.6:0.1.2-rc0"
install-command: "pip install -r requirements.txt"
payload:
  - "src/"
  - "requirements.txt"
contract:
  name: increment
  inputs:
    number:
      shape: [-1]
      type: int32
      profile: numerical
  outputs:
    number:
      shape: [-1]
      type: int32
      profile: numerical
'''


def test_the_tutorial_function_runs_unchanged(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "serving.yaml").write_text(SERVING_YAML)
    (tmp_path / "src" / "func_main.py").write_text(SEED_FUNCTION)
    model = load_model(tmp_path, chdir=False)
    request = PredictRequest()
    request.inputs["number"].CopyFrom(encode_tensor(np.array([1, 2, 3], np.int32)))
    response = model.predict(request)
    assert decode_tensor(response.outputs["number"]).tolist() == [2, 3, 4]


def test_the_compat_modules() -> None:
    provide_compat_modules()
    import hydro_serving_grpc as hs
    import tensorflow as tf

    proto = tf.make_tensor_proto([[1.5, 2.5]], dtype=hs.DT_FLOAT)
    assert proto.dtype == hs.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    array = hs.make_ndarray(proto)
    array[0, 0] = 9  # a writable copy
    assert array.tolist() == [[9.0, 2.5]]
    assert isinstance(hs.TensorShapeProto(dim=[hs.TensorShapeProto.Dim(size=3)]), hs.TensorShapeProto)
    with pytest.raises(AttributeError, match=r"only tensorflow\.make_ndarray"):
        _ = tf.constant


def test_messages_read_by_a_real_tf_make_ndarray() -> None:
    """Runs where TensorFlow is installed (it is too large for the default test set-up)."""
    tf = pytest.importorskip("tensorflow", exc_type=ImportError)
    if not hasattr(tf, "constant"):
        pytest.skip("only the runtime's stand-in tensorflow module is importable")
    for array in (np.array([1, 2, 3], np.int32), np.array([[0.5, 1.5]], np.float32),
                  np.array([b"a", b"bc"], object), np.array(7, np.int64), np.array([1.5], np.float16)):
        for typed in (False, True):
            read = tf.make_ndarray(encode_tensor(array, typed=typed))
            assert read.shape == array.shape
            assert read.tolist() == array.tolist()


def test_the_3x_layout_speaks_hydrosphere_3x_bytes() -> None:
    provide_compat_modules()
    contract = "hydro_serving_grpc.serving.contract"
    ModelField = importlib.import_module(f"{contract}.field_pb2").ModelField
    ModelSignature = importlib.import_module(f"{contract}.signature_pb2").ModelSignature
    Tensor, TensorShape = (getattr(importlib.import_module(f"{contract}.tensor_pb2"), name)
                           for name in ("Tensor", "TensorShape"))
    types = importlib.import_module(f"{contract}.types_pb2")
    DT_DOUBLE, NUMERICAL, DataType = types.DT_DOUBLE, types.NUMERICAL, types.DataType
    HydroRequest = importlib.import_module("hydro_serving_grpc.serving.runtime.api_pb2").PredictRequest

    field = ModelField(name="x", shape=TensorShape(dims=[-1, 2]), dtype=DT_DOUBLE, profile=NUMERICAL)
    signature = ModelSignature(signature_name="infer", inputs=[field], outputs=[field])
    # Field numbers of hydro-serving-protos 3.x: signature_name=1, inputs=2; name=1, shape=2, dtype=4.
    assert signature.SerializeToString().startswith(b"\x0a\x05infer\x12")
    assert ModelField.FromString(field.SerializeToString()).WhichOneof("type_or_subfields") == "dtype"
    request = HydroRequest(inputs={"x": Tensor(dtype=DT_DOUBLE, double_val=[1.0], tensor_shape=TensorShape())})
    assert DataType.Name(request.inputs["x"].dtype) == "DT_DOUBLE"
