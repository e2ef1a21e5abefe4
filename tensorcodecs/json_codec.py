"""JSON values <-> numpy arrays, checked against a contract field.

Decoding is numpy-vectorised on the happy path; the slower element walks run only to name the
offending element (`number[2][0]`) once something is already known to be wrong.

The element rules follow TF Serving's REST API (`tensorflow_serving/util/json_tensor.cc`):

- integers: JSON integers only; `1.5` and `1.0` are rejected, and so are `true`/`false`;
- floats: any JSON number and `NaN`, `Infinity`, `-Infinity`, rounded to the nearest value of
  the dtype, integer literals included (`16777217` is float32 `16777216`, as `16777217.0` is);
  a finite value that does not fit the dtype (`1e39` for float32) is rejected;
- bool: `true` / `false` only;
- string: JSON text (stored as its UTF-8 bytes) or `{"b64": "..."}` (stored decoded).

Deliberate differences from TF Serving, each for a stricter or a more complete contract:

- int8/int16/uint8/uint16 values are range-checked against their own dtype (TF Serving only
  checks that they fit int32 and lets the kernel truncate);
- a finite value that rounds to infinity is rejected (TF Serving makes it +-inf): on these routes
  a number beyond the field's range is a client mistake;
- float16 and complex are accepted (TF Serving's JSON API has neither): float16 follows the float
  rules, complex numbers are `[real, imag]` pairs;
- `bytes` fields accept plain text as its UTF-8 bytes as well as `{"b64": ...}`;
- float16 answers are written as the shortest text that reads back as the same float16 (TF
  Serving's WriteDecimal would write the float32 text of the value: `0.0999755859` for float16
  0.1, here `0.1`);
- answers are strict JSON: NaN, Infinity and -Infinity are written as `null` (requests may use the
  literals, as for TF Serving; its REST API, `tfserving_json`, also writes them);
- string answers that are not valid UTF-8 are written as `{"b64": ...}` rather than as invalid
  JSON text; `bytes` answers are always `{"b64": ...}`. Without a contract, a tensor whose name ends
  in `_bytes` is written as `{"b64": ...}`, as TF Serving does.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from itertools import chain
from typing import Any

import numpy as np
import orjson

from tensorcodecs.contract import Shape, TensorSpec, shape_text
from tensorcodecs.dtypes import DType, JsonKind
from tensorcodecs.errors import CodecError

NDArray = np.ndarray[Any, Any]

_RAGGED = "ragged list: all lists at one depth must have the same length"
MAX_RANK = 64  # numpy's limit on an array's dimensions
_NON_FINITE_TOKENS = (b"NaN", b"Infinity")


def loads(body: bytes | str) -> Any:
    """Parse a JSON document; NaN, Infinity and -Infinity are accepted as TF Serving does.

    orjson parses every standard document. A document it rejects is parsed again by the
    standard library only when it contains one of those literals (several times slower, so
    only such bodies pay for it); any other parse error is reported as orjson found it.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        if any(token in raw for token in _NON_FINITE_TOKENS):
            try:
                document = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError):
                pass
            else:
                problem = _fallback_problem(document, raw)
                if problem is None:
                    return document
                raise CodecError(f"request body is not valid JSON: {problem}") from None
        raise CodecError(f"request body is not valid JSON: {fast_error}") from None


_MAX_DEPTH = 1024  # orjson's nesting limit, kept by the standard library's parse too
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string token, escapes included


def _fallback_problem(document: Any, raw: bytes) -> str | None:
    """What orjson would have refused in a document the standard library parsed: nesting past
    `_MAX_DEPTH` (the standard library's bound is the interpreter's recursion limit) and lone
    surrogates (it keeps them). Both are read from the text at C speed, only when it can hold them."""
    if raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH:
        marks = np.frombuffer(_STRING.sub(b"", raw), dtype=np.uint8)  # brackets in strings are text
        if int(np.cumsum(_DEPTH_STEP[marks]).max()) > _MAX_DEPTH:
            return f"nested deeper than {_MAX_DEPTH} levels"
    if _SURROGATE_ESCAPE.search(raw):
        for token in _STRING.findall(raw):
            if _SURROGATE_ESCAPE.search(token) and not _is_utf8(json.loads(token)):
                return "a string holds a lone surrogate"
    return None


