"""Inputs to a request body and an answer back to arrays, by the contract the gateway lists.

Inputs may be numpy arrays or scalars, plain lists or Python scalars. They go out as the native
JSON body (`{"name": value}`; floats' NaN and infinities as the `NaN`/`Infinity` literals the
gateway accepts), except one numeric array of `binary_threshold` bytes or more, the only input
of the call: that goes as raw little-endian bytes (`application/octet-stream` with
`x-tensor-name`, `x-tensor-dtype`, `x-tensor-shape`, gateway/binary.py), cast to the contract's
dtype exactly as the gateway's JSON decoder reads the same values: bools only for bool, integers
only for integer contracts and within range, integers and floats rounded to the nearest value of a
float contract (through doubles, a finite value that rounds to infinity refused), complex for
complex. A value that decoder would refuse goes as JSON, so that the refusal names the element. A
binary answer is read back without JSON.

Answers become numpy arrays of the contract's dtypes (NaN where the JSON answer wrote a
non-finite float as `null`); `string` outputs are `str` arrays (object arrays of `bytes` when an
element is not text), `bytes` outputs object arrays of `bytes`. Without a known contract (or for
an output the listed contract does not fit: another version's) the dtype is numpy's reading of
the JSON.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.binary import BINARY_TYPE, DTYPE_HEADER, NAME_HEADER, SHAPE_HEADER
from gateway.client.errors import UnexpectedAnswer
from tensorcodecs import CodecError, TensorSpec, dtype_from_numpy, lookup_dtype
from tensorcodecs.dtypes import JsonKind
from tensorcodecs.json_codec import decode_value

NDArray = np.ndarray[Any, Any]
JSON_TYPE = "application/json"
DEFAULT_BINARY_THRESHOLD = 64 * 1024  # bytes: below it JSON costs less than a second code path


@dataclass(frozen=True, slots=True)
class Contract:
    """An application's or model version's inputs and outputs; None when not known yet."""

    inputs: Mapping[str, TensorSpec] | None
    outputs: Mapping[str, TensorSpec] | None
    stages: int = 1  # an application's stages (a model: 1)

    @property
    def known(self) -> bool:
        return self.inputs is not None or self.outputs is not None


UNKNOWN = Contract(None, None)


def specs_from_json(items: list[dict[str, Any]] | None) -> dict[str, TensorSpec] | None:
    """`[{"name", "dtype", "shape"}]` as the listing routes write them."""
    if items is None:
        return None
    return {str(item["name"]): TensorSpec(str(item["name"]), lookup_dtype(str(item["dtype"])),
                                          None if item["shape"] is None else tuple(item["shape"]))
            for item in items}


def contract_from_json(body: Mapping[str, Any]) -> Contract:
    """The contract of an application plan or a model version's listing."""
    return Contract(specs_from_json(body.get("inputs")), specs_from_json(body.get("outputs")),
                    len(body.get("stages") or ()) or 1)


@dataclass(frozen=True, slots=True)
class Body:
    """A request body and the headers that say what it is."""

    content: bytes
    headers: dict[str, str]


def input_bytes(inputs: Mapping[str, Any]) -> int:
    """A cheap estimate of the inputs' size: numpy arrays' bytes, 8 a top-level list item."""
    return sum(value.nbytes if isinstance(value, np.ndarray) else 8 * len(value) if isinstance(value, list | tuple)
               else 8 for value in inputs.values())


def request_body(inputs: Mapping[str, Any], contract: Contract, binary_threshold: int | None) -> Body:
    """The body carrying `inputs`: binary for one large numeric array, else JSON."""
    if binary_threshold is not None and len(inputs) == 1:
        name, value = next(iter(inputs.items()))
        spec = contract.inputs.get(name) if contract.inputs else None
        array = _binary_array(value, spec, binary_threshold)
        if array is not None:
            return Body(array.tobytes(), {
                "content-type": BINARY_TYPE, NAME_HEADER: name, DTYPE_HEADER: dtype_from_numpy(array.dtype).name
                if spec is None else spec.dtype.name, SHAPE_HEADER: ",".join(map(str, array.shape))})
    values = {name: _json_value(value) for name, value in inputs.items()}
    try:
        content = orjson.dumps(values)
    except TypeError:
        content = b"null"
    if b"null" in content:  # orjson writes NaN and infinities as null: the stdlib writes their literals (a
        # "null" inside a string only takes this slower path to the same JSON)
        content = json.dumps(values, allow_nan=True, default=_plain, separators=(",", ":")).encode()
    return Body(content, {"content-type": JSON_TYPE})


# The source kinds (numpy `dtype.kind`) the gateway's JSON decoder takes for each contract kind.
_JSON_SOURCES = {JsonKind.BOOL: "b", JsonKind.INT: "iu", JsonKind.FLOAT: "iuf", JsonKind.COMPLEX: "c"}


