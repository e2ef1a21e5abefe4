"""numpy arrays <-> the Open Inference Protocol's (KServe v2) tensor forms on gRPC.

A tensor travels as `datatype` + `shape` with its elements either in one raw buffer
(`raw_input_contents` / `raw_output_contents`: row-major, little-endian, BOOL one byte per element,
each BYTES element a 4-byte little-endian length then its bytes, as Triton and MLServer write them)
or in the typed `InferTensorContents` field of its datatype (`fp32_contents`, `int_contents`, ...;
FP16 has none, so it is raw only). The datatype table is `dtypes` (`oip`, `oip_contents`).

Both directions check what the other side cannot: the element count against the shape, negative
dims, a raw buffer's length, and integers of a narrower datatype than their contents field
(`int_contents` holds INT8 as int32: 300 is refused, never wrapped).

Writing an array as another datatype never changes its values silently (`_cast`): integers go to
integers within the target's range, floats to floats rounded to the target (a finite value that
would become inf is refused), integers and floats across kinds only when every value comes through
exactly (2.0 as INT32, 3 as FP32; not 2.9, not 2**24 + 1 as FP32), bools only as BOOL; anything
else (text as numbers, a value out of range) is a CodecError.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from protos.inference.grpc_service_pb2 import InferTensorContents
from tensorcodecs.dtypes import DType, JsonKind, dtype_from_numpy, dtype_from_oip, fits_integer_dtype
from tensorcodecs.errors import CodecError

NDArray = np.ndarray[Any, Any]
_LENGTH = struct.Struct("<I")


MAX_RANK = 64  # numpy's, as TensorFlow's TensorShape allows 254: more is no tensor either can hold
MAX_DIM = 2**63 - 1  # an int64 dim
MAX_SPAN = 2**58  # elements of 8 bytes, within a signed 64-bit byte count, with room


def shape_elements(shape: Sequence[int], field: str | None = None) -> int:
    """The elements a tensor's shape holds. A shape no tensor can have is a CodecError: a negative
    dim (a tensor's shape is concrete: -1 belongs to metadata only), more than 64 dims, a dim
    beyond int64, or non-zero dims whose product numpy cannot hold even for an empty tensor."""
    if len(shape) > MAX_RANK:
        raise CodecError(f"shape has {len(shape)} dimensions, more than {MAX_RANK}", field)
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int) or size > MAX_DIM:
            raise CodecError(f"shape must hold sizes (integers from 0 to 2^63-1), got {list(shape)}", field)
        if size < 0:
            raise CodecError(f"shape {list(shape)} has a negative dimension", field)
    count = math.prod(shape)
    if count > MAX_SPAN or (not count and math.prod(size for size in shape if size) > MAX_SPAN):
        raise CodecError(f"shape {list(shape)} is larger than any tensor can be", field)
    return count


def oip_datatype(array: NDArray) -> str:
    """The protocol's datatype of an array (strings and bytes: BYTES)."""
    row = dtype_from_numpy(array.dtype)
    if not row.oip:
        raise CodecError(f"the Open Inference Protocol has no datatype for {array.dtype}")
    return row.oip


def raw_to_array(raw: bytes | memoryview, datatype: str, shape: Sequence[int],
                 field: str | None = None) -> NDArray:
    """The array of one raw contents entry (numeric: a read-only view of `raw`, no copy)."""
    row = _row(datatype, field)
    count = shape_elements(shape, field)
    if row.is_numeric:
        expected = count * row.numpy.itemsize
        if len(raw) != expected:
            raise CodecError(f"raw contents of {len(raw)} bytes for {count} {datatype} elements "
                             f"of shape {list(shape)} ({expected} bytes expected)", field)
        if row.json_kind is JsonKind.BOOL:  # any non-zero byte is true, as C++ servers read it
            flags: NDArray = np.frombuffer(raw, dtype=np.uint8) != 0
            return flags.reshape(shape)
        return np.frombuffer(raw, dtype=row.numpy).reshape(shape)
    return _raw_bytes_elements(memoryview(raw), count, field).reshape(shape)


def array_to_raw(array: NDArray, datatype: str | None = None) -> bytes:
    """One raw contents entry of `array` (converted to `datatype` when given: e.g. a contract's)."""
    row = _row(datatype, None) if datatype else dtype_from_numpy(array.dtype)
    if row.is_numeric:
        return np.ascontiguousarray(_cast(array, row)).tobytes()
    parts: list[bytes] = []
    for value in array.ravel().tolist():
        data = _as_bytes(value)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def contents_to_array(contents: InferTensorContents, datatype: str, shape: Sequence[int],
                      field: str | None = None) -> NDArray:
    """The array of a tensor's typed contents: its datatype's field only, exactly the shape's
    element count, integers within the datatype's range."""
    row = _row(datatype, field)
    count = shape_elements(shape, field)
    if not row.oip_contents:
        raise CodecError(f"{datatype} has no typed contents field: send it in raw contents", field)
    values = getattr(contents, row.oip_contents)
    if len(values) != count:
        raise CodecError(f"{len(values)} values in {row.oip_contents} for shape {list(shape)} "
                         f"({count} elements)", field)
    if not row.is_numeric:
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.array(values, dtype=_FIELD_NUMPY[row.oip_contents])
    if row.json_kind is JsonKind.INT and wide.dtype != row.numpy and not fits_integer_dtype(wide, row.numpy):
        raise CodecError(f"a value of {row.oip_contents} is out of range for {datatype}", field)
    return wide.astype(row.numpy).reshape(shape)


def array_to_contents(array: NDArray, contents: InferTensorContents, datatype: str | None = None) -> None:
    """Write `array` into the typed field of its datatype (or `datatype`) of `contents`."""
    row = _row(datatype, None) if datatype else dtype_from_numpy(array.dtype)
    if not row.oip_contents:
        raise CodecError(f"{row.oip or array.dtype} has no typed contents field: it travels as raw contents")
    values = getattr(contents, row.oip_contents)
    if row.is_numeric:
        values.extend(_cast(array, row).ravel().tolist())
    else:
        values.extend(_as_bytes(value) for value in array.ravel().tolist())


# The numpy dtype of each contents field's elements.
_FIELD_NUMPY: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype("?"),
    "int_contents": np.dtype("<i4"),
    "int64_contents": np.dtype("<i8"),
    "uint_contents": np.dtype("<u4"),
    "uint64_contents": np.dtype("<u8"),
    "fp32_contents": np.dtype("<f4"),
    "fp64_contents": np.dtype("<f8"),
}