_DEPTH_STEP = np.zeros(256, dtype=np.int8)  # by byte: +1 for an opening bracket, -1 for a closing one
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def may_hold_bools(body: bytes) -> bool:
    """Whether a JSON document can contain a `true` or `false` literal (cheap, exact when False)."""
    # One-byte tests first: memchr is several times faster than a substring search.
    return (b"t" in body and b"u" in body and b"true" in body) or (b"f" in body and b"l" in body
                                                                   and b"false" in body)


# ---------------------------------------------------------------- JSON -> numpy


def decode_request(body: bytes, specs: Mapping[str, TensorSpec]) -> dict[str, NDArray]:
    """`loads` + `decode_inputs` for a raw request body (lets bool checks skip bool-free bodies)."""
    return decode_inputs(loads(body), specs, bools=may_hold_bools(body))


def decode_inputs(
    body: Any, specs: Mapping[str, TensorSpec], *, bools: bool = True
) -> dict[str, NDArray]:
    """Turn a request object `{name: value, ...}` into arrays, one per contract input.

    `bools=False` promises that the document has no `true`/`false` literal (see
    `may_hold_bools`), which spares numeric fields the exact walk for bools hiding as 0/1.
    """
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
    return {name: decode_value(body[name], spec, name, bools=bools) for name, spec in specs.items()}


def decode_value(value: Any, spec: TensorSpec, path: str, *, bools: bool = True) -> NDArray:
    """One JSON value (scalar or nested lists) as an array of the spec's dtype and shape."""
    check_rank(value, path)
    kind = spec.dtype.json_kind
    if kind is JsonKind.STRING or kind is JsonKind.BYTES:
        array = _decode_strings(value, path)
    elif kind is JsonKind.COMPLEX:
        array = _decode_complex(value, spec.dtype, path, bools)
    else:
        array = _decode_numeric(value, spec.dtype, path, bools)
    if array.size == 0 and spec.shape and len(spec.shape) > array.ndim and array.shape[-1:] == (0,):
        # JSON cannot write the dims after an empty one ([] for shape [0, 3]): take them from the
        # contract (-1 as 0), as an empty batch of a [-1, 3] input is written [].
        array = array.reshape(array.shape + tuple(max(d, 0) for d in spec.shape[array.ndim:]))
    if not spec.accepts_shape(array.shape):
        raise CodecError(
            f"expected shape {spec.shape_text()}, got {shape_text(array.shape)}", field=path
        )
    return array


def check_rank(value: Any, path: str, limit: int = MAX_RANK) -> None:
    """A client error naming `path` when the first elements nest deeper than `limit` lists
    (lists nested deeper elsewhere are ragged, which the decoders report)."""
    depth = 0
    while type(value) is list:
        depth += 1
        if depth > limit:
            raise CodecError(f"lists nested more than {limit} deep: a tensor has at most {limit} "
                             "dimensions", field=path)
        value = value[0] if value else None


def _decode_numeric(value: Any, target: DType, path: str, bools: bool) -> NDArray:
    if type(value) is list and target.json_kind is not JsonKind.BOOL:
        fast = fast_numeric(value, target, bools=bools)
        if fast is not None:
            return fast
    raw = _as_array(value, path)
    kind = target.json_kind
    if raw.size == 0:
        return np.empty(raw.shape, dtype=target.numpy)
    raw_kind = raw.dtype.kind
    if kind is JsonKind.BOOL:
        if raw_kind == "b":
            return raw
        _raise_first(value, path, _is_bool, "expected true or false")
    elif kind is JsonKind.INT:
        if raw_kind in "iu" and not (bools and _hides_bools(value, raw)):
            return _checked_int_cast(raw, target, path)
        _raise_first(value, path, _is_json_int, f"expected an integer ({target.name})")
        info = np.iinfo(target.numpy)
        _raise_first(value, path, lambda v: info.min <= v <= info.max,
                     f"out of range for {target.name} [{info.min}, {info.max}]")
        # Every element is an in-range integer that numpy could not type on its own
        # (e.g. 2**64 - 1 next to small values): convert element by element.
        return np.array(value, dtype=target.numpy)
    else:
        if raw_kind in "iuf" and not (bools and _hides_bools(value, raw)):
            return _checked_float_cast(raw, value, target.numpy, target.name, path)
        _raise_first(value, path, _is_json_number, f"expected a number ({target.name})")
        return _checked_float_cast(np.asarray(value, dtype=object), value, target.numpy, target.name, path)
    raise CodecError(f"cannot read the value as {target.name}", field=path)


