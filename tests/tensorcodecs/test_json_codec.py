"""JSON <-> numpy against contract fields: golden vectors, errors with field paths, round trips."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tensorcodecs import CodecError, TensorSpec, lookup_dtype
from tensorcodecs.dtypes import TABLE, JsonKind
from tensorcodecs.json_codec import (
    decode_inputs,
    decode_request,
    decode_value,
    encode_outputs,
    loads,
    may_hold_bools,
    to_json_value,
)

NDArray = np.ndarray[Any, Any]


def spec(dtype: str, shape: tuple[int, ...] | None = None, name: str = "x") -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


def decode(dtype: str, text: str | bytes, shape: tuple[int, ...] | None = None) -> NDArray:
    return decode_value(loads(text), spec(dtype, shape), "x")


def encode(array: NDArray, dtype: str | None = None) -> bytes:
    specs = {"x": spec(dtype)} if dtype else None
    return encode_outputs({"x": array}, specs)[len(b'{"x":') : -1]


# ---------------------------------------------------------------- golden vectors

GOLDEN = [
    # dtype, JSON in, expected array, JSON out
    ("float32", "[0.1, 1, -2.5]", np.array([0.1, 1, -2.5], np.float32), "[0.1,1.0,-2.5]"),
    ("float32", "[[NaN, Infinity], [-Infinity, 0]]",
     np.array([[np.nan, np.inf], [-np.inf, 0]], np.float32), "[[null,null],[null,0.0]]"),
    ("float32", "3.4028235e+38", np.array(np.finfo(np.float32).max), "3.4028235e+38"),
    ("float32", "1e-45", np.array(1e-45, np.float32), "1e-45"),
    ("float64", "[0.1, 9007199254740991]", np.array([0.1, 2**53 - 1], np.float64),
     "[0.1,9007199254740991.0]"),
    ("float64", "-0.0", np.array(-0.0), "-0.0"),
    ("float16", "[0.1, 65504, 6e-08]", np.array([0.1, 65504, 6e-08], np.float16), "[0.1,65500.0,6e-8]"),
    ("float16", "[NaN, -Infinity]", np.array([np.nan, -np.inf], np.float16), "[null,null]"),
    ("int8", "[-128, 127]", np.array([-128, 127], np.int8), "[-128,127]"),
    ("int16", "[-32768, 32767]", np.array([-32768, 32767], np.int16), "[-32768,32767]"),
    ("int32", "[[1], [2]]", np.array([[1], [2]], np.int32), "[[1],[2]]"),
    ("int32", "7", np.array(7, np.int32), "7"),
    ("int64", "[-9223372036854775808, 9223372036854775807]",
     np.array([-(2**63), 2**63 - 1], np.int64), "[-9223372036854775808,9223372036854775807]"),
    ("uint8", "[0, 255]", np.array([0, 255], np.uint8), "[0,255]"),
    ("uint16", "[65535]", np.array([65535], np.uint16), "[65535]"),
    ("uint32", "[4294967295]", np.array([4294967295], np.uint32), "[4294967295]"),
    ("uint64", "[18446744073709551615, 1]", np.array([2**64 - 1, 1], np.uint64),
     "[18446744073709551615,1]"),
    ("bool", "[[true, false]]", np.array([[True, False]]), "[[true,false]]"),
    ("string", '["héllo", {"b64": "AP8="}]', np.array(["héllo".encode(), b"\x00\xff"], object),
     '["héllo",{"b64":"AP8="}]'),
    ("bytes", '[{"b64": "AP8="}, "ab"]', np.array([b"\x00\xff", b"ab"], object),
     '[{"b64":"AP8="},{"b64":"YWI="}]'),
    ("complex64", "[[1, 2], [0.5, -1]]", np.array([1 + 2j, 0.5 - 1j], np.complex64),
     "[[1.0,2.0],[0.5,-1.0]]"),
    ("complex128", "[0.1, 0]", np.array(0.1 + 0j, np.complex128), "[0.1,0.0]"),
    ("float32", "[]", np.zeros((0,), np.float32), "[]"),
    ("float32", "[[], []]", np.zeros((2, 0), np.float32), "[[],[]]"),
]


@pytest.mark.parametrize(("dtype", "text", "expected", "out"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_vectors(dtype: str, text: str, expected: NDArray, out: str) -> None:
    array = decode(dtype, text)
    assert array.dtype == expected.dtype
    assert array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)
    if array.dtype.kind == "f":
        assert np.array_equal(np.signbit(array), np.signbit(expected))
    assert encode(array, dtype).decode() == out


def test_float32_prints_shortest_round_trip_text() -> None:
    values = np.array([0.1, 0.2, 1 / 3, 1e-7, 123456.79], np.float32)
    assert encode(values) == b"[0.1,0.2,0.33333334,1e-7,123456.79]"
    assert b"0.10000000149011612" not in encode_outputs({"a": np.float32(0.1)})


def test_scalars_keep_their_precision() -> None:
    assert encode_outputs({"a": np.array(np.float32(0.1)), "b": np.float16(0.1)}) == b'{"a":0.1,"b":0.1}'


@pytest.mark.parametrize(
    ("dtype", "text", "expected"),
    [
        ("float32", "[1435774380, 1435774380.0]", [1435774336.0, 1435774336.0]),  # as TF Serving
        ("float32", "[16777216, 16777217, -16777217]", [16777216.0, 16777216.0, -16777216.0]),
        ("float64", "[9007199254740992, 9007199254740993]", [9007199254740992.0, 9007199254740992.0]),
        ("float16", "[2049, 65504]", [2048.0, 65504.0]),
        ("float32", "[18446744073709551615]", [2.0**64]),
    ],
)
def test_integer_literals_round_to_the_nearest_float_like_decimal_ones(dtype: str, text: str,
                                                                      expected: list[float]) -> None:
    array = decode(dtype, text)
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == expected


def test_sums_that_overflow_do_not_warn_or_change_the_text() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode(np.array([3e38, 3e38, -np.inf, np.inf], np.float32)) == (
            b"[3e+38,3e+38,null,null]"
        )


def test_big_endian_arrays_are_written_in_order() -> None:
    assert encode(np.array([1, 2], ">i4")) == b"[1,2]"
    assert encode(np.array([0.5, np.nan], ">f8")) == b"[0.5,null]"


def test_non_contiguous_arrays() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert orjson.loads(encode(array)) == array.tolist()
    assert encode(array.T) == orjson.dumps(array.T.tolist())


def test_strings_without_contract_are_text_or_b64_and_bytes_suffix() -> None:
    out = encode_outputs({"a": np.array([b"ok", b"\xff"], object), "img_bytes": np.array([b"ok"], object)})
    assert orjson.loads(out) == {"a": ["ok", {"b64": "/w=="}], "img_bytes": [{"b64": "b2s="}]}
    assert encode_outputs({"s": np.array(["x", "y"])}) == b'{"s":["x","y"]}'


def test_to_json_value_passes_numeric_buffers_through() -> None:
    array = np.arange(3, dtype=np.int64)
    value = to_json_value(array)
    assert isinstance(value, np.ndarray)
    assert value is array


def test_loads_accepts_non_finite_literals_and_rejects_bad_json() -> None:
    parsed = loads(b'{"a": [NaN, Infinity, -Infinity, 1]}')
    assert math.isnan(parsed["a"][0])
    assert parsed["a"][1:] == [math.inf, -math.inf, 1]
    assert loads('{"a": 1}') == {"a": 1}
    for bad in (b"{", b"", b'{"a": nan}', b'{"a": [1,]}', b"\xff"):
        with pytest.raises(CodecError, match="not valid JSON"):
            loads(bad)


def test_decode_inputs_checks_names() -> None:
    specs = {"a": spec("int32", (-1,), "a"), "b": spec("string", (), "b")}
    arrays = decode_inputs({"a": [1, 2], "b": "x"}, specs)
    assert arrays["a"].tolist() == [1, 2]
    assert arrays["b"].shape == ()
    with pytest.raises(CodecError) as info:
        decode_inputs({"a": [1]}, specs)
    assert info.value.field == "b"
    assert "missing input 'b'" in info.value.message
    with pytest.raises(CodecError) as info:
        decode_inputs({"a": [1], "b": "x", "c": 1}, specs)
    assert info.value.field == "c"
    assert "unknown input 'c'" in info.value.message
    with pytest.raises(CodecError, match="must be a JSON object"):
        decode_inputs([1], specs)


def test_decode_request_uses_the_body_for_the_bool_check() -> None:
    specs = {"n": spec("int32", None, "n")}
    assert decode_request(b'{"n": [1, 0, 1]}', specs)["n"].tolist() == [1, 0, 1]
    with pytest.raises(CodecError) as info:
        decode_request(b'{"n": [1, 0, true]}', specs)
    assert info.value.field == "n[2]"
    assert not may_hold_bools(b'{"n": [1, 0, 1.5, NaN]}')
    assert may_hold_bools(b'{"n": [false]}')


def test_bools_hidden_deep_in_large_arrays_are_found() -> None:
    value = [[float(i) for i in range(1000)] for _ in range(50)]
    value[31][517] = True
    with pytest.raises(CodecError) as info:
        decode_value(value, spec("float32"), "x")
    assert info.value.field == "x[31][517]"
    ints = [[i % 2 for i in range(100)] for _ in range(100)]
    ints[99][50] = False
    with pytest.raises(CodecError) as info:
        decode_value(ints, spec("int64"), "x")
    assert info.value.field == "x[99][50]"
    assert "expected an integer (int64), got false" in info.value.message


def _bool_at(value: Any) -> str | None:
    """The path of the first bool in nested lists, as the codec names it."""
    if type(value) is bool:
        return ""
    if type(value) is list:
        for i, item in enumerate(value):
            where = _bool_at(item)
            if where is not None:
                return f"[{i}]{where}"
    return None


# Rows of equal length mixing bools with the numbers numpy reads them as (0, 1) and others, few or
# many zeros and ones, integers beyond 64 bits for float fields: every way the check can go. Only
# a bool is an error in them.
_NUMBERS = {
    "int64": st.sampled_from([0, 1, 2, -3]) | st.integers(-(2**63), 2**63 - 1),
    "float64": st.sampled_from([0, 1, 0.0, 1.0, 2, -3, 0.5]) | st.integers(-(2**70), 2**70),
    "float32": st.sampled_from([0, 1, 0.0, 1.0, 2, -3, 0.5]) | st.integers(-(2**70), 2**70),
}


@st.composite
def _numbers_and_bools(draw: st.DrawFn) -> tuple[str, list[Any]]:
    dtype = draw(st.sampled_from(sorted(_NUMBERS)))
    elements = st.booleans() | _NUMBERS[dtype] if draw(st.booleans()) else _NUMBERS[dtype]
    width = draw(st.integers(1, 40))
    rows = draw(st.lists(st.lists(elements, min_size=width, max_size=width), min_size=1, max_size=3))
    return dtype, rows[0] if draw(st.booleans()) else rows


@settings(max_examples=300, deadline=None)
@given(_numbers_and_bools())
def test_a_bool_among_numbers_is_found_exactly(case: tuple[str, list[Any]]) -> None:
    dtype, value = case
    where = _bool_at(value)
    if where is None:
        array = decode_value(value, spec(dtype), "x")
        assert array.shape == np.shape(value)
        return
    with pytest.raises(CodecError) as info:
        decode_value(value, spec(dtype), "x")
    assert info.value.field == "x" + where


def test_empty_batch_takes_trailing_dims_from_the_contract() -> None:
    assert decode("float32", "[]", (-1, 3)).shape == (0, 3)
    assert decode("string", "[[]]", (1, 0, 2)).shape == (1, 0, 2)
    assert decode("int8", "[]", (-1, -1)).shape == (0, 0)


# ---------------------------------------------------------------- errors

ERRORS = [
    # dtype, shape, JSON, field, message fragment
    ("int32", None, "[1, 2, 1.5]", "x[2]", "expected an integer (int32), got 1.5"),
    ("int32", None, "[[1], [1.0]]", "x[1][0]", "expected an integer (int32), got 1.0"),
    ("int32", None, "[1, true]", "x[1]", "expected an integer (int32), got true"),
    ("int32", None, '[1, "12"]', "x[1]", 'expected an integer (int32), got "12"'),
    ("int32", None, "[[1, 2], [3, null]]", "x[1][1]", "expected an integer (int32), got null"),
    ("float32", None, '[1.5, "2.5"]', "x[1]", 'expected a number (float32), got "2.5"'),
    ("float32", None, "[1.5, null]", "x[1]", "expected a number (float32), got null"),
    ("int32", None, "true", "x", "expected an integer (int32), got true"),
    ("int32", None, "[2147483648]", "x[0]",
     "out of range for int32 [-2147483648, 2147483647], got 2147483648"),
    ("int8", None, "[[0, 1], [2, -129]]", "x[1][1]", "out of range for int8 [-128, 127], got -129"),
    ("uint8", None, "[256]", "x[0]", "out of range for uint8 [0, 255]"),
    ("uint16", None, "[-1]", "x[0]", "out of range for uint16 [0, 65535]"),
    ("uint32", None, "[4294967296]", "x[0]", "out of range for uint32"),
    ("int64", None, "[-1, 9223372036854775808]", "x[1]", "out of range for int64"),
    ("uint64", None, "[-1, 18446744073709551615]", "x[0]", "out of range for uint64"),
    ("int64", None, "[100000000000000000000]", "x[0]", "expected an integer (int64), got 1e+20"),
    ("float32", None, "[1, 1e39]", "x[1]", "out of range for float32"),
    ("float16", None, "[70000]", "x[0]", "out of range for float16"),  # an integer literal as well
    ("float16", None, "[70000.0]", "x[0]", "out of range for float16"),
    ("float32", None, "[1.5, false]", "x[1]", "expected a number (float32), got false"),
    ("float32", None, '[1, "2"]', "x[1]", 'expected a number (float32), got "2"'),
    ("float32", None, "[[1, null]]", "x[0][1]", "expected a number (float32), got null"),
    ("float32", None, '"1.5"', "x", 'expected a number or a list, got "1.5"'),
    ("float32", None, '{"b64": "AA=="}', "x", "expected a number or a list, got an object"),
    ("float32", None, "[[1, 2], [3]]", "x[1]", "ragged list"),
    ("float32", None, "[[1, 2], 3]", "x[1]", "ragged list"),
    ("float32", None, "[[[1], [2]], [[3], [4, 5]]]", "x[1][1]", "ragged list"),
    ("bool", None, "[true, 1]", "x[1]", "expected true or false, got 1"),
    ("bool", None, '["true"]', "x[0]", 'expected true or false, got "true"'),
    ("string", None, '["a", 1]', "x[1]", 'expected a string or {"b64": "..."}, got 1'),
    ("string", None, '[["a"], ["b", "c"]]', "x[1]", "ragged list"),
    ("string", None, '[["a"], "b"]', "x[1]", "ragged list"),
    ("bytes", None, '[{"b64": "!!"}]', "x[0]", 'invalid base64 in {"b64": ...}'),
    ("bytes", None, '[{"b64": "AAAAAAAA="}]', "x[0]", 'invalid base64 in {"b64": ...}'),  # padding after a group
    ("bytes", None, '[{"b64": "AAAA===="}]', "x[0]", 'invalid base64 in {"b64": ...}'),
    ("bytes", None, '[{"b64": "AA==", "x": 1}]', "x[0]",
     'expected a string or {"b64": "..."}, got an object'),
    ("complex64", None, "[1, 2, 3]", "x", "expected complex numbers as [real, imaginary] pairs"),
    ("complex64", None, "[[1, 1e39]]", "x[0][1]", "out of range for complex64 part"),
    ("int32", (), "[1]", "x", "expected shape scalar, got [1]"),
    ("int32", (2, -1), "[1, 2]", "x", "expected shape [2, -1], got [2]"),
    ("int32", (2, -1), "[[1], [2], [3]]", "x", "expected shape [2, -1], got [3, 1]"),
    ("float32", (3,), "1.5", "x", "expected shape [3], got scalar"),
    ("string", (1,), '["a", "b"]', "x", "expected shape [1], got [2]"),
]


@pytest.mark.parametrize(("dtype", "shape", "text", "field", "message"), ERRORS)
def test_errors_name_the_field_and_the_expectation(
    dtype: str, shape: tuple[int, ...] | None, text: str, field: str, message: str
) -> None:
    with pytest.raises(CodecError) as info:
        decode(dtype, text, shape)
    assert info.value.field == field
    assert message in info.value.message
    assert str(info.value) == f"{field}: {info.value.message}"


@pytest.mark.parametrize(("dtype", "leaf", "message"), [
    ("uint64", "-1", "out of range for uint64 [0, 18446744073709551615], got -1"),
    ("int8", "128", "out of range for int8 [-128, 127], got 128"),
    ("float32", "1e39", "out of range for float32 (largest finite value 3.4028235e+38), got 1e+39"),
])
def test_an_out_of_range_value_is_named_in_arrays_of_more_than_32_dimensions(dtype: str, leaf: str,
                                                                              message: str) -> None:
    depth = 40  # numpy's flat iterator stops at 32 dimensions; the decoders take up to 64
    with pytest.raises(CodecError) as info:
        decode(dtype, "[" * depth + leaf + "]" * depth, None)
    assert info.value.field == "x" + "[0]" * depth
    assert info.value.message == message


@pytest.mark.parametrize("depth", [33, 63, 64])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_outputs_of_any_rank_are_written_as_pairs(dtype: str, depth: int) -> None:
    # A pair adds an axis: at numpy's 64 the outer ones are written as lists instead.
    array = np.full((2,) + (1,) * (depth - 1), 1.5 - 0.25j, dtype=dtype)
    array.reshape(-1)[1] = complex(np.nan, 2)
    value = orjson.loads(encode(array, dtype))
    for _ in range(depth - 1):
        value = [item[0] for item in value]
    assert value == [[1.5, -0.25], [None, 2.0]]
    assert orjson.loads(encode(array)) == orjson.loads(encode(array, dtype))


# ---------------------------------------------------------------- round trips

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


FLOATS: dict[str, st.SearchStrategy[Any]] = {
    # Finite: answers write NaN and +-Infinity as null, which no request may send back.
    "float16": st.floats(width=16, allow_nan=False, allow_infinity=False),
    "float32": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "float64": st.floats(width=64, allow_nan=False, allow_infinity=False),
    "complex64": st.complex_numbers(width=64, allow_nan=False, allow_infinity=False),
    "complex128": st.complex_numbers(width=128, allow_nan=False, allow_infinity=False),
}


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, NDArray]:
    row = draw(st.sampled_from(TABLE))
    shape = draw(SHAPES)
    if not row.is_numeric:
        text = st.text(max_size=6).map(str.encode)
        leaf = st.binary(max_size=6) if row.json_kind is JsonKind.BYTES else text
        flat = draw(st.lists(leaf, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return row.name, array.reshape(shape)
    return row.name, draw(hnp.arrays(row.numpy, shape, elements=FLOATS.get(row.name)))


def _same(a: NDArray, b: NDArray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


@settings(max_examples=150, deadline=None)
@given(tensors())
def test_numpy_json_numpy_round_trip(case: tuple[str, NDArray]) -> None:
    dtype, array = case
    text = encode(array, dtype)
    back = decode_value(loads(text), spec(dtype, array.shape), "x")
    assert _same(back, array), (text, back, array)
    assert encode(back, dtype) == text


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-100, 100),
                    lambda inner: st.lists(inner, min_size=1, max_size=3), max_leaves=12))
def test_json_tensor_json_round_trip_of_written_values(value: Any) -> None:
    # Whatever decodes as float32 writes back as text that decodes to the same array.
    try:
        array = decode_value(value, spec("float32"), "x")
    except CodecError:
        return
    again = decode_value(loads(encode(array)), spec("float32", array.shape), "x")
    assert _same(again, array)


def test_leaves_at_different_depths_are_ragged() -> None:
    for dtype in ("float32", "int32", "bool", "complex64"):
        with pytest.raises(CodecError) as info:
            decode_value([[0.0], [[0.0]]], spec(dtype), "x")
        assert info.value.field == "x[1][0]"
        assert "ragged list" in info.value.message


def test_non_finite_values_are_written_as_null_next_to_other_outputs() -> None:
    out = encode_outputs({
        "s": np.array([b"null"], object),
        "f": np.array([[1.5, np.nan], [-np.inf, 2]], np.float32),
        "g": np.array([0.25], np.float64),
        "c": np.array([complex(np.inf, 1)], np.complex64),
        "h": np.float16(np.inf),
        "i": np.array([1], np.int8),
    })
    assert out == (b'{"s":["null"],"f":[[1.5,null],[null,2.0]],"g":[0.25],'
                   b'"c":[[null,1.0]],"h":null,"i":[1]}')
    assert encode_outputs({"s": np.array([b"null"], object), "g": np.array([0.5])}) == (
        b'{"s":["null"],"g":[0.5]}'
    )


# ---------------------------------------------------------------- numbers beyond double, text answers

BEYOND_DOUBLE = "1" + "0" * 400  # the NaN token makes loads keep it exact (the stdlib parser)


@pytest.mark.parametrize("text", [
    f"[[0.5, {BEYOND_DOUBLE}], [NaN, 1.0]]",
    f"[0.5, {BEYOND_DOUBLE}, NaN]",
    f"[{BEYOND_DOUBLE}, NaN]",
])
def test_an_integer_beyond_double_next_to_floats_is_out_of_range(text: str) -> None:
    # d20565e raised OverflowError here (a 500); other too-big values name the dtype's range.
    with pytest.raises(CodecError) as caught:
        decode_request(f'{{"x": {text}}}'.encode(), {"x": spec("float32")})
    assert caught.value.message == "out of range for float32 (largest finite value 3.4028235e+38)"
    assert caught.value.field == "x"


def test_text_answers_are_written_as_before() -> None:
    strings = np.array([["a", "é"], ["\U0001f600", "x"]], dtype=object)
    out = encode_outputs({"s": strings, "b": np.array([b"\xff", b"ok"], dtype=object),
                          "t_bytes": np.array(["hi"], dtype=object), "u": np.array("zz")})
    # d20565e's bytes, byte for byte
    assert out == b'{"s":[["a","\xc3\xa9"],["\xf0\x9f\x98\x80","x"]],"b":[{"b64":"/w=="},"ok"],' \
                  b'"t_bytes":[{"b64":"aGk="}],"u":"zz"}'


def test_a_text_answer_with_a_lone_surrogate_goes_as_base64() -> None:
    # d20565e failed the answer (orjson refuses the surrogate); its surrogatepass bytes go as b64.
    out = encode_outputs({"s": np.array(["ok", "a\ud800"], dtype=object)})
    assert orjson.loads(out) == {"s": ["ok", {"b64": "Ye2ggA=="}]}
    assert orjson.loads(encode_outputs({"s": np.array("\udfff", dtype=object)})) == {"s": {"b64": "7b+/"}}
