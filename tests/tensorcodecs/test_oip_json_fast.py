"""The v2 JSON codec's fast paths held to the general rules: a request's data read straight
through `fast_numeric` gives exactly what the element walk and the shape rules give (the same
array, or the same error with the same field), and numeric answers written from numpy buffers
are the values, NaN and +-Infinity as null."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tensorcodecs.contract import TensorSpec, dims_text
from tensorcodecs.dtypes import dtype_from_oip
from tensorcodecs.errors import CodecError
from tensorcodecs.json_codec import decode_value
from tensorcodecs.oip_json import decode_inputs, encode_outputs

NUMERIC = ["FP16", "FP32", "FP64", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64",
           "BOOL"]
SCALARS = (st.integers(-(2**70), 2**70) | st.integers(-3, 3) | st.floats() | st.booleans()
           | st.sampled_from(["1", None, 0.5, 1e39, -1e39]))
DATA = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=16)
SHAPES = st.lists(st.integers(0, 4), max_size=3)


def _general(data: Any, datatype: str, shape: list[int], bools: bool) -> np.ndarray[Any, Any]:
    """The rules as the module's docstring states them, through the native codec's general
    decoder: the datatype's elements, then flat or nested exactly as the shape."""
    path = "inputs[0].data"
    array = decode_value(data, TensorSpec("x", dtype_from_oip(datatype), None), path, bools=bools)
    wanted = tuple(shape)
    count = math.prod(wanted)
    if array.shape != wanted:
        if array.ndim > 1 or array.size != count:
            if array.size == count:
                raise CodecError(f"data is nested as {dims_text(array.shape)}, not as the shape "
                                 f"{dims_text(wanted)}: write it flat or nested as the shape", path)
            raise CodecError(f"data holds {array.size} elements, shape {dims_text(wanted)} holds {count}", path)
        array = array.reshape(wanted)
    return array


def _outcome(read: Callable[[], np.ndarray[Any, Any]]) -> tuple[Any, ...]:
    """An array as (dtype, shape, bytes: NaN canonical), or the error's message and field."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = read()
    except CodecError as caught:
        return ("error", caught.message, caught.field)
    if array.dtype.kind == "f":
        array = np.where(np.isnan(array), np.array(np.nan, array.dtype), array)
    return (array.dtype.str, array.shape, array.tobytes())


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(item) for item in value)
    return isinstance(value, bool)


@settings(max_examples=400)
@given(DATA, st.sampled_from(NUMERIC), SHAPES, st.booleans())
def test_decoded_data_is_the_general_paths(data: Any, datatype: str, shape: list[int], shape_from_data: bool
                                           ) -> None:
    if shape_from_data:  # often the data's own shape, so that the fast path is taken
        shape = _data_shape(data) or shape
    item = {"name": "x", "shape": shape, "datatype": datatype, "data": data}
    spec = {"x": TensorSpec("x", dtype_from_oip(datatype), None)}
    for bools in (True, False) if not _has_bool(data) else (True,):  # bools=False: no bool in the body
        decoded = _outcome(lambda flag=bools: decode_inputs([item], spec, bools=flag)["x"])  # type: ignore[misc]
        assert decoded == _outcome(lambda flag=bools: _general(data, datatype, shape, flag))  # type: ignore[misc]


def _data_shape(data: Any) -> list[int] | None:
    if not isinstance(data, list):
        return None
    try:
        return list(np.shape(data))
    except ValueError:  # ragged
        return None


def test_flat_data_for_a_matrix_takes_the_fast_path_and_the_shape() -> None:
    item = {"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}
    array = decode_inputs([item], {"x": TensorSpec("x", dtype_from_oip("INT64"), (-1, 3))})["x"]
    assert array.dtype == np.int64
    assert array.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_a_bool_in_an_integer_input_is_refused_on_the_fast_path_too() -> None:
    item = {"name": "x", "shape": [2], "datatype": "INT32", "data": [1, True]}
    with pytest.raises(CodecError) as caught:
        decode_inputs([item], {"x": TensorSpec("x", dtype_from_oip("INT32"), (-1,))})
    assert caught.value.field == "inputs[0].data[1]"


NUMERIC_ARRAYS = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint16, np.int32, np.uint64,
                                  np.bool_]).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))


@given(NUMERIC_ARRAYS)
def test_numeric_answers_are_their_values_with_null_for_non_finite(array: np.ndarray[Any, Any]) -> None:
    items, buffers = encode_outputs({"y": array})
    written = orjson.loads(orjson.dumps(items, option=orjson.OPT_SERIALIZE_NUMPY))
    values = [None if isinstance(v, float) and not math.isfinite(v) else v for v in array.reshape(-1).tolist()]
    if array.dtype.kind == "f":  # the shortest text of each element in its own dtype
        values = [None if v is None else float(str(array.dtype.type(v))) for v in values]
    assert buffers == []
    assert written == [{"name": "y", "datatype": dtype_from_numpy_oip(array), "shape": list(array.shape),
                        "data": values}]


def dtype_from_numpy_oip(array: np.ndarray[Any, Any]) -> str:
    return {"f": "FP", "i": "INT", "u": "UINT"}.get(array.dtype.kind, "BOOL") + (
        str(array.dtype.itemsize * 8) if array.dtype.kind != "b" else "")
