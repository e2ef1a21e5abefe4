"""The binary path for large tensors: raw little-endian bytes, dtype and shape in headers.

`POST /gateway/applications/{name}` (and the `/gateway/models/...` routes) with
`Content-Type: application/octet-stream` carries one input tensor as its C-ordered
little-endian bytes; `x-tensor-dtype` (a contract type name such as `float32`, default: the
contract's), `x-tensor-shape` (comma-separated sizes, `""` for a scalar; default: one dimension
of every element) and `x-tensor-name` (default: the contract's only input). The contract is
checked as for JSON: name, dtype, shape, element count. The answer of an application with one
output comes back the same way (`application/octet-stream` with the three headers); with
several outputs it is JSON.

No per-element work happens in the gateway: the body becomes a numpy view of the request bytes
and the answer a view of the backend's bytes, so the cost is a few memory copies (see
docs/PERFORMANCE.md for the measured MB/s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
from starlette.responses import Response

from gateway.backends import NDArray
from gateway.errors import ContractViolation, codec_errors
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.contract import dims_text
from tensorcodecs.dtypes import dtype_from_numpy, lookup_dtype
from tensorcodecs.json_codec import MAX_RANK

BINARY_TYPE = "application/octet-stream"
NAME_HEADER = "x-tensor-name"
DTYPE_HEADER = "x-tensor-dtype"
SHAPE_HEADER = "x-tensor-shape"
MAX_SIZE_DIGITS = 19  # a size of more digits is beyond any tensor (and int64)
_SIZE = re.compile(r"[0-9]+")  # digits only: int() also takes "1_0", "+1" and " -0"
MAX_ARRAY_BYTES = np.iinfo(np.intp).max  # numpy's bound on an array's size, empty arrays included


def is_binary(headers: Mapping[str, str]) -> bool:
    """Whether the request body is a raw tensor."""
    content_type = headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == BINARY_TYPE


def decode_binary(headers: Mapping[str, str], body: bytes | memoryview,
                  specs: Mapping[str, TensorSpec]) -> dict[str, NDArray]:
    """The one input a binary request carries, checked against the contract."""
    name = headers.get(NAME_HEADER)
    if name is None:
        if len(specs) != 1:
            raise ContractViolation(f"a binary request carries one tensor; name it with {NAME_HEADER} "
                                    f"(inputs: {', '.join(specs)})")
        name = next(iter(specs))
    spec = specs.get(name)
    if spec is None:
        raise ContractViolation(f"{name!r} is not an input of this contract (inputs: {', '.join(specs)})",
                                field=name)
    missing = [other for other in specs if other != name]
    if missing:
        raise ContractViolation(f"input {missing[0]!r} is missing: a binary request carries one tensor",
                                field=missing[0])
    dtype = spec.dtype
    dtype_text = headers.get(DTYPE_HEADER)
    if dtype_text is not None:
        try:
            dtype = lookup_dtype(dtype_text)
        except CodecError as error:
            raise codec_errors(ContractViolation, field=name).translate(error) from None
        if dtype != spec.dtype:
            raise ContractViolation(f"{name} must be {spec.dtype.name}, got {dtype.name}", field=name)
    if not dtype.is_numeric:
        raise ContractViolation(f"{name} is {dtype.name}: only numeric tensors travel as raw bytes",
                                field=name)
    itemsize = dtype.numpy.itemsize
    shape_text = headers.get(SHAPE_HEADER)
    if shape_text is None:
        if len(body) % itemsize:
            raise ContractViolation(f"{len(body)} bytes are not a whole number of {dtype.name} values",
                                    field=name)
        shape: tuple[int, ...] = (len(body) // itemsize,)
    else:
        shape = _parse_shape(shape_text, name, itemsize)
        need = math.prod(shape) * itemsize  # exact: a product that wraps in 64 bits must not match
        if need != len(body):
            raise ContractViolation(f"shape [{shape_text}] of {dtype.name} needs {need} bytes, the body has "
                                    f"{len(body)}", field=name)
    if spec.shape is not None and (len(spec.shape) != len(shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True))):
        raise ContractViolation(f"{name} must have shape {spec.shape_text()}, got {dims_text(shape)}",
                                field=name)
    return {name: np.frombuffer(body, dtype=dtype.numpy.newbyteorder("<")).reshape(shape)}


def _parse_shape(text: str, name: str, itemsize: int) -> tuple[int, ...]:
    """`x-tensor-shape` as sizes (a client error naming the input when it is not one, or one
    no array can have, even an empty one: numpy bounds the product of the non-zero sizes)."""
    parts = [part.strip() for part in text.split(",")] if text.strip() else []  # "": a scalar
    if not all(_SIZE.fullmatch(part) for part in parts):
        raise ContractViolation(f"{SHAPE_HEADER} must be comma-separated sizes, got {text!r}", field=name)
    if any(len(part.lstrip("0")) > MAX_SIZE_DIGITS for part in parts):  # int() refuses 4,300+ digits
        raise ContractViolation(f"{SHAPE_HEADER} [{text[:64]}...] is larger than any tensor can be", field=name)
    shape = tuple(int(part) for part in parts)
    if len(shape) > MAX_RANK:
        raise ContractViolation(f"{SHAPE_HEADER} has {len(shape)} dimensions; a tensor has at most {MAX_RANK}",
                                field=name)
    if math.prod(size for size in shape if size) * itemsize > MAX_ARRAY_BYTES:
        raise ContractViolation(f"{SHAPE_HEADER} [{text}] is larger than any tensor can be", field=name)
    return shape


def binary_response(outputs: Mapping[str, NDArray], specs: Mapping[str, TensorSpec]) -> Response | None:
    """The answer as raw bytes when there is one numeric output (None otherwise)."""
    if len(outputs) != 1:
        return None
    name, array = next(iter(outputs.items()))
    spec = specs.get(name)
    try:
        dtype = spec.dtype if spec is not None else dtype_from_numpy(array.dtype)
    except CodecError:
        return None
    if not dtype.is_numeric:
        return None
    data = np.ascontiguousarray(array, dtype=dtype.numpy.newbyteorder("<"))
    headers = {NAME_HEADER: name, DTYPE_HEADER: dtype.name, SHAPE_HEADER: ",".join(map(str, data.shape))}
    return Response(data.reshape(-1).data, media_type=BINARY_TYPE, headers=headers)
