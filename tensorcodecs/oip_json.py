"""numpy arrays <-> the Open Inference Protocol's (KServe v2) JSON tensors, and its binary
tensor extension.

A request's `inputs` is a list of `{name, shape, datatype, data, parameters}`; an answer's
`outputs` the same without `parameters` unless needed. The rules, after the protocol's REST
spec, Triton's HTTP server and MLServer's codecs:

- `shape` is concrete (non-negative integers); `data` holds exactly its element count, row-major,
  either flat or nested exactly as the shape (Triton also takes other nestings of the same count;
  here a nesting that is not the shape is refused, it is almost always a transposed tensor);
- `datatype` must be the contract's (Triton's rule: `FP64` for an `FP32` input is refused, never
  converted); BYTES serves both text and bytes contracts;
- elements follow the native codec (`json_codec`): integer datatypes take JSON integers only,
  float datatypes any number and the `NaN`/`Infinity` literals, BOOL `true`/`false` only, BYTES
  strings (their UTF-8 bytes), or base64 text with `parameters.content_type: "base64"` (MLServer's
  `Base64Codec`);
- binary extension: an input whose `parameters.binary_data_size` is set takes that many bytes
  from the body's binary part, in input order (numeric ones as read-only numpy views of the body,
  no copy; BYTES as 4-byte little-endian lengths each followed by its bytes), and has no `data`;
  the binary part must be used exactly;
- answers write `data` flat; NaN and +-Infinity as `null` (strict JSON, as the native API); a BYTES
  output whose elements are all valid UTF-8 as strings, else every element as base64 with
  `parameters.content_type: "base64"` (Triton would write the bytes into the JSON text, which
  makes the document invalid); an output asked binary (`binary_data_output` for the request, or
  `binary_data` per requested output, which wins) goes in the binary part with
  `parameters.binary_data_size`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from tensorcodecs.contract import TensorSpec, dims_text
from tensorcodecs.dtypes import DType, JsonKind, dtype_from_oip
from tensorcodecs.errors import CodecError
from tensorcodecs.json_codec import decode_value, fast_numeric, to_json_value
from tensorcodecs.oip_tensors import array_to_raw, oip_datatype, raw_to_array, shape_elements

NDArray = np.ndarray[Any, Any]
Buffer = bytes | memoryview

BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
CONTENT_TYPE = "content_type"
BASE64 = "base64"


class _Header:
    """One input's checked metadata, read before any data is decoded."""

    __slots__ = ("binary_size", "dtype", "index", "item", "name", "shape")

    def __init__(self, index: int, item: dict[str, Any], name: str, shape: tuple[int, ...], dtype: DType,
                 binary_size: int | None) -> None:
        self.index = index
        self.item = item
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.binary_size = binary_size


# ---------------------------------------------------------------- requests


def decode_inputs(items: object, specs: Mapping[str, TensorSpec] | None, binary: memoryview | None = None,
                  *, max_elements: int | None = None, bools: bool = True) -> dict[str, NDArray]:
    """The arrays of a request's `inputs` list, one per contract input (in contract order).

    Every input's name, shape and datatype are checked first (against `specs`, the contract, when
    given; without one the request's datatypes decide), then the element count of all the shapes
    against `max_elements`, and only then is any data decoded. `binary` is the body's binary part
    (the extension's bytes after the JSON header). `bools=False` promises that the JSON has no
    `true`/`false` literal (`json_codec.may_hold_bools`).
    """
    headers = _headers(items, specs)
    if max_elements is not None:
        count = 0
        for header in headers:
            count += _count(header.shape)
        if count > max_elements:
            raise CodecError(f"the request holds {count} tensor elements; the limit is {max_elements}",
                             "inputs")
    arrays: dict[str, NDArray] = {}
    offset = 0
    for header in headers:
        if header.binary_size is not None:
            if binary is None:
                raise CodecError(f"{BINARY_DATA_SIZE} is set but the request has no binary part "
                                 "(its Inference-Header-Content-Length header names the JSON's length)",
                                 _at(header.index, f"parameters.{BINARY_DATA_SIZE}"))
            end = offset + header.binary_size
            if end > len(binary):
                raise CodecError(f"{BINARY_DATA_SIZE} {header.binary_size} runs past the binary part's end "
                                 f"({len(binary) - offset} bytes left)",
                                 _at(header.index, f"parameters.{BINARY_DATA_SIZE}"))
            arrays[header.name] = _from_binary(header, binary[offset:end])
            offset = end
        else:
            arrays[header.name] = _from_json(header, bools)
    if binary is not None and offset != len(binary):
        raise CodecError(f"the binary part holds {len(binary) - offset} bytes after the inputs' "
                         f"{BINARY_DATA_SIZE} ({offset} of {len(binary)} bytes used)", "inputs")
    if specs is None:
        return arrays
    return {name: arrays[name] for name in specs}


