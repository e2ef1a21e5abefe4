"""TensorFlow Serving's REST JSON, as pure functions.

Reproduces `tensorflow_serving/util/json_tensor.cc` and the model status / metadata JSON of
its HTTP handler: row (`instances`) and columnar (`inputs`) requests, `predictions` /
`outputs` answers, `{"b64": ...}` strings, shapes inferred from the first element of each
list, NaN/Infinity, the int/float rules, tf.Example JSON for classify/regress, and TF's
error messages. Errors are `CodecError`s whose message is what TF Serving would put in
`{"error": ...}`; the JSON values they quote are written and cut after 256 bytes as TF
Serving's JsonValueToDebugString does, so that a large request is not echoed whole.

Stricter than TF Serving: int8, int16, uint8 and uint16 inputs are range-checked against their
own type and a value beyond it is refused (TF takes any int32 there and the tensor wraps it).

The pieces whose rules are the native codec's come from `json_codec` (`loads`, `string_json`,
`through_doubles` and `fast_numeric` with TF's float rule); SignatureDefs become contracts in `signature_def`.

No I/O and no transport here: callers pass parsed JSON, contracts and proto messages.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format

from protos.services import SIGNATURE_DEF_MAP_TYPE_URL
from protos.tensorflow.example_pb2 import Example
from protos.tensorflow.feature_pb2 import Feature
from protos.tensorflow_serving.classification_pb2 import ClassificationResult
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataResponse, SignatureDefMap
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusResponse, ModelVersionStatus
from protos.tensorflow_serving.input_pb2 import Input
from protos.tensorflow_serving.regression_pb2 import RegressionResult
from protos.tensorflow_serving.status_pb2 import StatusProto
from tensorcodecs.contract import Signature, TensorSpec, dims_text
from tensorcodecs.dtypes import DType, JsonKind
from tensorcodecs.errors import CodecError
from tensorcodecs.json_codec import MAX_RANK, fast_numeric, loads, string_json, through_doubles
from tensorcodecs.rapidjson_dtoa import rapidjson_double, rapidjson_number
from tensorcodecs.signature_def import SIGNATURE_DEF, signature_from_def

NDArray = np.ndarray

SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
BYTES_SUFFIX = "_bytes"

# TF's DataTypeString() for the rows of the dtype table whose name differs.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half", "bytes": "string"}


class Format(Enum):
    """Which request shape the client used; the answer uses the matching one."""

    ROW = "row"  # {"instances": [...]} -> {"predictions": [...]}
    COLUMNAR = "columnar"  # {"inputs": ...} -> {"outputs": ...}


@dataclass(frozen=True, slots=True)
class PredictBody:
    """A decoded `:predict` request."""

    inputs: dict[str, NDArray]
    format: Format


# ---------------------------------------------------------------- request documents


def parse_document(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (NaN and Infinity allowed), or TF's parse errors."""
    if not body.strip():
        raise CodecError("JSON Parse error: The document is empty")
    try:
        document = loads(body)
    except CodecError as error:
        raise CodecError(f"JSON Parse error: {error.message}") from None
    if not isinstance(document, dict):
        raise CodecError(f"JSON Value: {value_text(document)} Is not object")
    return document


def signature_name(document: Mapping[str, Any]) -> str | None:
    """The optional `signature_name` of a request document."""
    if SIGNATURE_KEY not in document:
        return None
    name = document[SIGNATURE_KEY]
    if not isinstance(name, str):
        raise CodecError(f"JSON Value: {value_text(document)} not formatted correctly. "
                         "'signature_name' key must be a string value.")
    return name


