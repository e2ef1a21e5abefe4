"""JSON values <-> numpy arrays, checked against a contract field.

Decoding is numpy-vectorised on the happy path; the slower element walks run only to
name the offending element (`number[2][0]`) once something is already known to be wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from tensorcodecs.contract import Shape, TensorSpec
from tensorcodecs.dtypes import JsonKind
from tensorcodecs.errors import CodecError

NDArray = np.ndarray  # type: ignore[type-arg]


def loads(body: bytes | str) -> Any:
    """Parse a JSON document; NaN, Infinity and -Infinity are accepted as TF Serving does."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        # orjson rejects the non-standard literals; the standard library accepts them.
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise CodecError(f"request body is not valid JSON: {fast_error}") from None


# ---------------------------------------------------------------- JSON -> numpy


def decode_inputs(body: Any, specs: Mapping[str, TensorSpec]) -> dict[str, NDArray]:
    """Turn a request object `{name: value, ...}` into arrays, one per contract input."""
    if not isinstance(body, dict):
        raise CodecError(f"request body must be a JSON object with the inputs {_names(specs)}")
    missing = [name for name in specs if name not in body]
    unknown = [name for name in body if name not in specs]
    if missing:
        extra = f" (unknown inputs given: {', '.join(map(repr, unknown))})" if unknown else ""
        raise CodecError(f"missing input {missing[0]!r}; expected {_names(specs)}{extra}",
                         field=missing[0])
    if unknown:
        raise CodecError(f"unknown input {unknown[0]!r}; expected only {_names(specs)}", field=unknown[0])
    return {name: decode_value(body[name], spec, name) for name, spec in specs.items()}


def decode_value(value: Any, spec: TensorSpec, path: str) -> NDArray:
    """One JSON value (scalar or nested lists) as an array of the spec's dtype and shape."""
    kind = spec.dtype.json_kind
    if kind in (JsonKind.STRING, JsonKind.BYTES):
        array = _decode_strings(value, path)
    elif kind is JsonKind.COMPLEX:
        array = _decode_complex(value, spec, path)
    else:
        array = _decode_numeric(value, spec, path)
    if not spec.accepts_shape(array.shape):
        raise CodecError(
            f"expected shape {spec.shape_text()}, got {_shape_text(array.shape)}", field=path
        )
    return array


def _decode_numeric(value: Any, spec: TensorSpec, path: str) -> NDArray:
    raw = _as_array(value, path)
    target = spec.dtype
    kind = target.json_kind
    if raw.size == 0 and raw.dtype.kind in "fiub":
        return raw.astype(target.numpy)
    if kind is JsonKind.BOOL:
        if raw.dtype.kind != "b":
            _raise_first(value, path, lambda v: isinstance(v, bool), "expected true or false")
        return raw
    if kind is JsonKind.INT:
        if raw.dtype.kind not in "iu" or _has_bool(value, raw):
            _raise_first(value, path, _is_json_int, f"expected an integer ({target.name})")
        return _checked_int_cast(raw, value, spec, path)
    # FLOAT: integers and floats (and NaN/Infinity) are accepted, as TF Serving does.
    if raw.dtype.kind not in "iuf" or _has_bool(value, raw):
        _raise_first(value, path, _is_json_number, f"expected a number ({target.name})")
    with np.errstate(over="ignore"):
        cast = raw.astype(target.numpy)
    if raw.dtype.kind == "f" and cast.dtype.itemsize < raw.dtype.itemsize:
        overflow = np.isinf(cast) & np.isfinite(raw)
        if overflow.any():
            index = int(np.flatnonzero(overflow)[0])
            raise CodecError(
                f"value {raw.flat[index]!r} is out of range for {target.name}",
                field=path + _index_text(raw.shape, index),
            )
    return cast


def _checked_int_cast(raw: NDArray, value: Any, spec: TensorSpec, path: str) -> NDArray:
    info = np.iinfo(spec.dtype.numpy)
    if raw.dtype == spec.dtype.numpy:
        return raw
    low, high = raw.min(), raw.max()
    if low < info.min or high > info.max:
        bad = (raw < info.min) | (raw > info.max)
        index = int(np.flatnonzero(bad)[0])
        raise CodecError(
            f"value {int(raw.flat[index])} is out of range for {spec.dtype.name} "
            f"[{info.min}, {info.max}]",
            field=path + _index_text(raw.shape, index),
        )
    return raw.astype(spec.dtype.numpy)


def _has_bool(value: Any, raw: NDArray) -> bool:
    # numpy reads [1, true] as [1, 1]; only a scalar or a short walk can tell. Bools in
    # large numeric arrays are found by the first element of each innermost list.
    if isinstance(value, bool):
        return True
    if raw.ndim == 0 or raw.size == 0:
        return False
    return any(isinstance(v, bool) for v in _innermost_firsts(value))


def _innermost_firsts(value: Any) -> Iterator[Any]:
    while isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list):
        yield from value[:1]
        yield from value[-1:]