_INT, _FLOAT, _BOOL = JsonKind.INT, JsonKind.FLOAT, JsonKind.BOOL  # enum attributes are slow to read


def fast_numeric(value: list[Any], target: DType, *, bools: bool = True,
                 to_infinity: bool = False) -> NDArray | None:
    """The array for a regular list of plain numbers, converted straight to `target`, or None:
    then the caller's element walk decides, and names the offending element.

    numpy's own dtype discovery walks Python ints twice as slowly as a typed conversion, so the
    element types are settled by `sum` instead (C speed; exact): a `TypeError` means a string,
    null, object or misplaced list; a float total means at least one decimal literal, an int
    total means integers only. Integer fields take integers only (numpy raises on a value out of
    the dtype's range). Float fields, by the native codec's rule, take lists with a decimal
    literal in which no finite value rounds to infinity; with `to_infinity` (TF Serving's rule:
    rapidjson's GetDouble, then GetFloat's cast) any numbers, each read as a double and rounded to
    the dtype, beyond its range to +-inf. Bool fields take lists of bools only. A JSON bool in a
    numeric field is 0 or 1 to numpy: such a list is refused, exactly, unless `bools=False`
    promises that the document has no `true`/`false` literal (`may_hold_bools`).
    """
    kind = target.json_kind
    if kind is not _INT and kind is not _FLOAT:
        return _bools_only(value) if kind is _BOOL else None
    leaves: Any = value
    item: Any = value
    depth = 1
    while True:
        item = item[0] if item else None
        if type(item) is not list:
            break
        depth += 1
        if depth > MAX_RANK:
            return None  # deeper than numpy goes: the walk says so
        leaves = chain.from_iterable(leaves)
    try:
        total = sum(leaves)
    except (TypeError, OverflowError):  # OverflowError: a float next to an int beyond double range
        return None
    try:
        if kind is _INT:
            if type(total) is not int:
                return None
            array = np.asarray(value, dtype=target.numpy)
        elif to_infinity:
            array = through_doubles(value, target, integers=type(total) is int)
        else:
            if type(total) is not float:
                return None
            with np.errstate(over="ignore"):
                array = np.asarray(value, dtype=target.numpy)
            if not math.isfinite(total) or array.dtype.itemsize < 8:
                # A finite float32/float16 sum proves that no value rounded to infinity.
                with np.errstate(over="ignore", invalid="ignore"):
                    array_total = array.sum()
                if not np.isfinite(array_total) and np.isinf(array).any():
                    return None  # Infinity literals and overflow are told apart by the general path
    except (ValueError, OverflowError, TypeError):
        return None
    if bools and _hides_bools(value, array):
        return None
    return array


def _bools_only(value: list[Any]) -> NDArray | None:
    """numpy's reading of a list of JSON bools (None when anything else is in it)."""
    try:
        raw = np.asarray(value)
    except (ValueError, OverflowError):
        return None
    return raw if raw.dtype.kind == "b" else None


def through_doubles(value: list[Any], target: DType, *, integers: bool = False) -> NDArray:
    """Numbers (nested lists) as doubles rounded to the float dtype `target`: rapidjson's
    GetDouble, then GetFloat's cast, as TF Serving reads them (beyond the float's range +-inf,
    below its smallest 0). numpy converts each Python number through a double; `integers` (all
    of them are ints) goes faster through an int64 array. OverflowError for an int beyond double."""
    with np.errstate(over="ignore", under="ignore"):
        if integers:
            try:
                return np.asarray(value, dtype=np.int64).astype(np.float64).astype(target.numpy, copy=False)
            except OverflowError:
                pass  # beyond int64: each integer on its own
        return np.asarray(value, dtype=target.numpy)


