"""The one dtype table: contract name <-> TF DataType number <-> numpy dtype <-> proto field.

Every other module looks dtypes up here; adding a dtype is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from tensorcodecs.errors import UnknownDTypeError


class JsonKind(Enum):
    """How a dtype's elements are written in JSON."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"  # UTF-8 text, or {"b64": ...} for raw bytes
    BYTES = "bytes"  # {"b64": ...}, or text taken as its UTF-8 bytes
    COMPLEX = "complex"  # [real, imag] pairs


@dataclass(frozen=True, slots=True)
class DType:
    """One row of the table."""

    name: str
    enum: int
    numpy: np.dtype  # type: ignore[type-arg]
    proto_field: str
    json_kind: JsonKind
    aliases: tuple[str, ...] = ()

    @property
    def is_numeric(self) -> bool:
        """Whether elements are fixed-size numbers (so `tensor_content` can carry them)."""
        return self.json_kind not in (JsonKind.STRING, JsonKind.BYTES)

    def __str__(self) -> str:
        return self.name


# TF DataType numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_UINT16, DT_COMPLEX128, DT_HALF = 8, 9, 10, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

TABLE: tuple[DType, ...] = (
    DType("float32", DT_FLOAT, np.dtype("<f4"), "float_val", JsonKind.FLOAT, ("float",)),
    DType("float64", DT_DOUBLE, np.dtype("<f8"), "double_val", JsonKind.FLOAT, ("double",)),
    DType("float16", DT_HALF, np.dtype("<f2"), "half_val", JsonKind.FLOAT, ("half",)),
    DType("int8", DT_INT8, np.dtype("i1"), "int_val", JsonKind.INT),
    DType("int16", DT_INT16, np.dtype("<i2"), "int_val", JsonKind.INT),
    DType("int32", DT_INT32, np.dtype("<i4"), "int_val", JsonKind.INT, ("int",)),
    DType("int64", DT_INT64, np.dtype("<i8"), "int64_val", JsonKind.INT, ("long",)),
    DType("uint8", DT_UINT8, np.dtype("u1"), "int_val", JsonKind.INT),
    DType("uint16", DT_UINT16, np.dtype("<u2"), "int_val", JsonKind.INT),
    DType("uint32", DT_UINT32, np.dtype("<u4"), "uint32_val", JsonKind.INT),
    DType("uint64", DT_UINT64, np.dtype("<u8"), "uint64_val", JsonKind.INT),
    DType("bool", DT_BOOL, np.dtype("?"), "bool_val", JsonKind.BOOL, ("boolean",)),
    DType("string", DT_STRING, np.dtype(object), "string_val", JsonKind.STRING, ("str",)),
    DType("bytes", DT_STRING, np.dtype(object), "string_val", JsonKind.BYTES, ("binary",)),
    DType("complex64", DT_COMPLEX64, np.dtype("<c8"), "scomplex_val", JsonKind.COMPLEX),
    DType("complex128", DT_COMPLEX128, np.dtype("<c16"), "dcomplex_val", JsonKind.COMPLEX),
)

_ENUM_NAMES = {
    DT_FLOAT: "DT_FLOAT",
    DT_DOUBLE: "DT_DOUBLE",
    DT_HALF: "DT_HALF",
    DT_INT8: "DT_INT8",
    DT_INT16: "DT_INT16",
    DT_INT32: "DT_INT32",
    DT_INT64: "DT_INT64",
    DT_UINT8: "DT_UINT8",
    DT_UINT16: "DT_UINT16",
    DT_UINT32: "DT_UINT32",
    DT_UINT64: "DT_UINT64",
    DT_BOOL: "DT_BOOL",
    DT_STRING: "DT_STRING",
    DT_COMPLEX64: "DT_COMPLEX64",
    DT_COMPLEX128: "DT_COMPLEX128",
}


def _build_name_index() -> dict[str, DType]:
    index: dict[str, DType] = {}
    for row in TABLE:
        for spelling in (row.name, *row.aliases):
            index[spelling] = row
        # DT_STRING names the text row; "bytes" is reached by its own name only.
        if row.json_kind is not JsonKind.BYTES:
            index[_ENUM_NAMES[row.enum].lower()] = row
    return index


_BY_NAME = _build_name_index()
_BY_ENUM = {row.enum: row for row in TABLE if row.json_kind is not JsonKind.BYTES}
_BY_NUMPY = {row.numpy: row for row in TABLE if row.numpy != np.dtype(object)}

ACCEPTED_NAMES: tuple[str, ...] = tuple(
    sorted({spelling for row in TABLE for spelling in (row.name, *row.aliases)})
    + sorted(_ENUM_NAMES[e] for e in _BY_ENUM)
)


def lookup_dtype(name: str) -> DType:
    """The row for a contract type name (`int32`, `float`, `DT_INT32`, ...), case-insensitive."""
    row = _BY_NAME.get(name.strip().lower())
    if row is None:
        raise UnknownDTypeError(f"unknown type {name!r}; accepted: {', '.join(ACCEPTED_NAMES)}")
    return row


def dtype_from_enum(number: int) -> DType:
    """The row for a TF DataType number (DT_STRING gives the `string` row)."""
    row = _BY_ENUM.get(number)
    if row is None:
        raise UnknownDTypeError(f"unsupported TensorFlow DataType {number}")
    return row


def dtype_from_numpy(dtype: np.dtype) -> DType:  # type: ignore[type-arg]
    """The row for a numpy dtype; object/bytes/str arrays map to `string`."""
    if dtype.kind in "OSU":
        return _BY_NAME["string"]
    row = _BY_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if row is None:
        raise UnknownDTypeError(f"unsupported numpy dtype {dtype}")
    return row