def decode_predict(
    document: Mapping[str, Any], specs: Mapping[str, TensorSpec], *, bools: bool = True
) -> PredictBody:
    """The input tensors of a `:predict` document, typed by the signature's inputs.

    Shapes come from the JSON (the first element of each list decides the size at its
    depth); shapes the signature fixes are then checked too. `bools=False` promises that the
    document has no `true`/`false` literal (`json_codec.may_hold_bools` of its body).
    """
    if not specs:
        raise CodecError("Failed to get input map for signature")
    has_instances, has_inputs = INSTANCES_KEY in document, INPUTS_KEY in document
    if has_instances and has_inputs:
        raise CodecError(f"JSON Value: {value_text(document)} Not formatted correctly expecting only "
                         "one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = document[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise CodecError(f"JSON Value: {value_text(document)} Excepting 'instances' to be an list/array")
        if not instances:
            raise CodecError(f"JSON Value: {value_text(document)} No values in 'instances' array")
        inputs, fmt = _decode_instances(instances, specs, bools), Format.ROW
    elif has_inputs:
        inputs, fmt = _decode_columns(document[INPUTS_KEY], specs, bools), Format.COLUMNAR
    else:
        raise CodecError("Missing 'inputs' or 'instances' key")
    for name, array in inputs.items():
        spec = specs[name]
        if not spec.accepts_shape(array.shape):
            raise CodecError(f"input {name!r} has shape {dims_text(array.shape)} but the signature "
                             f"expects {spec.shape_text()}", field=name)
    return PredictBody(inputs, fmt)


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _decode_instances(instances: list[Any], specs: Mapping[str, TensorSpec], bools: bool) -> dict[str, NDArray]:
    first = instances[0]
    if not isinstance(first, dict) and len(specs) > 1:
        raise CodecError("instances is a plain list, but expecting list of objects as multiple input "
                         "tensors required as per tensorinfo_map")
    named = _is_element_object(first)
    if not named:
        name = next(iter(specs))
        fast = fast_numeric(instances, specs[name].dtype, bools=bools, to_infinity=True)
        if fast is not None and fast.ndim >= 1:
            return {name: fast}
    elif all(_is_element_object(e) and set(e) == set(specs) for e in instances):
        columns = {name: [e[name] for e in instances] for name in specs}
        arrays = {name: fast_numeric(values, specs[name].dtype, bools=bools, to_infinity=True)
                  for name, values in columns.items()}
        if all(a is not None for a in arrays.values()):
            return {name: a for name, a in arrays.items() if a is not None}
    # The exact walk, element by element, with TF's errors.
    items: dict[str, list[NDArray]] = {}
    for index, element in enumerate(instances):
        if named:
            if not _is_element_object(element):
                raise CodecError(f"Expecting object but got list at item {index} of input list")
            for key, value in element.items():
                try:
                    _add_instance_item(value, key, specs, items)
                except CodecError as error:
                    raise CodecError(f"Failed to process element: {index} key: {key} of 'instances' "
                                     f"list. Error: INVALID_ARGUMENT: {error.message}") from None
            if set(element) != set(specs):
                raise CodecError(f"Failed to process element: {index} of 'instances' list. JSON object: "
                                 f"{value_text(element)} keys must be equal to: {','.join(sorted(specs))}")
        else:
            if _is_element_object(element):
                raise CodecError(f"Expecting value/list but got object at item {index} of input list")
            try:
                _add_instance_item(element, next(iter(specs)), specs, items)
            except CodecError as error:
                raise CodecError(f"Failed to process element: {index} of 'instances' list. "
                                 f"Error: INVALID_ARGUMENT: {error.message}") from None
    return {name: _stack(arrays, specs[name].dtype) for name, arrays in items.items()}


def _add_instance_item(value: Any, name: str, specs: Mapping[str, TensorSpec],
                       items: dict[str, list[NDArray]]) -> None:
    if name not in specs:
        raise CodecError(f"JSON object: does not have named input: {name}")
    array = _exact_tensor(value, specs[name].dtype, MAX_RANK - 1)  # instances add a dimension
    seen = items.setdefault(name, [])
    if seen:
        want = seen[0]
        if want.size != array.size:
            raise CodecError(f"Expecting tensor size: {want.size} but got: {array.size}")
        if want.shape != array.shape:
            raise CodecError(f"Expecting shape {tf_shape_text(want.shape)} but got: {tf_shape_text(array.shape)}")
    seen.append(array)


def _stack(arrays: list[NDArray], dtype: DType) -> NDArray:
    if dtype.is_numeric:
        return np.stack(arrays)
    out = np.empty((len(arrays), *arrays[0].shape), dtype=object)
    for i, array in enumerate(arrays):
        out[i, ...] = array
    return out


def _decode_columns(value: Any, specs: Mapping[str, TensorSpec], bools: bool) -> dict[str, NDArray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise CodecError("inputs is a plain value/list, but expecting an object as multiple input "
                             "tensors required as per tensorinfo_map")
        name = next(iter(specs))
        return {name: tensor_from_json(value, specs[name].dtype, bools=bools)}
    arrays: dict[str, NDArray] = {}
    for name, spec in specs.items():
        if name not in value:
            raise CodecError(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = tensor_from_json(value[name], spec.dtype, bools=bools)
    return arrays


def tensor_from_json(value: Any, dtype: DType, *, bools: bool = True) -> NDArray:
    """One JSON value (scalar or nested lists) as an array, with TF's shape and type rules
    (`bools` as in `decode_predict`)."""
    fast = fast_numeric(value, dtype, bools=bools, to_infinity=True) if type(value) is list else None
    return fast if fast is not None else _exact_tensor(value, dtype)


# ---------------------------------------------------------------- JSON value -> array


def _exact_tensor(value: Any, dtype: DType, max_rank: int = MAX_RANK) -> NDArray:
    """TF's GetDenseTensorShape + FillTensorProto: the shape follows the first element at
    each depth and every other list must match it."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        if len(shape) == max_rank:
            raise CodecError(f"lists nested more than {max_rank} deep: a tensor has at most {max_rank} "
                             "dimensions")
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list[Any] = []
    _fill(value, 0, shape, dtype, flat)
    if dtype.json_kind is JsonKind.FLOAT:
        # Every double is taken, rounded: json_tensor.cc dropped its "without loss of precision" check.
        return through_doubles(flat, dtype).reshape(shape)
    if dtype.is_numeric:
        return np.array(flat, dtype=dtype.numpy).reshape(shape)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _fill(value: Any, level: int, shape: list[int], dtype: DType, out: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise CodecError(f"JSON Value: {value_text(value)} found at incorrect level: {level + 1} "
                             f"in the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype.json_kind not in (JsonKind.STRING, JsonKind.BYTES):
                raise _type_error(value, dtype)
            out.append(decode_b64(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise CodecError(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise CodecError(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                         f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _scalar(value: Any, dtype: DType) -> Any:
    """TF's AddValueToTensor for one JSON scalar."""
    kind = dtype.json_kind
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is JsonKind.FLOAT:
        if not is_number:
            raise _type_error(value, dtype)
        return _as_double(value)
    if kind is JsonKind.INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _type_error(value, dtype)
        info = np.iinfo(dtype.numpy)
        if not info.min <= value <= info.max:
            raise _type_error(value, dtype)
        return value
    if kind is JsonKind.BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if kind in (JsonKind.STRING, JsonKind.BYTES):
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogatepass")
    raise CodecError(f"Conversion of JSON Value: {value_text(value)} to type: {tf_type_name(dtype)}")


def _as_double(value: int | float) -> float:
    """A JSON number as rapidjson holds it: a double (an integer beyond one is a parse error)."""
    try:
        return float(value)
    except OverflowError:
        raise CodecError("JSON Parse error: Number too big to be stored in double") from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


# TF Serving's base64 (absl's Base64Unescape): as B64_PADDED, the padding optional but whole when
# there ("AA==" or "AA", not "AA="); never padding after a whole group ("AAAA=", which Python's
# decoder would take).
B64_UNPADDED = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$"
_B64_UNPADDED_TEXT = re.compile(B64_UNPADDED)


def decode_b64(value: Any) -> bytes:
    """`{"b64": "..."}` as bytes (padding optional, as absl's decoder allows)."""
    if not _is_b64(value):
        raise CodecError(f"JSON Value: {value_text(value)} not formatted correctly for base64 data")
    text: str = value["b64"]
    if not _B64_UNPADDED_TEXT.fullmatch(text):
        raise CodecError("Unable to base64 decode")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("Unable to base64 decode") from None


def _type_error(value: Any, dtype: DType) -> CodecError:
    return CodecError(f"JSON Value: {value_text(value)} Type: {json_type(value)} is not of expected "
                      f"type: {tf_type_name(dtype)}")


def tf_type_name(dtype: DType) -> str:
    """TF's DataTypeString() for a row of the dtype table (`float`, `int32`, `string`...)."""
    return _TF_TYPE_NAMES.get(dtype.name, dtype.name)


def json_type(value: Any) -> str:
    """rapidjson's type name of a JSON value."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


DEBUG_TEXT_BYTES = 256  # json_tensor.cc's kMaxJsonDebugStringBytes


def value_text(value: Any) -> str:
    """A JSON value as TF's JsonValueToDebugString writes it: rapidjson's PrettyWriter with
    single-line arrays (`[1, 2]`; objects one member a line, indented by four), numbers as
    rapidjson reads and writes them (`rapidjson_dtoa`). TF checks the 256 bytes before each writer
    call and stops at the first one past them, so the text ends after a whole token (a long
    string is never cut); a NaN or Infinity stops the text after its separator, as rapidjson's
    writer refuses it."""
    parts: list[str] = []
    size = 0
    try:
        for text in _writer_calls(value, []):
            if size >= DEBUG_TEXT_BYTES:
                break
            parts.append(text)
            size += len(text.encode("utf-8", "surrogatepass"))
    except _WriterRefused as refused:
        if size < DEBUG_TEXT_BYTES:
            parts.append(refused.prefix)
    return "".join(parts)


class _WriterRefused(Exception):
    """rapidjson's writer returned false (a NaN or Infinity): nothing more is written."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.prefix = prefix


def _writer_calls(value: Any, levels: list[list[int]]) -> Iterator[str]:
    """What each handler call of rapidjson's Value::Accept writes; `levels` is the writer's
    stack of open containers, each [in_array, values written]."""
    if isinstance(value, dict):
        yield _pretty_prefix(levels) + "{"
        levels.append([0, 0])
        for key, item in value.items():
            yield _pretty_prefix(levels) + _string_text(str(key))
            yield from _writer_calls(item, levels)
        written = levels.pop()[1]
        yield ("\n" + "    " * len(levels) if written else "") + "}"
    elif isinstance(value, list):
        yield _pretty_prefix(levels) + "["
        levels.append([1, 0])
        for item in value:
            yield from _writer_calls(item, levels)
        levels.pop()
        yield "]"
    else:
        prefix = _pretty_prefix(levels)
        text = _scalar_text(value)
        if text is None:
            raise _WriterRefused(prefix)
        yield prefix + text


def _pretty_prefix(levels: list[list[int]]) -> str:
    """PrettyWriter::PrettyPrefix with kFormatSingleLineArray and an indent of four spaces."""
    if not levels:
        return ""
    level = levels[-1]
    in_array, count = level
    level[1] += 1
    if in_array:
        return ", " if count else ""
    if count % 2:
        return ": "
    return ("," if count else "") + "\n" + "    " * len(levels)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string_text(value: str) -> str:
    """rapidjson's Writer::WriteString: control characters as \\u00XX (upper-case hex),
    everything else, non-ASCII too, as it is."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " else c) for c in value) + '"'


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string_text(value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return str(value)
        if value.bit_length() > 1023:  # rapidjson refuses it (Number too big to be stored in double)
            return str(value)
        return rapidjson_double(float(rapidjson_number(str(value))))  # a double, digit by digit
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        # TF quotes the double rapidjson read from the client's text, which is not kept here: the
        # shortest text of the value (what JSON writers send), read as rapidjson reads it.
        return rapidjson_double(float(rapidjson_number(repr(value))))
    return repr(value)


def tf_shape_text(shape: tuple[int, ...]) -> str:
    """A shape as TF Serving's messages write it: `[2,3]` (`[]` for a scalar)."""
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---------------------------------------------------------------- arrays -> JSON


def encode_predict(outputs: Mapping[str, NDArray], fmt: Format) -> bytes:
    """The JSON answer to a `:predict` request in the client's format."""
    if not outputs:
        raise CodecError("Cannot convert empty tensor map to JSON")
    if fmt is Format.COLUMNAR:
        if len(outputs) == 1:
            name, array = next(iter(outputs.items()))
            return b'{"outputs":' + tensor_json(array, is_bytes_name(name)) + b"}"
        parts = [orjson.dumps(name) + b":" + tensor_json(a, is_bytes_name(name))
                 for name, a in outputs.items()]
        return b'{"outputs":{' + b",".join(parts) + b"}}"
    batch = -1
    for name, array in outputs.items():
        if array.ndim == 0:
            raise CodecError(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise CodecError(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                             f"expecting: {batch}")
        batch = array.shape[0]
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return b'{"predictions":' + tensor_json(array, is_bytes_name(name)) + b"}"
    keys = {name: orjson.dumps(name) + b":" for name in outputs}
    rows = [
        b"{" + b",".join(keys[name] + tensor_json(array[i, ...], is_bytes_name(name))
                         for name, array in outputs.items()) + b"}"
        for i in range(batch)
    ]
    return b'{"predictions":[' + b",".join(rows) + b"]}"


def is_bytes_name(name: str) -> bool:
    """TF's rule: string outputs whose name ends in `_bytes` are written as `{"b64": ...}`."""
    return name.endswith(BYTES_SUFFIX)


def tensor_json(array: NDArray, as_b64: bool = False) -> bytes:
    """One tensor as nested JSON lists (a scalar as a bare value), written as TF does."""
    kind = array.dtype.kind
    if kind in "iub":
        if array.ndim == 0:
            return orjson.dumps(array.item())
        return orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)
    shape = array.shape
    flat = array.ravel().tolist()
    if kind == "f":
        items = _decimal_texts(array.ravel(), double=array.dtype == np.float64)
    elif kind == "c":
        double = array.dtype == np.complex128
        items = [f"[{decimal_text(v.real, double=double)},{decimal_text(v.imag, double=double)}]"
                 for v in flat]
    else:
        items = [orjson.dumps(string_json(v, as_b64)).decode() for v in flat]
    return _nest(items, shape).encode()


def _nest(items: list[str], shape: tuple[int, ...]) -> str:
    for depth in range(len(shape) - 1, -1, -1):
        size = shape[depth]
        groups = math.prod(shape[:depth])
        items = ["[" + ",".join(items[g * size:(g + 1) * size]) + "]" for g in range(groups)]
    return items[0]


def _decimal_texts(flat: NDArray, *, double: bool) -> list[str]:
    """`decimal_text` of every element, formatted in bulk: one `%` for all six-digit texts, a
    vectorised round-trip check, full precision only where it fails."""
    values = flat.astype(np.float64).tolist()
    if not values:
        return []
    texts = ("\0".join(["%.6g"] * len(values)) % tuple(values)).split("\0")
    parsed = np.array(texts, dtype=np.float64)
    exact = flat.astype(np.float64) if double else flat.astype(np.float32)
    back = parsed if double else parsed.astype(np.float32)
    finite = np.isfinite(exact)
    full = "%.17g" if double else "%.9g"
    redo = np.flatnonzero(finite & (back != exact)).tolist()
    if redo:
        again = ("\0".join([full] * len(redo)) % tuple(values[i] for i in redo)).split("\0")
        for index, text in zip(redo, again, strict=True):
            texts[index] = text
    for index in np.flatnonzero(~finite).tolist():
        texts[index] = decimal_text(values[index], double=double)
    return [t if "." in t or "e" in t or "N" in t or "I" in t else t + ".0" for t in texts]


def decimal_text(value: float, *, double: bool) -> str:
    """TF's WriteDecimal: six significant digits when they round-trip, else full precision;
    whole numbers keep a `.0`; NaN, Infinity and -Infinity as literals."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if double:
        if float(text) != value:
            text = f"{value:.17g}"
    elif np.float32(float(text)) != np.float32(value):
        text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


# ---------------------------------------------------------------- classify and regress


def decode_examples(document: Mapping[str, Any]) -> Input:
    """The `Input` of a `:classify` or `:regress` document (`examples`, optional `context`)."""
    request_input = Input()
    has_context = "context" in document
    if has_context:
        _example_from_json(document["context"], request_input.example_list_with_context.context)
    if "examples" not in document:
        # TF names "classify" here for both methods.
        raise CodecError(f"JSON Value: {value_text(document)} When method is classify, key 'examples' "
                         "is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise CodecError(f"JSON Value: {value_text(document)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise CodecError(f"JSON Value: {value_text(document)} 'examples' value is an empty array")
    target = (request_input.example_list_with_context.examples if has_context
              else request_input.example_list.examples)
    for example in examples:
        _example_from_json(example, target.add())
    return request_input


def _example_from_json(value: Any, example: Example) -> None:
    if not isinstance(value, dict):
        raise CodecError(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        feature = Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def _add_feature_value(value: Any, name: str, feature: Feature) -> None:
    def check(kind: str) -> None:
        current = feature.WhichOneof("kind")
        if current is not None and current != kind:
            names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
            raise CodecError(f"Unexpected element type in feature: {name} expecting type: {names[current]}")

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise CodecError(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if isinstance(value, bool):
        check("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict):
        check("bytes_list")
        feature.bytes_list.value.append(decode_b64(value))
    elif isinstance(value, str):
        check("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float) or value >= 2**64 or value < -(2**63):
        # rapidjson reads integers beyond 64 bits as doubles.
        check("float_list")
        feature.float_list.value.append(_as_double(value))  # GetFloat: rounded, +-inf beyond float's range
    else:
        check("int64_list")
        if value >= 2**63:
            raise CodecError(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def classification_json(result: ClassificationResult) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`."""
    if not result.classifications:
        raise CodecError("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        pairs = [f"[{orjson.dumps(c.label).decode()},{decimal_text(c.score, double=False)}]"
                 for c in classifications.classes]
        rows.append("[" + ",".join(pairs) + "]")
    return ('{"results":[' + ",".join(rows) + "]}").encode()


def regression_json(result: RegressionResult) -> bytes:
    """`{"results": [value, ...]}`."""
    if not result.regressions:
        raise CodecError("Cannot convert empty RegressionResults to JSON")
    values = ",".join(decimal_text(r.value, double=False) for r in result.regressions)
    return ('{"results":[' + values + "]}").encode()


# ---------------------------------------------------------------- status and metadata


def status_dict(status: StatusProto) -> dict[str, Any]:
    """A StatusProto as TF's JSON: `error_code` by name, `error_message`."""
    code = int(status.error_code)
    enum = StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    known = enum is not None and code in enum.values_by_number
    return {"error_code": enum.values_by_number[code].name if enum is not None and known else code,
            "error_message": status.error_message}


def model_status_json(response: GetModelStatusResponse) -> bytes:
    """GetModelStatusResponse as TF's `GET /v1/models/{m}` answer."""
    versions = []
    for entry in response.model_version_status:
        item: dict[str, Any] = {"version": str(entry.version),
                                "state": ModelVersionStatus.State.Name(entry.state)}
        if entry.HasField("status"):
            item["status"] = status_dict(entry.status)
        versions.append(item)
    return orjson.dumps({"model_version_status": versions})


def model_metadata_json(response: GetModelMetadataResponse) -> bytes:
    """GetModelMetadataResponse as TF's `GET /v1/models/{m}/metadata` answer."""
    spec = response.model_spec
    model_spec: dict[str, Any] = {"name": spec.name, "signature_name": spec.signature_name}
    if spec.HasField("version"):
        model_spec["version"] = str(spec.version.value)
    elif spec.HasField("version_label"):
        model_spec["version_label"] = spec.version_label
    signature_map = signature_def_map(response)
    signatures = json_format.MessageToDict(signature_map, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
    return orjson.dumps({"model_spec": model_spec, "metadata": {SIGNATURE_DEF: signatures}})


def signature_def_map(response: GetModelMetadataResponse) -> SignatureDefMap:
    """The SignatureDefMap in a metadata answer's `signature_def` Any."""
    if SIGNATURE_DEF not in response.metadata:
        raise CodecError("Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map.")
    packed = response.metadata[SIGNATURE_DEF]
    if packed.type_url.rsplit("/", 1)[-1] != SIGNATURE_DEF_MAP_TYPE_URL.rsplit("/", 1)[-1]:
        raise CodecError(f"Failed to unpack 'Any' object to 'SignatureDefMap' (type {packed.type_url!r}).")
    try:
        return SignatureDefMap.FromString(packed.value)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise CodecError("Failed to unpack 'Any' object to 'SignatureDefMap'.") from None


def signatures_from_metadata(response: GetModelMetadataResponse) -> dict[str, Signature]:
    """Every signature of a metadata answer as a contract (`signature_def.signature_from_def`)."""
    return {name: signature_from_def(name, signature)
            for name, signature in signature_def_map(response).signature_def.items()}
