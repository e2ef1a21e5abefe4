"""A model call as Open Inference Protocol (KServe v2) REST JSON, the bodies KServe's logger
records for v2 predictors: `$inference_request`, `$inference_response`, `$inference_error_response`.

Each tensor is `{"name", "shape", "datatype", "data"}`, its data flattened in row-major order.
JSON has no NaN or infinity: they are written as `null`. BYTES elements are strings; a tensor with
an element that is not UTF-8 has every element base64-encoded and the tensor parameter
`"content_type": "base64"` (MLServer's Base64Codec). Pure: run in a sink's writer thread.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

# numpy's dtype kind and size -> the protocol's datatype (complex numbers have none).
_DATATYPES = {
    ("b", 1): "BOOL",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}
_STRING_KINDS = frozenset("OSU")


def request_body(request_id: str, model: str, version: int | None, inputs: Mapping[str, np.ndarray]) -> bytes:
    """`$inference_request` of a call's inputs."""
    return _body(request_id, model, version, "inputs", inputs)


def response_body(request_id: str, model: str, version: int | None, outputs: Mapping[str, np.ndarray]) -> bytes:
    """`$inference_response` of a call's outputs."""
    return _body(request_id, model, version, "outputs", outputs)


def error_body(message: str) -> bytes:
    """`$inference_error_response`: `{"error": message}`."""
    return orjson.dumps({"error": message})


def tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """One `$request_input` / `$response_output`; ValueError for a dtype the protocol has no name for."""
    item: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype(array.dtype)}
    flat = array.ravel()
    if array.dtype.kind not in _STRING_KINDS:
        item["data"] = flat.tolist()
        return item
    values = [value.encode() if isinstance(value, str) else bytes(value) for value in flat.tolist()]
    try:
        item["data"] = [value.decode() for value in values]
    except UnicodeDecodeError:
        item["data"] = [base64.b64encode(value).decode("ascii") for value in values]
        item["parameters"] = {"content_type": "base64"}
    return item


def datatype(dtype: np.dtype[Any]) -> str:
    if dtype.kind in _STRING_KINDS:
        return "BYTES"
    name = _DATATYPES.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise ValueError(f"the Open Inference Protocol has no datatype for {dtype}")
    return name


def _body(request_id: str, model: str, version: int | None, key: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    body: dict[str, Any] = {"id": request_id, "model_name": model}
    if version is not None:
        body["model_version"] = str(version)
    body[key] = [tensor(name, array) for name, array in arrays.items()]
    return orjson.dumps(body)