def _checked_int_cast(raw: NDArray, target: DType, path: str) -> NDArray:
    if raw.dtype == target.numpy:
        return raw.view(target.numpy)  # the canonical dtype object ('L', not the equal 'Q')
    info = np.iinfo(target.numpy)
    if raw.min() < info.min or raw.max() > info.max:
        bad = (raw < info.min) | (raw > info.max)
        index = int(np.flatnonzero(bad)[0])
        raise CodecError(  # reshape, not .flat: numpy's flat iterator stops at 32 dimensions (MAX_RANK is 64)
            f"out of range for {target.name} [{info.min}, {info.max}], got {raw.reshape(-1)[index]}",
            field=path + _index_text(raw.shape, index),
        )
    return raw.astype(target.numpy)


def _checked_float_cast(
    raw: NDArray, value: Any, dtype: np.dtype[Any], name: str, path: str
) -> NDArray:
    """Cast to the float dtype, rounding to the nearest value: integer literals as decimal ones
    (through float64, as TF Serving does: `1435774380` and `1435774380.0` are the same float32);
    a finite value that rounds to infinity is rejected."""
    finfo = np.finfo(dtype)
    if raw.dtype.kind == "O":
        try:
            raw = np.asarray(value, dtype=np.float64)
        except OverflowError:  # an integer beyond float64 (JSON with NaN literals keeps those exact)
            raise CodecError(f"out of range for {name} (largest finite value {float(finfo.max):.8g})",
                             field=path) from None
    elif raw.dtype.kind in "iu":
        raw = raw.astype(np.float64)
    if raw.dtype == dtype:
        return raw
    with np.errstate(over="ignore"):
        cast = raw.astype(dtype)
    # A finite value that rounds to infinity in the dtype (1e39 for float32) is rejected.
    over = np.isinf(cast)
    if over.any():
        over &= np.isfinite(raw)
        if over.any():
            index = int(np.flatnonzero(over)[0])
            raise CodecError(  # reshape, not .flat: numpy's flat iterator stops at 32 dimensions
                f"out of range for {name} (largest finite value {float(finfo.max):.8g}), "
                f"got {_describe(float(raw.reshape(-1)[index]))}",
                field=path + _index_text(raw.shape, index),
            )
    return cast


def _hides_bools(value: Any, raw: NDArray) -> bool:
    """Exact: whether `value`, nested lists of numbers that numpy read as `raw`, holds a JSON
    bool that numpy read as 0 or 1.

    Only the elements that are 0 or 1 can be one, so the common case costs one vectorised
    comparison; a few such elements are looked up, many (or a small array's all) are checked in
    the numbers' JSON text, which has a `t` or an `f` only where a bool was (written by orjson at
    C speed).
    """
    if raw.ndim == 0:
        return isinstance(value, bool)
    if raw.size > _FEW_ZEROS_AND_ONES:  # fewer numbers are written faster than numpy compares them
        zero_or_one = (raw == 0) | (raw == 1)
        count = int(np.count_nonzero(zero_or_one))
        if not count:
            return False
        if count <= _FEW_ZEROS_AND_ONES:
            hits = np.flatnonzero(zero_or_one)
            if raw.ndim == 1:
                return any(type(value[i]) is bool for i in hits.tolist())
            for index in zip(*(axis.tolist() for axis in np.unravel_index(hits, raw.shape)), strict=True):
                item = value
                for i in index:
                    item = item[i]
                if type(item) is bool:
                    return True
            return False
    try:
        text = orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits: walk the elements instead
        pass
    else:
        return b"t" in text or b"f" in text
    rows: list[Any] = [value]
    for _ in range(raw.ndim - 1):
        rows = list(chain.from_iterable(rows))
    return bool in set(map(type, chain.from_iterable(rows)))


_FEW_ZEROS_AND_ONES = 16  # up to this many, looking each up is cheaper than writing the text


def _as_array(value: Any, path: str) -> NDArray:
    if isinstance(value, dict):
        raise CodecError("expected a number or a list, got an object", field=path)
    if isinstance(value, str):
        raise CodecError(f"expected a number or a list, got {_describe(value)}", field=path)
    try:
        raw = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        _raise_ragged(value, path)
        raw = np.asarray(value, dtype=object)
    if raw.dtype.kind == "O":
        _raise_ragged(value, path)
    return raw