def _headers(items: object, specs: Mapping[str, TensorSpec] | None) -> list[_Header]:
    if not isinstance(items, list):
        raise CodecError(f"inputs must be a list of tensors, got {_kind(items)}", "inputs")
    headers: list[_Header] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise CodecError(f"an input must be an object with name, shape, datatype and data, got "
                             f"{_kind(item)}", f"inputs[{index}]")
        name = item.get("name")
        if not isinstance(name, str):
            raise CodecError("an input needs a name (a string)", _at(index, "name"))
        if name in seen:
            raise CodecError(f"input {name!r} is given twice", _at(index, "name"))
        seen.add(name)
        spec = specs.get(name) if specs is not None else None
        if specs is not None and spec is None:
            raise CodecError(f"unknown input {name!r}; expected {_names(specs)}", _at(index, "name"))
        shape = _shape(item.get("shape"), index)
        dtype = _dtype(item.get("datatype"), spec, index)
        if spec is not None and not spec.accepts_shape(shape):
            raise CodecError(f"input {name!r} has shape {spec.shape_text()}, got {dims_text(shape)}",
                             _at(index, "shape"))
        parameters = item.get("parameters")
        binary_size = None if parameters is None else _binary_size(_parameters(parameters, _at(index, "parameters")),
                                                                    index)
        if binary_size is not None and "data" in item:
            raise CodecError(f"an input with {BINARY_DATA_SIZE} takes its data from the binary part: "
                             "it has no data", _at(index, "data"))
        if binary_size is None and "data" not in item:
            raise CodecError(f"input {name!r} has no data (nor {BINARY_DATA_SIZE})", _at(index, "data"))
        headers.append(_Header(index, item, name, shape, dtype, binary_size))
    if specs is not None:
        missing = [name for name in specs if name not in seen]
        if missing:
            raise CodecError(f"missing input {missing[0]!r}; expected {_names(specs)}", "inputs")
    return headers


