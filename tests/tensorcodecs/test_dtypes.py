"""The dtype table: names, enum numbers, numpy dtypes and typed fields agree."""

from __future__ import annotations

import numpy as np
import pytest

from protos.tensorflow import types_pb2
from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs import (
    CodecError,
    UnknownDTypeError,
    dtype_from_enum,
    dtype_from_numpy,
    lookup_dtype,
)
from tensorcodecs.dtypes import ACCEPTED_NAMES, TABLE, JsonKind

SPELLINGS = [
    ("int32", "int32"), ("int", "int32"), ("DT_INT32", "int32"),
    ("float32", "float32"), ("float", "float32"), ("DT_FLOAT", "float32"),
    ("float64", "float64"), ("double", "float64"), ("DT_DOUBLE", "float64"),
    ("float16", "float16"), ("half", "float16"), ("DT_HALF", "float16"),
    ("int64", "int64"), ("long", "int64"), ("DT_INT64", "int64"),
    ("int8", "int8"), ("DT_INT8", "int8"), ("int16", "int16"), ("DT_INT16", "int16"),
    ("uint8", "uint8"), ("DT_UINT8", "uint8"), ("uint16", "uint16"), ("DT_UINT16", "uint16"),
    ("uint32", "uint32"), ("DT_UINT32", "uint32"), ("uint64", "uint64"), ("DT_UINT64", "uint64"),
    ("bool", "bool"), ("boolean", "bool"), ("DT_BOOL", "bool"),
    ("string", "string"), ("str", "string"), ("DT_STRING", "string"),
    ("bytes", "bytes"), ("binary", "bytes"),
    ("complex64", "complex64"), ("DT_COMPLEX64", "complex64"),
    ("complex128", "complex128"), ("DT_COMPLEX128", "complex128"),
    (" Float32 ", "float32"), ("dt_float", "float32"),
]


@pytest.mark.parametrize(("spelling", "name"), SPELLINGS)
def test_lookup_accepts_hydrosphere_and_tf_spellings(spelling: str, name: str) -> None:
    assert lookup_dtype(spelling).name == name


def test_unknown_type_names_the_accepted_ones() -> None:
    with pytest.raises(UnknownDTypeError) as info:
        lookup_dtype("float128")
    assert isinstance(info.value, CodecError)
    assert "unknown type 'float128'" in info.value.message
    for name in ("float32", "DT_FLOAT", "half", "bytes", "complex128", "uint64"):
        assert name in info.value.message
    assert set(ACCEPTED_NAMES) >= {"int32", "DT_INT32", "double"}


def test_rows_match_tensorflow_enum_numbers() -> None:
    for row in TABLE:
        assert types_pb2.DataType.Value(row.enum_name) == row.enum
        assert dtype_from_enum(row.enum).enum == row.enum


def test_every_typed_field_exists_and_numpy_dtypes_are_little_endian() -> None:
    fields = TensorProto.DESCRIPTOR.fields_by_name
    for row in TABLE:
        assert row.proto_field in fields
        assert row.numpy.byteorder in "<|="
        assert row.is_numeric == (row.json_kind not in (JsonKind.STRING, JsonKind.BYTES))


def test_dtype_from_enum_gives_string_for_dt_string_and_rejects_unknown() -> None:
    assert dtype_from_enum(7).name == "string"
    with pytest.raises(UnknownDTypeError, match="DataType 14"):
        dtype_from_enum(14)  # bfloat16


@pytest.mark.parametrize("row", [r for r in TABLE if r.is_numeric], ids=lambda r: r.name)
def test_dtype_from_numpy_round_trips_both_byte_orders(row: object) -> None:
    from tensorcodecs.dtypes import DType

    assert isinstance(row, DType)
    assert dtype_from_numpy(row.numpy) is row
    assert dtype_from_numpy(row.numpy.newbyteorder(">")) is row


def test_dtype_from_numpy_strings_and_unsupported() -> None:
    for dtype in (np.dtype(object), np.dtype("S3"), np.dtype("U2")):
        assert dtype_from_numpy(dtype).name == "string"
    with pytest.raises(UnknownDTypeError, match="datetime64"):
        dtype_from_numpy(np.dtype("datetime64[s]"))