def _binary_array(value: Any, spec: TensorSpec | None, threshold: int) -> NDArray | None:
    """`value` as the little-endian array to send raw, or None when it goes as JSON: the value
    the gateway's JSON decoder would read, or JSON (whose refusal names the element) when it
    would refuse it."""
    if not isinstance(value, np.ndarray) or value.nbytes < threshold or value.dtype.kind not in "biufc":
        return None
    if spec is not None:
        cast = _as_contract(value, spec)
        if cast is None:
            return None
        value = cast
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))


def _as_contract(array: NDArray, spec: TensorSpec) -> NDArray | None:
    """`array` cast to the contract's dtype as tensorcodecs.json_codec reads the same values
    (bools only as bool, integers in range, numbers rounded to the nearest float, a finite value
    that rounds to infinity refused), or None where that decoder would refuse a value."""
    target = spec.dtype.numpy
    sources = _JSON_SOURCES.get(spec.dtype.json_kind)
    if sources is None or array.dtype.kind not in sources:
        return None
    if array.dtype == target:
        return array
    if spec.dtype.json_kind is JsonKind.INT:
        return array.astype(target) if np.can_cast(array.dtype, target, "safe") or _fits(array, target) else None
    if array.dtype.kind in "iu":
        array = array.astype(np.float64)  # integers through doubles, as JSON integer literals are read
    with np.errstate(over="ignore"):
        cast = array.astype(target)
    if not np.can_cast(array.dtype, target, "safe") and _rounds_to_infinity(array, cast):
        return None
    return cast


def _rounds_to_infinity(source: NDArray, cast: NDArray) -> bool:
    """Whether a finite value (or complex part) became infinite in the cast."""
    if source.dtype.kind == "c":
        return _rounds_to_infinity(source.real, cast.real) or _rounds_to_infinity(source.imag, cast.imag)
    return bool((np.isinf(cast) & np.isfinite(source)).any())


def _fits(array: NDArray, target: np.dtype[Any]) -> bool:
    """Whether an integer array's values all fit an integer dtype."""
    if array.size == 0:
        return True
    info = np.iinfo(target)
    return bool(info.min <= array.min() and array.max() <= info.max)


def _json_value(value: Any) -> Any:
    """A value orjson writes: numpy arrays and scalars as lists and numbers, bytes as b64."""
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype.kind in "OSU":
            return _strings(array.tolist())
        if array.dtype.kind == "c":
            return np.stack([array.real, array.imag], axis=-1).tolist()
        return array.tolist()
    if isinstance(value, bytes | list | tuple):
        return _strings(value)
    return value


def _strings(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_strings(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__} as a tensor value")


def read_answer(content_type: str, headers: Mapping[str, str], content: bytes, contract: Contract,
                as_lists: bool) -> dict[str, Any]:
    """The outputs of a 200 answer, as arrays (or plain JSON values with `as_lists`)."""
    if content_type.split(";", 1)[0].strip().lower() == BINARY_TYPE:
        array = _binary_answer(headers, content)
        return {headers.get(NAME_HEADER, "output"): array.tolist() if as_lists else array}
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as error:
        raise UnexpectedAnswer(f"the answer is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise UnexpectedAnswer(f"the answer is not a JSON object of outputs: {str(body)[:100]}")
    if as_lists:
        return body
    outputs = contract.outputs or {}
    return {name: output_array(value, outputs.get(name), name) for name, value in body.items()}


def _binary_answer(headers: Mapping[str, str], content: bytes) -> NDArray:
    try:
        dtype = lookup_dtype(headers[DTYPE_HEADER])
        text = headers.get(SHAPE_HEADER, "").strip()
        shape = tuple(int(size) for size in text.split(",")) if text else ()
        array = np.frombuffer(content, dtype=dtype.numpy.newbyteorder("<")).reshape(shape)
    except (KeyError, ValueError, CodecError) as error:
        raise UnexpectedAnswer(f"a binary answer without a readable dtype and shape: {error}") from None
    return array.astype(dtype.numpy)  # a writable copy in native byte order, as a JSON answer's arrays are


def output_array(value: Any, spec: TensorSpec | None, name: str) -> NDArray:
    """One JSON output as an array of its contract's dtype."""
    if spec is None:
        return np.asarray(_nulls_as_nan(value))
    kind = spec.dtype.json_kind
    if kind in (JsonKind.FLOAT, JsonKind.COMPLEX):
        value = _nulls_as_nan(value)
    try:
        array = decode_value(value, spec, name)
    except CodecError:  # the contract listed is not this answer's (another version's): read it untyped
        return np.asarray(_nulls_as_nan(value))
    if kind is JsonKind.STRING and array.dtype.kind == "O":
        try:
            return np.vectorize(bytes.decode, otypes=[str])(array) if array.size else array.astype(str)
        except UnicodeDecodeError:
            return array
    return array


def _nulls_as_nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, list):
        return [_nulls_as_nan(item) for item in value]
    return value
