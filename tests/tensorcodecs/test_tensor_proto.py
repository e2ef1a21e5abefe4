"""numpy <-> TensorProto: tensor_content and every typed field, fill rules, scalars, empty tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow.types_pb2 import DT_FLOAT
from tensorcodecs import CodecError, UnknownDTypeError, lookup_dtype
from tensorcodecs.dtypes import TABLE, JsonKind
from tensorcodecs.tensor_proto import (
    attached_array,
    decode_tensor,
    encode_tensor,
    fill_tensor,
    shape_elements,
    tensor_header,
)

NDArray = np.ndarray[Any, Any]


def wire(proto: TensorProto) -> TensorProto:
    """What the other end of a gRPC call sees."""
    return TensorProto.FromString(proto.SerializeToString())


def proto(dtype: int, shape: tuple[int, ...], **fields: Any) -> TensorProto:
    message = TensorProto(dtype=dtype)  # type: ignore[arg-type]
    for size in shape:
        message.tensor_shape.dim.add().size = size
    for name, values in fields.items():
        if name == "tensor_content":
            message.tensor_content = values
        else:
            getattr(message, name).extend(values)
    return message


# ---------------------------------------------------------------- golden vectors

TYPED = [
    # dtype, array, typed field, its values
    ("float32", np.array([0.5, -1], np.float32), "float_val", [0.5, -1.0]),
    ("float64", np.array([[0.1], [2]], np.float64), "double_val", [0.1, 2.0]),
    ("float16", np.array([1, -2, 0.5], np.float16), "half_val", [0x3C00, 0xC000, 0x3800]),
    ("int8", np.array([-128, 127], np.int8), "int_val", [-128, 127]),
    ("int16", np.array([-32768], np.int16), "int_val", [-32768]),
    ("int32", np.array([1, 2, 3], np.int32), "int_val", [1, 2, 3]),
    ("int64", np.array([-(2**63)], np.int64), "int64_val", [-(2**63)]),
    ("uint8", np.array([255], np.uint8), "int_val", [255]),
    ("uint16", np.array([65535], np.uint16), "int_val", [65535]),
    ("uint32", np.array([2**32 - 1], np.uint32), "uint32_val", [2**32 - 1]),
    ("uint64", np.array([2**64 - 1], np.uint64), "uint64_val", [2**64 - 1]),
    ("bool", np.array([True, False]), "bool_val", [True, False]),
    ("string", np.array([b"a", "é".encode()], object), "string_val", [b"a", b"\xc3\xa9"]),
    ("complex64", np.array([1 + 2j, 3 - 4j], np.complex64), "scomplex_val", [1.0, 2.0, 3.0, -4.0]),
    ("complex128", np.array([0.5j], np.complex128), "dcomplex_val", [0.0, 0.5]),
]


@pytest.mark.parametrize(("dtype", "array", "field", "values"), TYPED, ids=[t[0] for t in TYPED])
def test_typed_fields_golden(dtype: str, array: NDArray, field: str, values: list[Any]) -> None:
    row = lookup_dtype(dtype)
    message = wire(encode_tensor(array, row, typed=True))
    assert message.dtype == row.enum
    assert [d.size for d in message.tensor_shape.dim] == list(array.shape)
    assert list(getattr(message, field)) == values
    assert message.tensor_content == b""
    decoded = decode_tensor(message)
    assert decoded.dtype == row.numpy
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize(("dtype", "array", "field", "values"), TYPED, ids=[t[0] for t in TYPED])
def test_tensor_content_golden(dtype: str, array: NDArray, field: str, values: list[Any]) -> None:
    row = lookup_dtype(dtype)
    message = wire(encode_tensor(array, row))
    if row.is_numeric:
        assert message.tensor_content == array.astype(row.numpy).tobytes()
        assert len(getattr(message, field)) == 0
    else:
        assert list(message.string_val) == values  # strings always use string_val
    np.testing.assert_array_equal(decode_tensor(message), array)


def test_tensor_content_bytes_are_little_endian() -> None:
    message = encode_tensor(np.array([1, 256], ">i4"))
    assert message.tensor_content == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    assert encode_tensor(np.array([1.0], ">f8")).tensor_content == np.array([1.0], "<f8").tobytes()
    assert encode_tensor(np.array([1, 2], ">u2"), typed=True).int_val == [1, 2]


def test_encode_converts_to_the_contract_dtype() -> None:
    message = encode_tensor(np.array([1, 2], np.int64), lookup_dtype("float32"))
    assert message.dtype == lookup_dtype("float32").enum
    assert decode_tensor(message).tolist() == [1.0, 2.0]
    with pytest.raises(CodecError, match="cannot write complex values as float32"):
        encode_tensor(np.array([1j]), lookup_dtype("float32"))
    with pytest.raises(CodecError, match="as int32"):
        encode_tensor(np.array(["a"]), lookup_dtype("int32"))


def test_fill_tensor_writes_into_a_map_entry() -> None:
    from protos.tensorflow_serving.predict_pb2 import PredictRequest

    request = PredictRequest()
    fill_tensor(request.inputs["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    back = decode_tensor(wire(request.inputs["x"]))
    assert back.shape == (2, 3)
    assert back.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_scalars_and_empty_tensors() -> None:
    for typed in (False, True):
        scalar = wire(encode_tensor(np.array(7, np.int64), typed=typed))
        assert len(scalar.tensor_shape.dim) == 0
        assert decode_tensor(scalar).shape == ()
        assert decode_tensor(scalar).item() == 7
        empty = wire(encode_tensor(np.zeros((2, 0, 3), np.float32), typed=typed))
        assert empty.tensor_content == b""
        assert decode_tensor(empty).shape == (2, 0, 3)
    strings = decode_tensor(wire(encode_tensor(np.array(b"s", object))))
    assert strings.shape == ()
    assert strings.item() == b"s"


# ---------------------------------------------------------------- TF's fill rule

def test_one_value_fills_the_whole_shape() -> None:
    assert decode_tensor(proto(1, (2, 2), float_val=[1.5])).tolist() == [[1.5, 1.5], [1.5, 1.5]]
    assert decode_tensor(proto(3, (4,), int_val=[1, 2])).tolist() == [1, 2, 2, 2]
    assert decode_tensor(proto(7, (3,), string_val=[b"x"])).tolist() == [b"x", b"x", b"x"]
    assert decode_tensor(proto(8, (2,), scomplex_val=[1, 2])).tolist() == [1 + 2j, 1 + 2j]
    assert decode_tensor(proto(19, (2,), half_val=[0x3C00])).tolist() == [1.0, 1.0]


def test_no_values_means_zeros() -> None:
    assert decode_tensor(proto(2, (3,))).tolist() == [0.0, 0.0, 0.0]
    assert decode_tensor(proto(10, (2,))).tolist() == [False, False]
    assert decode_tensor(proto(7, (2,))).tolist() == [b"", b""]


def test_typed_field_style_and_tensor_content_style_decode_identically() -> None:
    for row in TABLE:
        if not row.is_numeric:
            continue
        array = (np.arange(12) % 3).astype(row.numpy).reshape(3, 4)
        typed = decode_tensor(wire(encode_tensor(array, row, typed=True)))
        content = decode_tensor(wire(encode_tensor(array, row)))
        assert typed.dtype == content.dtype == row.numpy
        assert np.array_equal(typed, content)


def test_half_val_accepts_sign_extended_bits() -> None:
    # Some writers store float16 bits as a signed int16 widened to int32.
    assert decode_tensor(proto(19, (1,), half_val=[-16384])).tolist() == [-2.0]


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize(
    ("message", "text"),
    [
        (proto(1, (3,), tensor_content=b"\x00" * 8),
         "tensor_content holds 8 bytes; shape [3] of float32 needs 12"),
        (proto(1, (-1, 2)), "unknown dimension"),
        (proto(3, (2,), int_val=[1, 2, 3]), "int_val holds 3 values for 2 elements"),
        (proto(8, (1,), scomplex_val=[1, 2, 3]), "odd number of parts"),
        (proto(6, (1,), int_val=[300]), "int_val holds values out of range for int8"),
        (proto(14, (1,)), "unsupported TensorFlow DataType 14"),
    ],
)
def test_malformed_protos_raise_codec_errors(message: TensorProto, text: str) -> None:
    with pytest.raises(CodecError, match=text.replace("[", r"\[").replace("]", r"\]")):
        decode_tensor(message)


def test_unknown_rank_and_unknown_dtype_errors() -> None:
    message = proto(1, ())
    message.tensor_shape.unknown_rank = True
    with pytest.raises(CodecError, match="unknown rank"):
        decode_tensor(message)
    with pytest.raises(UnknownDTypeError):
        decode_tensor(proto(0, (1,)))


def test_tensor_content_decode_does_not_copy() -> None:
    message = encode_tensor(np.arange(4, dtype=np.float32))
    array = decode_tensor(message)
    assert not array.flags.writeable  # a view of the message's bytes


# ---------------------------------------------------------------- round trips

FLOATS: dict[str, st.SearchStrategy[Any]] = {
    "float16": st.floats(width=16),
    "float32": st.floats(width=32),
    "float64": st.floats(width=64),
    "complex64": st.complex_numbers(width=64, allow_nan=True, allow_infinity=True),
    "complex128": st.complex_numbers(width=128, allow_nan=True, allow_infinity=True),
}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def tensors(draw: st.DrawFn) -> NDArray:
    row = draw(st.sampled_from([r for r in TABLE if r.json_kind is not JsonKind.BYTES]))
    shape = draw(SHAPES)
    if not row.is_numeric:
        count = int(np.prod(shape))
        flat = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    big = draw(st.booleans()) and row.numpy.itemsize > 1
    return draw(hnp.arrays(row.numpy.newbyteorder(">" if big else "<"), shape, elements=FLOATS.get(row.name)))


@settings(max_examples=200, deadline=None)
@given(tensors(), st.booleans())
def test_numpy_proto_numpy_round_trip(array: NDArray, typed: bool) -> None:
    back = decode_tensor(wire(encode_tensor(array, typed=typed)))
    assert back.shape == array.shape
    assert back.dtype == array.dtype.newbyteorder("<") or array.dtype.kind in "OSU"
    if array.dtype.kind in "fc":
        # Compare bit patterns so NaN payloads and -0.0 count too.
        assert np.ascontiguousarray(back).tobytes() == np.ascontiguousarray(array, back.dtype).tobytes()
    else:
        assert np.array_equal(back, array)


# ---------------------------------------------------------------- values beside the message

@pytest.mark.parametrize("name", ["float32", "float64", "int8", "int64", "uint16", "bool", "complex64", "float16"])
def test_tensor_header_and_attached_array_round_trip(name: str) -> None:
    dtype = lookup_dtype(name)
    array = (np.arange(24) % 3).astype(dtype.numpy).reshape(2, 3, 4)
    proto = TensorProto()
    values = tensor_header(proto, array, dtype)
    assert not proto.tensor_content  # dtype and shape only
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3, 4]
    back = attached_array(proto, bytearray(values.tobytes()))
    assert back.dtype == dtype.numpy
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable  # a view of the caller's bytearray


def test_tensor_header_does_not_copy_a_little_endian_contiguous_array() -> None:
    array = np.arange(10, dtype="<f4")
    assert np.shares_memory(tensor_header(TensorProto(), array), array)
    strided = np.arange(20, dtype="<f4")[::2]
    values = tensor_header(TensorProto(), strided)
    assert values.flags.c_contiguous
    np.testing.assert_array_equal(values, strided)


def test_attached_array_checks_the_byte_count() -> None:
    proto = TensorProto()
    tensor_header(proto, np.zeros((2, 2), np.float32))
    with pytest.raises(CodecError, match=r"15 bytes came for shape \[2, 2\] of float32, which needs 16"):
        attached_array(proto, bytes(15))


def test_strings_cannot_travel_as_raw_bytes() -> None:
    with pytest.raises(CodecError, match="cannot travel as raw bytes"):
        tensor_header(TensorProto(), np.array([b"a"], dtype=object), lookup_dtype("string"))
    proto = encode_tensor(np.array([b"a"], dtype=object), lookup_dtype("string"))
    with pytest.raises(CodecError, match="cannot travel as raw bytes"):
        attached_array(proto, b"a")


def test_shape_elements_are_read_before_decoding_an_unknown_dim_counting_none() -> None:
    proto = TensorProto(dtype=DT_FLOAT)
    for size in (1_000_000, 1_000_000):
        proto.tensor_shape.dim.add(size=size)
    assert shape_elements(proto) == 10**12  # no values at all: the shape alone says it
    proto.tensor_shape.dim.add(size=-1)
    assert shape_elements(proto) == 0
    assert shape_elements(TensorProto(dtype=DT_FLOAT)) == 1  # a scalar


@pytest.mark.parametrize(("dims", "message"), [
    ([0, 2**62], "is too large"),
    ([0, 2**31, 2**31], "is too large"),
    ([1] * 40, "40 dimensions; at most 32"),
])
def test_shapes_no_array_can_have_are_codec_errors(dims: list[int], message: str) -> None:
    """A client's empty tensor with absurd other sizes, or too many dimensions, is its mistake
    (a CodecError every front door answers as one), not numpy's ValueError."""
    proto = TensorProto(dtype=DT_FLOAT)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(CodecError, match=message):
        decode_tensor(proto)
