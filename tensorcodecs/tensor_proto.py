"""numpy arrays <-> TensorFlow TensorProto messages.

Numeric tensors are written to `tensor_content` (one buffer copy) unless typed fields are
asked for; both forms, and TF's fill rules for short value lists, are read back.
"""

from __future__ import annotations

import numpy as np

from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs.dtypes import DType, JsonKind, dtype_from_enum, dtype_from_numpy
from tensorcodecs.errors import CodecError

NDArray = np.ndarray  # type: ignore[type-arg]


def encode_tensor(array: NDArray, dtype: DType | None = None, *, typed: bool = False) -> TensorProto:
    """A TensorProto holding `array` (converted to `dtype` when given)."""
    return fill_tensor(TensorProto(), array, dtype, typed=typed)


def fill_tensor(
    proto: TensorProto, array: NDArray, dtype: DType | None = None, *, typed: bool = False
) -> TensorProto:
    """Write `array` into an empty TensorProto in place (e.g. a request's map entry)."""
    row = dtype or dtype_from_numpy(array.dtype)
    proto.dtype = row.enum  # type: ignore[assignment]
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    if not row.is_numeric:
        proto.string_val.extend(_as_bytes(v) for v in array.ravel().tolist())
    elif not typed:
        proto.tensor_content = np.ascontiguousarray(array, dtype=row.numpy).tobytes()
    else:
        getattr(proto, row.proto_field).extend(_typed_values(array.astype(row.numpy, copy=False), row))
    return proto


def decode_tensor(proto: TensorProto) -> NDArray:
    """The array a TensorProto holds, whichever field carries its values."""
    row = dtype_from_enum(proto.dtype)
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise CodecError(f"tensor shape {list(shape)} has an unknown dimension")
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content and row.is_numeric:
        content = proto.tensor_content
        if len(content) != count * row.numpy.itemsize:
            raise CodecError(
                f"tensor_content holds {len(content)} bytes; shape {list(shape)} of {row.name} "
                f"needs {count * row.numpy.itemsize}"
            )
        return np.frombuffer(content, dtype=row.numpy).reshape(shape)
    values = _values_from_typed_field(proto, row)
    return _fill(values, count, row).reshape(shape)


def _typed_values(array: NDArray, row: DType) -> list[object]:
    flat = array.ravel()
    if row.numpy == np.float16:
        return flat.view(np.uint16).astype(np.int32).tolist()  # type: ignore[no-any-return]
    if row.json_kind is JsonKind.COMPLEX:
        return flat.view(flat.real.dtype).tolist()  # type: ignore[no-any-return]
    return flat.tolist()  # type: ignore[no-any-return]


def _values_from_typed_field(proto: TensorProto, row: DType) -> NDArray:
    field = getattr(proto, row.proto_field)
    if not row.is_numeric:
        values = np.empty(len(field), dtype=object)
        values[:] = list(field)
        return values
    if row.numpy == np.float16:
        return np.asarray(field, dtype=np.int32).astype(np.uint16).view(np.float16)
    if row.json_kind is JsonKind.COMPLEX:
        parts = np.asarray(field, dtype=row.numpy.type(0).real.dtype)
        if parts.size % 2:
            raise CodecError(f"{row.proto_field} holds an odd number of parts")
        return parts.view(row.numpy)
    return np.asarray(field, dtype=row.numpy)


def _fill(values: NDArray, count: int, row: DType) -> NDArray:
    """TF's rule: fewer values than elements repeat the last value; none means zeros."""
    if len(values) == count:
        return values
    if len(values) > count:
        raise CodecError(f"{row.proto_field} holds {len(values)} values for {count} elements")
    if len(values) == 0:
        if row.is_numeric:
            return np.zeros(count, dtype=row.numpy)
        filled = np.empty(count, dtype=object)
        filled[:] = [b""] * count
        return filled
    padded = np.empty(count, dtype=values.dtype)
    padded[: len(values)] = values
    padded[len(values) :] = values[-1]
    return padded


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise CodecError(f"string tensors hold bytes or str, got {type(value).__name__}")