def _raise_ragged(value: Any, path: str) -> None:
    where = _ragged_path(value)
    if where:
        raise CodecError(_RAGGED, field=path + where)


def _decode_complex(value: Any, target: DType, path: str, bools: bool) -> NDArray:
    raw = _as_array(value, path)
    part_dtype = target.numpy.type(0).real.dtype
    if raw.size == 0:
        return np.empty(raw.shape, dtype=target.numpy)  # no pairs at all: [] or [[], ...]
    if raw.ndim == 0 or raw.shape[-1] != 2:
        raise CodecError("expected complex numbers as [real, imaginary] pairs", field=path)
    if raw.dtype.kind not in "iuf" or (bools and _hides_bools(value, raw)):
        _raise_first(value, path, _is_json_number, f"expected a number ({target.name} part)")
    parts = _checked_float_cast(raw, value, part_dtype, f"{target.name} part", path)
    parts = np.ascontiguousarray(parts, dtype=part_dtype)
    return parts.view(target.numpy)[..., 0]


def _decode_strings(value: Any, path: str) -> NDArray:
    flat: list[bytes] = []
    try:
        shape = _walk_strings(value, flat)
    except _BadElement as bad:
        raise CodecError(bad.message, field=path + "".join(f"[{i}]" for i in reversed(bad.index))) from None
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


class _BadElement(Exception):
    """An element that is not a string; `index` is filled in innermost-first while unwinding."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.index: list[int] = []


def _walk_strings(value: Any, out: list[bytes]) -> Shape:
    if type(value) is not list:
        out.append(_string_bytes(value))
        return ()
    if not value or type(value[0]) is not list:
        append = out.append
        for i, item in enumerate(value):
            if type(item) is str:
                append(item.encode("utf-8", "surrogatepass"))
                continue
            try:
                if type(item) is list:
                    raise _BadElement(_RAGGED)
                append(_string_bytes(item))
            except _BadElement as bad:
                bad.index.append(i)
                raise
        return (len(value),)
    first: Shape | None = None
    for i, item in enumerate(value):
        try:
            if type(item) is not list:
                raise _BadElement(_RAGGED)
            shape = _walk_strings(item, out)
            if first is None:
                first = shape
            elif shape != first:
                raise _BadElement(_RAGGED)
        except _BadElement as bad:
            bad.index.append(i)
            raise
    return (len(value), *(first or ()))


# The base64 of `{"b64": ...}`: groups of four, the last one short and padded (RFC 4648). Checked
# before decoding: Python's decoder also takes padding after a whole group ("AAAA=", "AAAA====").
B64_PADDED = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_B64_PADDED_TEXT = re.compile(B64_PADDED)


def _string_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict):
        encoded = value.get("b64")
        if len(value) != 1 or not isinstance(encoded, str):
            raise _BadElement('expected a string or {"b64": "..."}, got an object')
        if not _B64_PADDED_TEXT.fullmatch(encoded):
            raise _BadElement('invalid base64 in {"b64": ...}')
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise _BadElement('invalid base64 in {"b64": ...}') from None
    raise _BadElement(f'expected a string or {{"b64": "..."}}, got {_describe(value)}')


# ---------------------------------------------------------------- numpy -> JSON


def encode_outputs(
    arrays: Mapping[str, NDArray | np.generic], specs: Mapping[str, TensorSpec] | None = None
) -> bytes:
    """A response object `{name: nested lists}` as JSON bytes.

    Text elements go out unchecked; only when orjson refuses one (a lone surrogate) are the
    answer's strings written again through `string_json`.
    """
    try:
        return orjson.dumps(_json_values(arrays, specs, _text_json), option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        values = _json_values(arrays, specs, _checked_text_json)
        return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_values(arrays: Mapping[str, NDArray | np.generic], specs: Mapping[str, TensorSpec] | None,
                 text: Callable[[Any], Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, array in arrays.items():
        spec = specs.get(name) if specs else None
        as_b64 = spec.dtype.json_kind is JsonKind.BYTES if spec else name.endswith("_bytes")
        values[name] = _json_value(np.asarray(array), as_b64, text)
    return values


def to_json_value(array: NDArray | np.generic, spec: TensorSpec | None = None) -> Any:
    """An array as a value `orjson.dumps(..., option=OPT_SERIALIZE_NUMPY)` writes faithfully.

    Numeric arrays pass through as numpy buffers (NaN and +-Infinity are written as null);
    strings as nested lists of str / `{"b64": ...}`.
    """
    as_b64 = spec is not None and spec.dtype.json_kind is JsonKind.BYTES
    return _json_value(np.asarray(array), as_b64, _checked_text_json)


def _json_value(array: NDArray, as_b64: bool, text: Callable[[Any], Any]) -> Any:
    """`text` writes the elements of a string array that is not bytes (`_text_json` or
    `_checked_text_json`)."""
    kind = array.dtype.kind
    if kind in "OSU":
        return _map_nested(array, _b64_json if as_b64 else text)
    if kind == "c":
        if array.ndim >= MAX_RANK:  # the pairs' axis would be one more than numpy takes: outer ones as lists
            return [_json_value(part, as_b64, text) for part in array]
        pairs = np.stack([array.real, array.imag], axis=-1)
        return _json_value(pairs, as_b64, text)
    if kind not in "biuf":
        raise CodecError(f"cannot write {array.dtype} values as JSON")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if kind == "f" and array.dtype == np.float16:
        # float64 values whose shortest text is the shortest text of each float16.
        array = _half_table()[array.view(np.uint16)]
    # orjson writes NaN and +-Infinity as null: answers stay strict JSON (TF's tokens are /v1's).
    if array.ndim == 0:
        return array.item() if kind in "biu" else array[()]
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


@functools.cache
def _half_table() -> NDArray:
    """For every float16 bit pattern, the float64 read from its shortest round-trip text."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    return np.array([float(str(v)) for v in halves], dtype=np.float64)


