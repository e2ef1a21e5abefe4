"""Open Inference Protocol (KServe v2) REST JSON of a call's tensors: the datatype names of the
protocol's tensor data types table, shapes kept (empty ones too), data flattened row-major."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from gateway.requestlog.oip import error_body, request_body, response_body, tensor


@pytest.mark.parametrize(("dtype", "datatype"), [
    (np.bool_, "BOOL"), (np.int8, "INT8"), (np.int16, "INT16"), (np.int32, "INT32"), (np.int64, "INT64"),
    (np.uint8, "UINT8"), (np.uint16, "UINT16"), (np.uint32, "UINT32"), (np.uint64, "UINT64"),
    (np.float16, "FP16"), (np.float32, "FP32"), (np.float64, "FP64"),
])
def test_each_numeric_dtype_has_its_protocol_name_and_row_major_data(dtype: Any, datatype: str) -> None:
    array = np.array([[0, 1, 0], [1, 1, 0]], dtype=dtype)
    expected: list[Any] = [0, 1, 0, 1, 1, 0]
    if dtype is np.bool_:
        expected = [bool(v) for v in expected]
    assert tensor("t", array) == {"name": "t", "shape": [2, 3], "datatype": datatype, "data": expected}


def test_an_empty_tensor_keeps_its_shape() -> None:
    assert tensor("x", np.zeros((0, 3), dtype=np.float32)) == {"name": "x", "shape": [0, 3], "datatype": "FP32",
                                                                "data": []}


def test_a_scalar_has_an_empty_shape() -> None:
    assert tensor("x", np.array(7, dtype=np.int64)) == {"name": "x", "shape": [], "datatype": "INT64", "data": [7]}


@pytest.mark.parametrize("array", [np.array([b"caf\xc3\xa9", b""], dtype=object), np.array(["café", ""]),
                                   np.array([b"caf\xc3\xa9", b""], dtype="S5")])
def test_utf8_bytes_are_strings(array: np.ndarray) -> None:
    assert tensor("s", array) == {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["café", ""]}


def test_bytes_that_are_not_utf8_are_base64_with_a_content_type() -> None:
    assert tensor("s", np.array([[b"ok"], [b"\xff\x00"]], dtype=object)) == {
        "name": "s", "shape": [2, 1], "datatype": "BYTES", "data": ["b2s=", "/wA="],
        "parameters": {"content_type": "base64"}}


def test_a_dtype_the_protocol_has_no_name_for_is_refused() -> None:
    with pytest.raises(ValueError, match="no datatype for complex64"):
        tensor("z", np.array([1j], dtype=np.complex64))


def test_request_response_and_error_bodies() -> None:
    x = {"x": np.array([1.5, np.nan], dtype=np.float64)}
    assert orjson.loads(request_body("r-1", "m", 3, x)) == {
        "id": "r-1", "model_name": "m", "model_version": "3",
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, None]}]}
    assert orjson.loads(response_body("r-1", "m", None, x)) == {
        "id": "r-1", "model_name": "m", "outputs": [{"name": "x", "shape": [2], "datatype": "FP64",
                                                     "data": [1.5, None]}]}
    assert orjson.loads(error_body("not_found: no model m")) == {"error": "not_found: no model m"}
