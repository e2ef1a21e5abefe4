"""The one dtype table: contract name <-> TF DataType number <-> numpy dtype <-> proto field <-> JSON.

Every other module looks dtypes up here; adding a dtype is adding a row.

Columns of a row (`DType`):

- `name` / `aliases`: how contracts write the type (Hydrosphere and TF spellings, and the
  `DT_*` enum name, all case-insensitive),
- `enum`: the TF `DataType` number,
- `numpy`: the little-endian numpy dtype of decoded arrays (`object` holding `bytes` for strings),
- `proto_field`: the typed `TensorProto` field (`float_val`, `int_val`, ...) and `field_numpy`, the
  numpy dtype of that field's elements (`half_val` holds float16 bit patterns in int32, complex
  fields hold real/imaginary parts),
- `json_kind`: how an element is written in JSON,
- `oip`: the Open Inference Protocol's (KServe v2) datatype (`FP32`, `BYTES`, ...; "" where it has
  none) and `oip_contents`, its typed `InferTensorContents` field ("" where it has none: FP16 travels
  as raw bytes only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from tensorcodecs.errors import UnknownDTypeError

_OBJ: np.dtype[Any] = np.dtype(object)


class JsonKind(Enum):
    """How a dtype's elements are written in JSON."""

    INT = "int"
    FLOAT = "float"  # numbers, and NaN / Infinity / -Infinity
    BOOL = "bool"  # true / false only
    STRING = "string"  # UTF-8 text, or {"b64": ...} for raw bytes
    BYTES = "bytes"  # {"b64": ...}, or text taken as its UTF-8 bytes
    COMPLEX = "complex"  # [real, imag] pairs


@dataclass(frozen=True, slots=True)
class DType:
    """One row of the table."""

    name: str
    enum: int
    numpy: np.dtype[Any]
    proto_field: str
    json_kind: JsonKind
    aliases: tuple[str, ...] = ()
    field_numpy: np.dtype[Any] = _OBJ
    oip: str = ""
    oip_contents: str = ""

    @property
    def is_numeric(self) -> bool:
        """Whether elements are fixed-size numbers (so `tensor_content` can carry them)."""
        return self.json_kind not in (JsonKind.STRING, JsonKind.BYTES)

    @property
    def enum_name(self) -> str:
        """The TF spelling, e.g. `DT_FLOAT`."""
        return ENUM_NAMES[self.enum]

    def __str__(self) -> str:
        return self.name


# TF DataType numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_UINT16, DT_COMPLEX128, DT_HALF = 8, 9, 10, 17, 18, 19
DT_UINT32, DT_UINT64 = 22, 23