_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float"}


def _cast(array: NDArray, row: DType) -> NDArray:
    """`array` as `row`'s numeric dtype, or a CodecError when that would change a value (the
    rule of the module docstring, the runtime's `conversions` rule for numbers)."""
    target, source = row.numpy, array.dtype
    if source == target:
        return array
    kind, want = _KINDS.get(source.kind), _KINDS.get(target.kind)
    if kind is None or want is None or (kind == "bool") != (want == "bool"):
        raise CodecError(f"{source} values cannot be sent as {row.oip}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(target)
        if kind == "float" and want == "float":
            if array.size and np.any(np.isfinite(array) & ~np.isfinite(converted)):
                raise CodecError(f"a {source} value overflows {row.oip}")
        elif kind == "int" and want == "int":
            if not fits_integer_dtype(array, target):
                raise CodecError(f"a {source} value is out of range for {row.oip}")
        elif not np.array_equal(converted.astype(source), array):  # across kinds: exact values only
            raise CodecError(f"{source} values cannot be sent as {row.oip} unchanged (a fraction, "
                             "out of range or not exactly representable)")
    return converted


def _row(datatype: str | None, field: str | None) -> DType:
    try:
        return dtype_from_oip(datatype or "")
    except CodecError as error:
        raise CodecError(error.message, field) from None


def _raw_bytes_elements(raw: memoryview, count: int, field: str | None) -> NDArray:
    array = np.empty(count, dtype=object)
    offset, end = 0, len(raw)
    for index in range(count):
        if offset + 4 > end:
            raise CodecError(f"raw BYTES contents end before element {index} of {count}", field)
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise CodecError(f"raw BYTES element {index} of {length} bytes runs past the contents' end", field)
        array[index] = bytes(raw[offset:offset + length])
        offset += length
    if offset != end:
        raise CodecError(f"raw BYTES contents hold {end - offset} bytes after the {count} elements "
                         f"of the shape", field)
    return array


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")  # as the JSON path writes a lone surrogate
    raise CodecError(f"a BYTES element must be bytes or text, not {type(value).__name__}")