def string_json(value: str | bytes, as_b64: bool) -> str | dict[str, str]:
    """One string element as JSON: its text, or `{"b64": ...}` when `as_b64` is asked or it is
    not valid UTF-8 (JSON text cannot carry it).

    A str goes out as it is; one with a lone surrogate (no UTF-8 text can hold it) goes as the
    base64 of its surrogatepass bytes, where both codecs once failed the answer with a 500.
    """
    if isinstance(value, str):
        if not as_b64 and (value.isascii() or _encodes(value)):
            return value
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = bytes(value)
        if not as_b64:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
    return {"b64": base64.b64encode(data).decode("ascii")}


def _text_json(value: Any) -> Any:
    """A text element as `string_json` writes it, a str as it is (unchecked: the caller's
    orjson refuses a lone surrogate)."""
    return value if type(value) is str else string_json(value, False)


def _checked_text_json(value: Any) -> Any:
    return string_json(value, False)


def _b64_json(value: Any) -> Any:
    return string_json(value, True)


def _encodes(text: str) -> bool:
    """Whether `text` is valid UTF-8 text (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _map_nested(array: NDArray, convert: Callable[[Any], Any]) -> Any:
    if array.ndim == 0:
        return convert(array[()])
    if array.ndim == 1:
        return [convert(value) for value in array.tolist()]
    return [_map_nested(sub, convert) for sub in array]


# ---------------------------------------------------------------- error paths


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _raise_first(value: Any, path: str, ok: Callable[[Any], bool], message: str) -> None:
    """Raise `message` at the first leaf that is not `ok` (if any)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
        elif not ok(item):
            raise CodecError(f"{message}, got {_describe(item)}", field=where)


def _ragged_path(value: Any) -> str:
    """Path of the first element whose depth or length differs from the first at its level.

    '' when every list at one depth has the same length and all leaves are at the same depth.
    """
    level: list[tuple[Any, str]] = [(value, "")]
    while level:
        first = level[0][0]
        want = len(first) if isinstance(first, list) else None
        for node, where in level:
            if (len(node) if isinstance(node, list) else None) != want:
                return where
        if want is None:
            return ""
        level = [(child, f"{where}[{i}]") for node, where in level for i, child in enumerate(node)]
    return ""


def _index_text(shape: Shape, flat_index: int) -> str:
    if not shape:
        return ""
    return "".join(f"[{i}]" for i in np.unravel_index(flat_index, shape))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, float):
        text = "NaN" if value != value else repr(value).replace("inf", "Infinity")
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _names(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(repr(name) for name in specs) or "(none)"
