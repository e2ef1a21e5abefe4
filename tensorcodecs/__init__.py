"""Pure conversion between JSON values, numpy arrays and TensorFlow TensorProto messages.

Nothing here does I/O or knows about HTTP or gRPC; every function is driven by a
contract (`TensorSpec`) and the one dtype table in `dtypes`.
"""

from tensorcodecs.contract import Signature, TensorSpec, parse_shape
from tensorcodecs.dtypes import DType, dtype_from_enum, dtype_from_numpy, lookup_dtype
from tensorcodecs.errors import CodecError, UnknownDTypeError

__all__ = [
    "CodecError",
    "DType",
    "Signature",
    "TensorSpec",
    "UnknownDTypeError",
    "dtype_from_enum",
    "dtype_from_numpy",
    "lookup_dtype",
    "parse_shape",
]