def _shape(value: object, index: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise CodecError(f"shape must be a list of sizes, got {_kind(value)}", _at(index, "shape"))
    try:
        shape_elements(value, _at(index, "shape"))
    except CodecError as error:
        if not error.message.endswith("negative dimension"):
            raise
        raise CodecError(f"shape must hold sizes (integers from 0 to 2^63-1), got {value}",
                         _at(index, "shape")) from None
    return tuple(value)


def _dtype(value: object, spec: TensorSpec | None, index: int) -> DType:
    if spec is not None and spec.dtype.oip and value == spec.dtype.oip:
        return spec.dtype  # the contract's own (valid) datatype: what the checks below would return
    field = _at(index, "datatype")
    if not isinstance(value, str):
        raise CodecError(f"datatype must be a string (FP32, INT64, BYTES, ...), got {_kind(value)}", field)
    try:
        row = dtype_from_oip(value)
    except CodecError as error:
        raise CodecError(error.message, field) from None
    if spec is None:
        return row
    if not spec.dtype.oip:
        raise CodecError(f"input {spec.name!r} is {spec.dtype.name}, which the Open Inference Protocol "
                         "has no datatype for", field)
    if spec.dtype.oip != value:
        raise CodecError(f"input {spec.name!r} is {spec.dtype.oip} ({spec.dtype.name}), got datatype "
                         f"{value}", field)
    return spec.dtype  # the contract's row: string or bytes for BYTES


def _parameters(value: object, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CodecError(f"parameters must be an object, got {_kind(value)}", field)
    return value


def _binary_size(parameters: dict[str, Any], index: int) -> int | None:
    size = parameters.get(BINARY_DATA_SIZE)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise CodecError(f"{BINARY_DATA_SIZE} must be a number of bytes, got {size!r}",
                         _at(index, f"parameters.{BINARY_DATA_SIZE}"))
    return size


def _from_binary(header: _Header, raw: memoryview) -> NDArray:
    field = _at(header.index, "data")
    return raw_to_array(raw, header.dtype.oip, header.shape, field)


_FAST_KINDS = (JsonKind.INT, JsonKind.FLOAT)  # the kinds `decode_value` reads through `fast_numeric` first


def _from_json(header: _Header, bools: bool) -> NDArray:
    item = header.item
    data = item["data"]
    dtype = header.dtype
    if type(data) is list and dtype.json_kind in _FAST_KINDS:
        # decode_value's own first step for these kinds (a shapeless spec checks nothing more);
        # when it declines, the general path below decides and names the offending element.
        fast = fast_numeric(data, dtype, bools=bools)
        if fast is not None:
            if fast.shape == header.shape:
                return fast
            if fast.ndim == 1 and fast.size == _count(header.shape):
                return fast.reshape(header.shape)  # flat data, as the general path reshapes it
    path = _at(header.index, "data")
    array = decode_value(data, _shapeless(header.name, dtype), path, bools=bools)
    count = _count(header.shape)
    if array.shape != header.shape:
        if array.ndim > 1 or array.size != count:
            if array.size == count:
                raise CodecError(f"data is nested as {dims_text(array.shape)}, not as the shape "
                                 f"{dims_text(header.shape)}: write it flat or nested as the shape", path)
            raise CodecError(f"data holds {array.size} elements, shape {dims_text(header.shape)} "
                             f"holds {count}", path)
        array = array.reshape(header.shape)
    if not header.dtype.is_numeric:
        parameters = item.get("parameters") or {}
        if parameters.get(CONTENT_TYPE) == BASE64:
            array = _base64_elements(array, path)
    return array


def _shapeless(name: str, dtype: DType) -> TensorSpec:
    """The spec `decode_value` reads one input's data with: the dtype only (the shape is the
    request's, checked against the contract before and against the data after)."""
    return TensorSpec(name, dtype, None)


def _base64_elements(array: NDArray, path: str) -> NDArray:
    decoded = np.empty(array.size, dtype=object)
    for index, value in enumerate(array.reshape(-1).tolist()):
        try:
            decoded[index] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CodecError(f"invalid base64 (parameters.content_type is {BASE64})",
                             f"{path}[{index}]") from None
    return decoded.reshape(array.shape)


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# ---------------------------------------------------------------- answers


def requested_outputs(requested: object) -> dict[str, bool | None]:
    """The request's `outputs` list checked: each requested name with its `binary_data` (None
    when it does not say)."""
    if not isinstance(requested, list):
        raise CodecError(f"outputs must be a list of {{name, parameters}} objects, got {_kind(requested)}",
                         "outputs")
    wanted: dict[str, bool | None] = {}
    for index, item in enumerate(requested):
        field = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise CodecError(f"a requested output must be an object with a name, got {_kind(item)}", field)
        name = item.get("name")
        if not isinstance(name, str):
            raise CodecError("a requested output needs a name (a string)", f"{field}.name")
        if name in wanted:
            raise CodecError(f"output {name!r} is requested twice", f"{field}.name")
        parameters = _parameters(item.get("parameters"), f"{field}.parameters")
        if parameters.get("classification") is not None:
            raise CodecError("the classification extension is not supported: ask for the tensor",
                             f"{field}.parameters.classification")
        binary = parameters.get(BINARY_DATA)
        if binary is not None and not isinstance(binary, bool):
            raise CodecError(f"{BINARY_DATA} must be true or false, got {binary!r}",
                             f"{field}.parameters.{BINARY_DATA}")
        wanted[name] = binary
    return wanted


def encode_outputs(outputs: Mapping[str, NDArray], requested: object = None,
                   binary_output: bool = False) -> tuple[list[dict[str, Any]], list[Buffer]]:
    """An answer's `outputs` list (for `orjson.dumps(..., option=OPT_SERIALIZE_NUMPY)`) and the
    buffers of its binary part, in order.

    `requested` is the request's `outputs` value, or what `requested_outputs` made of it (None:
    every output, in the model's order); `binary_output` its `parameters.binary_data_output`.
    Numeric data goes to orjson as numpy arrays and binary buffers are views of the arrays where
    their layout allows (no copy).
    """
    if requested is None:
        chosen: Mapping[str, bool | None] = dict.fromkeys(outputs)
    else:
        chosen = requested if isinstance(requested, Mapping) else requested_outputs(requested)
        for index, name in enumerate(chosen):
            if name not in outputs:
                raise CodecError(f"unknown output {name!r}; the model answers "
                                 f"{', '.join(map(repr, outputs)) or '(none)'}", f"outputs[{index}].name")
    items: list[dict[str, Any]] = []
    buffers: list[Buffer] = []
    for name, binary in chosen.items():
        array = outputs[name]
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        datatype = oip_datatype(array)
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary if binary is not None else binary_output:
            buffer = _binary_buffer(array, datatype)
            item["parameters"] = {BINARY_DATA_SIZE: len(buffer)}
            buffers.append(buffer)
        elif datatype == "BYTES":
            data, base64_encoded = _bytes_json(array)
            item["data"] = data
            if base64_encoded:
                item["parameters"] = {CONTENT_TYPE: BASE64}
        else:
            item["data"] = to_json_value(array.reshape(-1))
        items.append(item)
    return items, buffers


def _binary_buffer(array: NDArray, datatype: str) -> Buffer:
    if datatype == "BYTES":
        return array_to_raw(array, datatype)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    contiguous = np.ascontiguousarray(array)
    return contiguous.reshape(-1).data.cast("B")


def _bytes_json(array: NDArray) -> tuple[list[str], bool]:
    """BYTES elements as text when every one is valid UTF-8, else all as base64 (True)."""
    values = array.reshape(-1).tolist()
    texts: list[str] = []
    try:
        for value in values:
            if isinstance(value, str):
                value.encode("utf-8")  # a lone surrogate is no UTF-8 text
                texts.append(value)
            elif isinstance(value, bytes | bytearray | memoryview):
                texts.append(bytes(value).decode("utf-8"))
            else:  # bytes(int) would be that many zero bytes: never a BYTES element
                raise CodecError(f"a BYTES output holds a {type(value).__name__}, not bytes or text")
    except UnicodeError:
        encoded = [base64.b64encode(value.encode("utf-8", "surrogatepass") if isinstance(value, str)
                                    else bytes(value)).decode("ascii") for value in values]
        return encoded, True
    return texts, False


# ---------------------------------------------------------------- messages


def _at(index: int, part: str) -> str:
    return f"inputs[{index}].{part}"


def _names(specs: Mapping[str, TensorSpec]) -> str:
    return ", ".join(repr(name) for name in specs) or "(none)"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