def _as_array(value: Any, path: str) -> NDArray:
    if isinstance(value, dict):
        raise CodecError("expected a number or a list, got an object", field=path)
    try:
        raw = np.asarray(value)
    except (ValueError, OverflowError):
        raise CodecError(_ragged_message(value), field=path + _ragged_path(value)) from None
    if raw.dtype.kind == "O":
        # Lists of unequal length, dicts, None or integers beyond 64 bits.
        ragged = _ragged_path(value)
        if ragged:
            raise CodecError(_ragged_message(value), field=path + ragged)
        _raise_first(value, path, _is_json_number, "expected a number")
        _raise_first(value, path, _fits_int64, "integer out of range")
    return raw


def _decode_strings(value: Any, path: str) -> NDArray:
    flat: list[bytes] = []
    shape = _walk_strings(value, path, flat)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _walk_strings(value: Any, path: str, out: list[bytes]) -> Shape:
    if isinstance(value, list):
        shapes = [_walk_strings(item, f"{path}[{i}]", out) for i, item in enumerate(value)]
        for i, shape in enumerate(shapes[1:], start=1):
            if shape != shapes[0]:
                raise CodecError("ragged list: all lists at one depth must have the same length",
                                 field=f"{path}[{i}]")
        return (len(value), *(shapes[0] if shapes else ()))
    out.append(_string_bytes(value, path))
    return ()


def _string_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise CodecError("invalid base64 in {\"b64\": ...}", field=path) from None
    raise CodecError('expected a string or {"b64": "..."}', field=path)


def _decode_complex(value: Any, spec: TensorSpec, path: str) -> NDArray:
    raw = _as_array(value, path)
    if raw.dtype.kind not in "iuf" or raw.ndim == 0 or raw.shape[-1] != 2:
        raise CodecError("expected complex numbers as [real, imaginary] pairs", field=path)
    parts = np.ascontiguousarray(raw, dtype=spec.dtype.numpy.type(0).real.dtype)
    return parts.view(spec.dtype.numpy)[..., 0]


# ---------------------------------------------------------------- numpy -> JSON


def encode_outputs(arrays: Mapping[str, NDArray], specs: Mapping[str, TensorSpec] | None = None) -> bytes:
    """A response object `{name: nested lists}` as JSON bytes."""
    return orjson.dumps(
        {name: to_json_value(array, specs.get(name) if specs else None) for name, array in arrays.items()},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def to_json_value(array: NDArray, spec: TensorSpec | None = None) -> Any:
    """An array as a value orjson can write (numeric arrays pass through as numpy buffers)."""
    kind = array.dtype.kind
    if kind in "OSU":
        as_b64 = spec is not None and spec.dtype.json_kind is JsonKind.BYTES
        return _map_nested(array, lambda v: _bytes_json(v, as_b64))
    if kind == "c":
        pairs = np.stack([array.real, array.imag], axis=-1)
        return to_json_value(np.ascontiguousarray(pairs))
    if kind == "f" and (array.dtype == np.float16 or not np.isfinite(array).all()):
        return orjson.Fragment(_float_text(array))
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array)


_NON_FINITE = {math.inf: b"Infinity", -math.inf: b"-Infinity"}


def _float_text(array: NDArray) -> bytes:
    """Nested lists of floats, shortest round-trip text per dtype, NaN/Infinity as literals."""
    if array.ndim == 0:
        value = array[()]
        if math.isnan(value):
            return b"NaN"
        if math.isinf(value):
            return _NON_FINITE[float(value)]
        if array.dtype == np.float16:
            return np.format_float_positional(value, unique=True, trim="-").encode()
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"[" + b",".join(_float_text(sub) for sub in array) + b"]"


def _bytes_json(value: Any, as_b64: bool) -> Any:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not as_b64:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(data).decode("ascii")}


def _map_nested(array: NDArray, convert: Callable[[Any], Any]) -> Any:
    if array.ndim == 0:
        return convert(array[()])
    if array.ndim == 1:
        return [convert(value) for value in array]
    return [_map_nested(sub, convert) for sub in array]


# ---------------------------------------------------------------- error paths


def _is_json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits_int64(value: Any) -> bool:
    return not _is_json_int(value) or -(2**63) <= value < 2**64


def _raise_first(value: Any, path: str, ok: Callable[[Any], bool], message: str) -> None:
    """Raise `message` at the first leaf that is not `ok` (if any)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
        elif not ok(item):
            raise CodecError(f"{message}, got {_describe(item)}", field=where)


def _ragged_path(value: Any, path: str = "") -> str:
    """Path of the first list whose length differs from its siblings ('' if none)."""
    if not isinstance(value, list):
        return ""
    lengths = [len(v) if isinstance(v, list) else None for v in value]
    for i, length in enumerate(lengths[1:], start=1):
        if length != lengths[0]:
            return f"{path}[{i}]"
    for i, item in enumerate(value):
        found = _ragged_path(item, f"{path}[{i}]")
        if found:
            return found
    return ""


def _ragged_message(value: Any) -> str:
    return "ragged list: all lists at one depth must have the same length"


def _index_text(shape: Shape, flat_index: int) -> str:
    if not shape:
        return ""
    return "".join(f"[{i}]" for i in np.unravel_index(flat_index, shape))


def _shape_text(shape: Shape) -> str:
    return "scalar" if shape == () else "[" + ", ".join(str(d) for d in shape) + "]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    text = orjson.dumps(value).decode() if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(repr(name) for name in specs) or "(none)"