ENUM_NAMES: dict[int, str] = {
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

_I4 = np.dtype("<i4")

TABLE: tuple[DType, ...] = (
    # name, enum, numpy dtype, typed field, JSON kind, aliases, typed field's element dtype,
    # Open Inference Protocol datatype and contents field
    DType("float32", DT_FLOAT, np.dtype("<f4"), "float_val", JsonKind.FLOAT, ("float",), np.dtype("<f4"),
          "FP32", "fp32_contents"),
    DType("float64", DT_DOUBLE, np.dtype("<f8"), "double_val", JsonKind.FLOAT, ("double",), np.dtype("<f8"),
          "FP64", "fp64_contents"),
    DType("float16", DT_HALF, np.dtype("<f2"), "half_val", JsonKind.FLOAT, ("half",), _I4, "FP16", ""),
    DType("int8", DT_INT8, np.dtype("i1"), "int_val", JsonKind.INT, (), _I4, "INT8", "int_contents"),
    DType("int16", DT_INT16, np.dtype("<i2"), "int_val", JsonKind.INT, (), _I4, "INT16", "int_contents"),
    DType("int32", DT_INT32, np.dtype("<i4"), "int_val", JsonKind.INT, ("int",), _I4, "INT32", "int_contents"),
    DType("int64", DT_INT64, np.dtype("<i8"), "int64_val", JsonKind.INT, ("long",), np.dtype("<i8"),
          "INT64", "int64_contents"),
    DType("uint8", DT_UINT8, np.dtype("u1"), "int_val", JsonKind.INT, (), _I4, "UINT8", "uint_contents"),
    DType("uint16", DT_UINT16, np.dtype("<u2"), "int_val", JsonKind.INT, (), _I4, "UINT16", "uint_contents"),
    DType("uint32", DT_UINT32, np.dtype("<u4"), "uint32_val", JsonKind.INT, (), np.dtype("<u4"),
          "UINT32", "uint_contents"),
    DType("uint64", DT_UINT64, np.dtype("<u8"), "uint64_val", JsonKind.INT, (), np.dtype("<u8"),
          "UINT64", "uint64_contents"),
    DType("bool", DT_BOOL, np.dtype("?"), "bool_val", JsonKind.BOOL, ("boolean",), np.dtype("?"),
          "BOOL", "bool_contents"),
    DType("string", DT_STRING, _OBJ, "string_val", JsonKind.STRING, ("str",), _OBJ, "BYTES", "bytes_contents"),
    DType("bytes", DT_STRING, _OBJ, "string_val", JsonKind.BYTES, ("binary",), _OBJ, "BYTES", "bytes_contents"),
    DType("complex64", DT_COMPLEX64, np.dtype("<c8"), "scomplex_val", JsonKind.COMPLEX, (), np.dtype("<f4")),
    DType("complex128", DT_COMPLEX128, np.dtype("<c16"), "dcomplex_val", JsonKind.COMPLEX, (),
          np.dtype("<f8")),
)


def _build_name_index() -> dict[str, DType]:
    index: dict[str, DType] = {}
    for row in TABLE:
        for spelling in (row.name, *row.aliases):
            index[spelling] = row
        # DT_STRING names the text row; "bytes" is reached by its own names only.
        if row.json_kind is not JsonKind.BYTES:
            index[ENUM_NAMES[row.enum].lower()] = row
    return index


_BY_NAME = _build_name_index()
_BY_ENUM = {row.enum: row for row in TABLE if row.json_kind is not JsonKind.BYTES}
_BY_NUMPY = {row.numpy: row for row in TABLE if row.numpy != _OBJ}
# BYTES names the text row, as DT_STRING does: the protocol's BYTES carry text as UTF-8.
_BY_OIP = {row.oip: row for row in TABLE if row.oip and row.json_kind is not JsonKind.BYTES}
OIP_DATATYPES: tuple[str, ...] = tuple(_BY_OIP)

ACCEPTED_NAMES: tuple[str, ...] = tuple(
    sorted({spelling for row in TABLE for spelling in (row.name, *row.aliases)})
    + sorted(ENUM_NAMES[e] for e in _BY_ENUM)
)


def lookup_dtype(name: str) -> DType:
    """The row for a contract type name (`int32`, `float`, `DT_INT32`, ...), case-insensitive."""
    row = _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
    if row is None:
        raise UnknownDTypeError(f"unknown type {name!r}; accepted: {', '.join(ACCEPTED_NAMES)}")
    return row


def dtype_from_enum(number: int) -> DType:
    """The row for a TF DataType number (DT_STRING gives the `string` row)."""
    row = _BY_ENUM.get(number)
    if row is None:
        raise UnknownDTypeError(f"unsupported TensorFlow DataType {number}")
    return row


def dtype_from_oip(datatype: str) -> DType:
    """The row for an Open Inference Protocol datatype (`FP32`, `BYTES`, ...; exact spelling, as
    the protocol's servers compare it); BYTES gives the `string` row."""
    row = _BY_OIP.get(datatype) if isinstance(datatype, str) else None
    if row is None:
        raise UnknownDTypeError(f"unsupported datatype {datatype!r}; accepted: {', '.join(OIP_DATATYPES)}")
    return row


def dtype_from_numpy(dtype: np.dtype[Any]) -> DType:
    """The row for a numpy dtype (either byte order); object/bytes/str arrays map to `string`."""
    if dtype.kind in "OSU":
        return _BY_NAME["string"]
    row = _BY_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if row is None:
        raise UnknownDTypeError(f"unsupported numpy dtype {dtype}")
    return row


def fits_integer_dtype(values: np.ndarray[Any, Any], target: np.dtype[Any] | type[Any]) -> bool:
    """Whether every value of the integer array `values` is within integer dtype `target`'s
    range (compared exactly, whatever the two signednesses); an empty array always fits."""
    if not values.size:
        return True
    info = np.iinfo(target)
    return info.min <= int(values.min()) and int(values.max()) <= info.max
