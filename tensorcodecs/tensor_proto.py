"""numpy arrays <-> TensorFlow TensorProto messages.

Numeric tensors are written to `tensor_content` (one buffer copy, always little-endian) unless
typed fields are asked for; strings always go to `string_val`. Both forms are read back, and
TF's fill rule for typed fields applies: no values means all zeros (empty strings), fewer values
than elements repeat the last one. `resolve_unknown_dim` turns a -1 size (Hydrosphere's outputs
declare one) into the size the values give.

Deliberate differences from TensorFlow's `Tensor::FromProto`: more typed values than the shape
holds is an error here (TF silently ignores the extra values), and `tensor_content` on a string
tensor is ignored in favour of `string_val` (TF rejects it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs.dtypes import DType, JsonKind, dtype_from_enum, dtype_from_numpy, fits_integer_dtype
from tensorcodecs.errors import CodecError

NDArray = np.ndarray[Any, Any]


def encode_tensor(array: NDArray, dtype: DType | None = None, *, typed: bool = False) -> TensorProto:
    """A TensorProto holding `array` (converted to `dtype` when given)."""
    return fill_tensor(TensorProto(), array, dtype, typed=typed)


def fill_tensor(
    proto: TensorProto, array: NDArray, dtype: DType | None = None, *, typed: bool = False
) -> TensorProto:
    """Write `array` into an empty TensorProto in place (e.g. a request's map entry)."""
    array = np.asarray(array)
    row = dtype or dtype_from_numpy(array.dtype)
    proto.dtype = row.enum  # type: ignore[assignment]
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    if not row.is_numeric:
        proto.string_val.extend([_as_bytes(v) for v in array.ravel().tolist()])
    elif array.size == 0:
        pass  # no values: the shape alone says it all
    elif not typed:
        # tobytes() is the one copy; it is C-ordered and, with a "<" dtype, little-endian.
        proto.tensor_content = _as_numeric(array, row).tobytes()
    else:
        getattr(proto, row.proto_field).extend(_typed_values(_as_numeric(array, row), row))
    return proto


def shape_elements(proto: TensorProto) -> int:
    """The elements `proto`'s shape declares (an unknown, negative dim: 0), read before decoding
    so that a hand-made or corrupt tensor can be refused before its array is allocated."""
    return math.prod(max(dim.size, 0) for dim in proto.tensor_shape.dim)


def decode_tensor(proto: TensorProto) -> NDArray:
    """The array a TensorProto holds, whichever field carries its values.

    Arrays read from `tensor_content` are read-only views of the message's bytes (no copy).
    """
    row = dtype_from_enum(proto.dtype)
    shape, count = _shape_of(proto)
    if row.is_numeric:
        content = proto.tensor_content  # read once: each access copies the bytes
        if content:
            need = count * row.numpy.itemsize
            if len(content) != need:
                raise CodecError(
                    f"tensor_content holds {len(content)} bytes; shape {list(shape)} of {row.name} "
                    f"needs {need}"
                )
            return np.frombuffer(content, dtype=row.numpy).reshape(shape)
    values = _values_from_typed_field(proto, row)
    return _fill(values, count, row).reshape(shape)


def tensor_header(proto: TensorProto, array: NDArray, dtype: DType | None = None) -> NDArray:
    """Write only the dtype and shape of a numeric `array` into an empty TensorProto, for values
    that travel beside the message (the local wire); returns the C-ordered little-endian array
    whose bytes are those values (`array` itself when it already is one: no copy)."""
    array = np.asarray(array)
    row = dtype or dtype_from_numpy(array.dtype)
    if not row.is_numeric:
        raise CodecError(f"{row.name} values cannot travel as raw bytes")
    proto.dtype = row.enum  # type: ignore[assignment]
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    return _as_numeric(array, row)


def attached_array(proto: TensorProto, data: memoryview | bytes | bytearray) -> NDArray:
    """The array of a TensorProto written by `tensor_header`, whose values are `data` (a view of
    it: writable when `data` is)."""
    row = dtype_from_enum(proto.dtype)
    if not row.is_numeric:
        raise CodecError(f"{row.name} values cannot travel as raw bytes")
    shape, count = _shape_of(proto)
    need, got = count * row.numpy.itemsize, memoryview(data).nbytes
    if got != need:
        raise CodecError(f"{got} bytes came for shape {list(shape)} of {row.name}, which needs {need}")
    return np.frombuffer(data, dtype=row.numpy).reshape(shape)


def resolve_unknown_dim(proto: TensorProto) -> None:
    """Replace a -1 size in the shape (at most one) by the size the values give, in place, as
    Hydrosphere did for outputs declared `TensorShapeProto(dim=[Dim(size=-1)])`."""
    dims = proto.tensor_shape.dim
    unknown = [index for index, dim in enumerate(dims) if dim.size == -1]
    if not unknown:
        return
    shape = [dim.size for dim in dims]
    known = 1
    for size in shape:
        known *= size if size != -1 else 1
    count = value_count(proto)
    if len(unknown) > 1 or known <= 0 or count % known:
        raise CodecError(f"{count} values do not fit shape {shape}")
    dims[unknown[0]].size = count // known


def value_count(proto: TensorProto) -> int:
    """How many elements the message's values hold (before TF's fill rule)."""
    row = dtype_from_enum(proto.dtype)
    content = proto.tensor_content
    if row.is_numeric and content:
        if len(content) % row.numpy.itemsize:
            raise CodecError(f"tensor_content holds {len(content)} bytes, not a whole number of {row.name}")
        return len(content) // row.numpy.itemsize
    values = len(getattr(proto, row.proto_field))
    return values // 2 if row.json_kind is JsonKind.COMPLEX else values


MAX_RANK = 32  # numpy's limit on the dimensions of an array (numpy 1; numpy 2 takes 64)
MAX_ELEMENTS_OF_SHAPE = 2**40  # the other sizes of an empty tensor: beyond some such bound numpy refuses the shape


def _shape_of(proto: TensorProto) -> tuple[tuple[int, ...], int]:
    """The tensor's shape and element count; unknown rank or sizes are errors."""
    shape_proto = proto.tensor_shape
    if shape_proto.unknown_rank:
        raise CodecError("tensor shape has unknown rank")
    shape = tuple([dim.size for dim in shape_proto.dim])  # a list first: faster than a generator
    if shape and min(shape) < 0:
        raise CodecError(f"tensor shape {list(shape)} has an unknown dimension")
    if len(shape) > MAX_RANK:
        raise CodecError(f"tensor shape has {len(shape)} dimensions; at most {MAX_RANK} are supported")
    count = math.prod(shape)
    if count == 0 and math.prod([size for size in shape if size]) > MAX_ELEMENTS_OF_SHAPE:
        # An empty tensor whose other sizes no array could have (numpy refuses to make it).
        raise CodecError(f"tensor shape {list(shape)} is too large")
    return shape, count


def _as_numeric(array: NDArray, row: DType) -> NDArray:
    if array.dtype.kind in "OSU":
        raise CodecError(f"cannot write {array.dtype} values as {row.name}")
    if row.json_kind is not JsonKind.COMPLEX and array.dtype.kind == "c":
        raise CodecError(f"cannot write complex values as {row.name}")
    return np.ascontiguousarray(array, dtype=row.numpy)


def _typed_values(array: NDArray, row: DType) -> list[Any]:
    flat = array.reshape(-1)
    if row.numpy == np.float16:
        return flat.view(np.uint16).astype(np.int32).tolist()
    if row.json_kind is JsonKind.COMPLEX:
        return flat.view(row.field_numpy).tolist()
    return flat.tolist()


def _values_from_typed_field(proto: TensorProto, row: DType) -> NDArray:
    field = getattr(proto, row.proto_field)
    if not row.is_numeric:
        values = np.empty(len(field), dtype=object)
        values[:] = list(field)
        return values
    # Repeated scalar fields expose a buffer: asarray is one C-speed copy.
    parts = np.asarray(field, dtype=row.field_numpy)
    if row.numpy == np.float16:
        # 16 bits, unsigned or sign-extended (some writers widen an int16); more would wrap.
        if parts.size and (parts.min() < -0x8000 or parts.max() > 0xFFFF):
            raise CodecError(f"{row.proto_field} holds values that are not float16 bit patterns "
                             "(-32768..65535)")
        return parts.astype(np.uint16).view(np.float16)
    if row.json_kind is JsonKind.COMPLEX:
        if parts.size % 2:
            raise CodecError(f"{row.proto_field} holds an odd number of parts ({parts.size})")
        return parts.view(row.numpy)
    if parts.dtype != row.numpy:
        if not fits_integer_dtype(parts, row.numpy):
            raise CodecError(f"{row.proto_field} holds values out of range for {row.name}")
        return parts.astype(row.numpy)
    return parts


def _fill(values: NDArray, count: int, row: DType) -> NDArray:
    """TF's rule: fewer values than elements repeat the last value; none means zeros."""
    have = len(values)
    if have == count:
        return values
    if have > count:
        raise CodecError(f"{row.proto_field} holds {have} values for {count} elements")
    if have == 0:
        if row.is_numeric:
            return np.zeros(count, dtype=row.numpy)
        filled = np.empty(count, dtype=object)
        filled.fill(b"")
        return filled
    padded = np.empty(count, dtype=values.dtype)
    padded[:have] = values
    padded[have:] = values[-1]
    return padded


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise CodecError(f"string tensors hold bytes or str, got {type(value).__name__}")
