"""The Open Inference Protocol's gRPC tensor forms: raw contents and typed contents, both ways."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from protos.inference.grpc_service_pb2 import InferTensorContents
from tensorcodecs.dtypes import OIP_DATATYPES, dtype_from_oip, lookup_dtype
from tensorcodecs.errors import CodecError
from tensorcodecs.oip_tensors import (
    array_to_contents,
    array_to_raw,
    contents_to_array,
    oip_datatype,
    raw_to_array,
    shape_elements,
)

NUMERIC = [name for name in OIP_DATATYPES if name != "BYTES"]


@pytest.mark.parametrize("datatype", NUMERIC)
def test_numeric_raw_round_trip(datatype: str) -> None:
    row = dtype_from_oip(datatype)
    array = (np.arange(6) % 2 == 1) if datatype == "BOOL" else np.arange(6).astype(row.numpy)
    array = array.reshape(2, 3)
    raw = array_to_raw(array)
    assert len(raw) == 6 * row.numpy.itemsize
    back = raw_to_array(raw, datatype, [2, 3])
    assert back.dtype == row.numpy
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(back, array)
    assert oip_datatype(array) == datatype


def test_raw_is_little_endian_row_major() -> None:
    assert array_to_raw(np.array([[1, 2], [3, 4]], dtype=">i4")) == struct.pack("<4i", 1, 2, 3, 4)
    assert raw_to_array(struct.pack("<2f", 1.5, -2.0), "FP32", [2]).tolist() == [1.5, -2.0]


def test_raw_bool_reads_any_nonzero_byte_as_true() -> None:
    assert raw_to_array(b"\x00\x02\x01", "BOOL", [3]).tolist() == [False, True, True]


def test_raw_bytes_are_length_prefixed() -> None:
    array = np.array([b"ab", "é", b""], dtype=object)
    raw = array_to_raw(array)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x02\x00\x00\x00\xc3\xa9" + b"\x00\x00\x00\x00"
    assert raw_to_array(raw, "BYTES", [3, 1]).tolist() == [[b"ab"], ["é".encode()], [b""]]
    assert oip_datatype(array) == "BYTES"


@pytest.mark.parametrize(("raw", "message"), [
    (b"\x05\x00\x00\x00ab", "runs past"),
    (b"\x01\x00", "end before element 0"),
    (b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x00", "1 bytes after"),
])
def test_raw_bytes_malformed(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message) as caught:
        raw_to_array(raw, "BYTES", [2] if message != "runs past" else [1], field="inputs[0]")
    assert caught.value.field == "inputs[0]"


def test_raw_length_must_match_shape() -> None:
    with pytest.raises(CodecError, match=r"raw contents of 8 bytes for 3 FP32 elements of shape \[3\] \(12 bytes"):
        raw_to_array(b"\0" * 8, "FP32", [3])


@pytest.mark.parametrize(("shape", "message"), [
    ([1] * 65, "shape has 65 dimensions, more than 64"),
    ([2**63], r"integers from 0 to 2\^63-1"),
    ([0, 2**62], "larger than any tensor can be"),  # empty, yet beyond what numpy can shape
    ([2**31, 2**31], "larger than any tensor can be"),
])
def test_shapes_no_tensor_can_have_are_codec_errors(shape: list[int], message: str) -> None:
    with pytest.raises(CodecError, match=message) as caught:
        shape_elements(shape, "x")
    assert caught.value.field == "x"
    with pytest.raises(CodecError, match=message):
        raw_to_array(b"", "INT32", shape)
    assert shape_elements([1] * 64) == 1
    assert shape_elements([0, 2**40]) == 0


def test_negative_dims_and_unknown_datatypes_refused() -> None:
    with pytest.raises(CodecError, match="negative dimension"):
        shape_elements([2, -1])
    with pytest.raises(CodecError, match="unsupported datatype 'BF16'"):
        raw_to_array(b"", "BF16", [0])
    with pytest.raises(CodecError, match="unsupported datatype 'fp32'"):  # exact spelling, as servers compare
        raw_to_array(b"", "fp32", [0])
    with pytest.raises(CodecError, match="no datatype for complex64"):
        oip_datatype(np.zeros(1, dtype=np.complex64))


@pytest.mark.parametrize("datatype", [name for name in OIP_DATATYPES if name != "FP16"])
def test_contents_round_trip(datatype: str) -> None:
    row = dtype_from_oip(datatype)
    if datatype == "BYTES":
        array = np.array([b"x", b"yz"], dtype=object)
    elif datatype == "BOOL":
        array = np.array([True, False])
    else:
        array = np.array([1, 2], dtype=row.numpy)
    contents = InferTensorContents()
    array_to_contents(array, contents)
    assert list(getattr(contents, row.oip_contents)) == array.tolist()
    back = contents_to_array(contents, datatype, [2])
    assert back.dtype == row.numpy
    assert back.tolist() == array.tolist()


def test_contents_narrow_integers_are_range_checked() -> None:
    contents = InferTensorContents(int_contents=[1, 300])
    with pytest.raises(CodecError, match="out of range for INT8") as caught:
        contents_to_array(contents, "INT8", [2], field="inputs[1]")
    assert caught.value.field == "inputs[1]"
    assert contents_to_array(contents, "INT16", [2]).tolist() == [1, 300]
    with pytest.raises(CodecError, match="out of range for UINT8"):
        contents_to_array(InferTensorContents(uint_contents=[256]), "UINT8", [1])


def test_contents_count_must_match_shape_and_field() -> None:
    with pytest.raises(CodecError, match=r"1 values in fp32_contents for shape \[2\] \(2 elements\)"):
        contents_to_array(InferTensorContents(fp32_contents=[1.0]), "FP32", [2])
    # values in another datatype's field are not this tensor's
    with pytest.raises(CodecError, match="0 values in fp32_contents"):
        contents_to_array(InferTensorContents(fp64_contents=[1.0]), "FP32", [1])
    with pytest.raises(CodecError, match="FP16 has no typed contents field"):
        contents_to_array(InferTensorContents(), "FP16", [1])
    with pytest.raises(CodecError, match="travels as raw contents"):
        array_to_contents(np.zeros(1, np.float16), InferTensorContents())


def test_contract_dtypes_convert_on_write() -> None:
    assert raw_to_array(array_to_raw(np.array([1, 2]), "FP64"), "FP64", [2]).tolist() == [1.0, 2.0]
    contents = InferTensorContents()
    array_to_contents(np.array(["a"], dtype=object), contents, "BYTES")
    assert list(contents.bytes_contents) == [b"a"]
    assert lookup_dtype("string").oip == "BYTES"
    assert lookup_dtype("bytes").oip == "BYTES"
    assert lookup_dtype("complex64").oip == ""


@pytest.mark.parametrize(("array", "datatype"), [
    (np.array([300, -129]), "INT8"),
    (np.array([-1]), "UINT32"),
    (np.array([2.9]), "INT32"),
    (np.array([np.nan]), "INT64"),
    (np.array([2**24 + 1]), "FP32"),
    (np.array([1e300]), "FP32"),
    (np.array([b"1.5"], dtype=object), "FP32"),
    (np.array([b"abc"], dtype=object), "FP32"),
    (np.array(["1"]), "INT32"),
    (np.array([True]), "INT32"),
    (np.array([1]), "BOOL"),
])
def test_writing_as_another_datatype_never_changes_values(array: np.ndarray, datatype: str) -> None:
    with pytest.raises(CodecError):
        array_to_raw(array, datatype)
    with pytest.raises(CodecError):
        array_to_contents(array, InferTensorContents(), datatype)


def test_writing_as_another_datatype_keeps_values_that_fit() -> None:
    assert raw_to_array(array_to_raw(np.array([-128, 127]), "INT8"), "INT8", [2]).tolist() == [-128, 127]
    assert raw_to_array(array_to_raw(np.array([2.0, -3.0]), "INT32"), "INT32", [2]).tolist() == [2, -3]
    narrowed = raw_to_array(array_to_raw(np.array([0.1, np.inf]), "FP16"), "FP16", [2])
    assert narrowed.tolist() == [np.float16(0.1), np.inf]  # rounded, as the native codec rounds
    contents = InferTensorContents()
    array_to_contents(np.array([3, 4], np.uint8), contents, "INT64")
    assert list(contents.int64_contents) == [3, 4]
    contents = InferTensorContents()
    array_to_contents(np.array([0.5]), contents, "FP32")
    assert list(contents.fp32_contents) == [0.5]


def test_a_lone_surrogate_in_raw_bytes_is_written_as_the_json_path_writes_it() -> None:
    assert array_to_raw(np.array(["\ud800"], dtype=object)) == b"\x03\x00\x00\x00\xed\xa0\x80"
