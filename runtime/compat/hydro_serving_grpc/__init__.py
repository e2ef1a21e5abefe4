"""A stand-in for `hydro_serving_grpc`, importable when the real package is not installed.

Model functions written for Hydrosphere's Python runtime do `import hydro_serving_grpc as hs`
and use `hs.TensorProto`, `hs.TensorShapeProto`, `hs.PredictResponse` and `hs.DT_*`. The
messages here have the same field names and numbers, so code written for them runs as is.
`make_ndarray` and `make_tensor_proto` replace the TensorFlow helpers of the same names.
Code written for hydro-serving-grpc 3.x imports the `serving.contract` / `serving.runtime`
subpackages instead (see `serving/`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow.tensor_shape_pb2 import TensorShapeProto as _TensorShapeProto
from protos.tensorflow.types_pb2 import (
    DT_BOOL,
    DT_COMPLEX64,
    DT_COMPLEX128,
    DT_DOUBLE,
    DT_FLOAT,
    DT_HALF,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_INVALID,
    DT_STRING,
    DT_UINT8,
    DT_UINT16,
    DT_UINT32,
    DT_UINT64,
    DataType,
)
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs import dtype_from_enum
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor

__all__ = [
    "DT_BOOL", "DT_COMPLEX64", "DT_COMPLEX128", "DT_DOUBLE", "DT_FLOAT", "DT_HALF", "DT_INT8",
    "DT_INT16", "DT_INT32", "DT_INT64", "DT_INVALID", "DT_STRING", "DT_UINT8", "DT_UINT16",
    "DT_UINT32", "DT_UINT64", "DataType", "ModelSpec", "PredictRequest", "PredictResponse",
    "TensorProto", "TensorShapeProto", "make_ndarray", "make_tensor_proto",
]


class _ShapeMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _TensorShapeProto)


class TensorShapeProto(metaclass=_ShapeMeta):
    """`hs.TensorShapeProto(dim=[...])` builds the real message. `hs.TensorShapeProto.Dim(size=d)`
    also takes a Dim message as `size` (as Hydrosphere's published example passes one)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _TensorShapeProto:  # type: ignore[misc]
        return _TensorShapeProto(*args, **kwargs)

    @staticmethod
    def Dim(size: Any = 0, name: str = "") -> _TensorShapeProto.Dim:
        if isinstance(size, _TensorShapeProto.Dim):
            size = size.size
        return _TensorShapeProto.Dim(size=size, name=name)


def make_ndarray(tensor: TensorProto) -> np.ndarray:
    """The numpy array a TensorProto holds (like `tf.make_ndarray`); a writable copy."""
    return np.array(decode_tensor(tensor))


def make_tensor_proto(values: Any, dtype: int | None = None) -> TensorProto:
    """A TensorProto for `values` (like `tf.make_tensor_proto`), optionally of DataType `dtype`."""
    row = dtype_from_enum(dtype) if dtype is not None else None
    array = np.asarray(values, dtype=row.numpy if row and row.is_numeric else None)
    return encode_tensor(array, row)
