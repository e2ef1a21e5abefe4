"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) and examples from contracts.

Every schema says exactly which JSON values the gateway's decoders accept (`tensorcodecs.json_codec`
for the native routes, `tensorcodecs.tfserving_json` for TF Serving's) and what its encoders write,
as far as JSON Schema can say it. One table of JSON-Schema facts per dtype (`_ELEMENTS`, keyed by
the dtype table's JSON kinds) gives one element; `_nest` wraps it in one array per dimension.

What JSON Schema cannot say, and the descriptions repeat:

- that every list at one depth has the same length (ragged lists are refused by the decoders;
  only fixed sizes become `minItems`/`maxItems`);
- `1.0` versus `1`: JSON Schema's `integer` takes any number without a fraction, the decoders take
  integer literals only;
- the `NaN`, `Infinity` and `-Infinity` literals requests may use for floats (they are not JSON);
- nesting deeper than `LISTED_RANK` lists for any shape (the decoders take up to 64 dimensions).

TF Serving's request and answer forms (row, columnar) come one by one from `tfserving_request_forms`
/ `tfserving_response_forms` too, for documents that make each a component; no schema has a
`title` (client generators name classes by it, and every model's forms would share one).

Every function is pure and returns new objects (no dict is shared between two places of one
schema, so YAML writers need no aliases); the module-level GENERIC_* schemas are read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorcodecs import DType, TensorSpec
from tensorcodecs.contract import Shape
from tensorcodecs.dtypes import JsonKind
from tensorcodecs.json_codec import B64_PADDED, MAX_RANK
from tensorcodecs.tfserving_json import B64_UNPADDED, BYTES_SUFFIX, INPUTS_KEY, INSTANCES_KEY, SIGNATURE_KEY

Schema = dict[str, Any]

# OpenAPI's registered formats where they apply, the dtype's own name otherwise.
_FORMATS = {"int32": "int32", "int64": "int64", "float32": "float", "float64": "double"}

# base64 as the decoders take it (padded; TF Serving's, the padding optional).
_B64_PADDED = B64_PADDED
_B64_UNPADDED = B64_UNPADDED

_NOTHING_DESCRIPTION = "no JSON value is accepted here"


def _nothing() -> Schema:
    """A schema no value matches (3.0 has no `false` schema, `not: {}` survives the conversion)."""
    return {"not": {}}


# ---------------------------------------------------------------- one element per dtype


def _integer(dtype: DType) -> Schema:
    info = np.iinfo(dtype.numpy)
    return {"type": "integer", "format": _FORMATS.get(dtype.name, dtype.name),
            "minimum": int(info.min), "maximum": int(info.max)}


def _overflow_threshold(dtype: np.dtype[Any]) -> float | None:
    """The smallest double that rounds to infinity in `dtype` (the largest finite value plus half
    an ulp), or None for float64, which no finite double exceeds."""
    finfo = np.finfo(dtype)
    if finfo.bits >= 64:
        return None
    return float(finfo.max) + 2.0 ** (finfo.maxexp - finfo.nmant - 2)


def _number(numpy: np.dtype[Any], name: str, *, bounded: bool, nullable: bool = False) -> Schema:
    schema: Schema = {"type": ["number", "null"] if nullable else "number",
                      "format": _FORMATS.get(name, name)}
    threshold = _overflow_threshold(numpy) if bounded else None
    if threshold is not None:
        # A finite value that would round to infinity is refused (json_codec._checked_float_cast).
        schema["exclusiveMinimum"] = -threshold
        schema["exclusiveMaximum"] = threshold
    return schema


def _b64(pattern: str) -> Schema:
    return {"type": "object", "description": "raw bytes, base64-encoded",
            "properties": {"b64": {"type": "string", "format": "byte", "pattern": pattern}},
            "required": ["b64"], "additionalProperties": False}


def _text_or_b64(pattern: str) -> Schema:
    return {"oneOf": [{"type": "string"}, _b64(pattern)]}


def _pair(part: Schema) -> Schema:
    return {"type": "array", "description": "[real, imaginary]", "items": part, "minItems": 2, "maxItems": 2}


def _part_dtype(dtype: DType) -> np.dtype[Any]:
    """The float dtype of a complex dtype's real and imaginary parts."""
    return np.dtype(np.float32) if dtype.numpy.itemsize == 8 else np.dtype(np.float64)


def _part_name(dtype: DType) -> str:
    return "float32" if _part_dtype(dtype).itemsize == 4 else "float64"


@dataclass(frozen=True, slots=True)
class _Element:
    """The JSON-Schema facts of one JSON kind: a builder per place an element appears."""

    native_in: Callable[[DType], Schema]
    native_out: Callable[[DType], Schema]
    tf_in: Callable[[DType], Schema]
    tf_out: Callable[[DType, bool], Schema]  # (dtype, the output's name ends in `_bytes`)
    example: Callable[[DType], Any]


def _tf_text_out(dtype: DType, as_b64: bool) -> Schema:
    return _b64(_B64_PADDED) if as_b64 else _text_or_b64(_B64_PADDED)


_ELEMENTS: dict[JsonKind, _Element] = {
    JsonKind.INT: _Element(
        native_in=_integer, native_out=_integer, tf_in=_integer,
        tf_out=lambda d, _: _integer(d), example=lambda d: 1),
    # Native requests refuse a finite value beyond the dtype; native answers write NaN and
    # +-Infinity as null; TF Serving takes any double (rounded, +-inf beyond) and writes literals.
    JsonKind.FLOAT: _Element(
        native_in=lambda d: _number(d.numpy, d.name, bounded=True),
        native_out=lambda d: _number(d.numpy, d.name, bounded=True, nullable=True),
        tf_in=lambda d: _number(d.numpy, d.name, bounded=False),
        tf_out=lambda d, _: _number(d.numpy, d.name, bounded=False), example=lambda d: 1.5),
    JsonKind.BOOL: _Element(
        native_in=lambda d: {"type": "boolean"}, native_out=lambda d: {"type": "boolean"},
        tf_in=lambda d: {"type": "boolean"}, tf_out=lambda d, _: {"type": "boolean"},
        example=lambda d: True),
    # Text is taken as its UTF-8 bytes; answers are text unless it is not UTF-8.
    JsonKind.STRING: _Element(
        native_in=lambda d: _text_or_b64(_B64_PADDED), native_out=lambda d: _text_or_b64(_B64_PADDED),
        tf_in=lambda d: _text_or_b64(_B64_UNPADDED), tf_out=_tf_text_out, example=lambda d: "hello"),
    # Native answers write bytes as {"b64"} always; TF Serving only for outputs named *_bytes.
    JsonKind.BYTES: _Element(
        native_in=lambda d: _text_or_b64(_B64_PADDED), native_out=lambda d: _b64(_B64_PADDED),
        tf_in=lambda d: _text_or_b64(_B64_UNPADDED), tf_out=_tf_text_out,
        example=lambda d: {"b64": "aGVsbG8="}),
    # TF Serving's JSON has no complex numbers: only empty lists of them decode.
    JsonKind.COMPLEX: _Element(
        native_in=lambda d: _pair(_number(_part_dtype(d), _part_name(d), bounded=True)),
        native_out=lambda d: _pair(_number(_part_dtype(d), _part_name(d), bounded=True, nullable=True)),
        tf_in=lambda d: _nothing(),
        tf_out=lambda d, _: _pair(_number(_part_dtype(d), _part_name(d), bounded=False)),
        example=lambda d: [1.5, -0.5]),
}

_NOTES: dict[JsonKind, str] = {
    JsonKind.INT: "integer literals only (1.0 is refused)",
    JsonKind.FLOAT: "NaN, Infinity and -Infinity are also accepted as bare literals",
    JsonKind.BOOL: "true or false",
    JsonKind.STRING: 'text, or {"b64": ...} for raw bytes',
    JsonKind.BYTES: 'text (as its UTF-8 bytes) or {"b64": ...}',
    JsonKind.COMPLEX: "complex numbers as [real, imaginary] pairs",
}

_OUT_NOTES: dict[JsonKind, str] = {
    JsonKind.FLOAT: "NaN, Infinity and -Infinity are written as null",
    JsonKind.STRING: 'text, or {"b64": ...} when it is not UTF-8',
    JsonKind.BYTES: 'always {"b64": ...}',
    JsonKind.COMPLEX: "[real, imaginary] pairs; NaN and infinities as null",
}

_TF_IN_NOTES: dict[JsonKind, str] = {
    JsonKind.FLOAT: "any number, rounded to the type (+-Infinity beyond its range); NaN, Infinity and "
                    "-Infinity also as bare literals",
    JsonKind.STRING: 'text, or {"b64": ...} (padding optional)',
    JsonKind.BYTES: 'text, or {"b64": ...} (padding optional)',
    JsonKind.COMPLEX: "TensorFlow Serving's JSON has no complex numbers: only empty lists",
}

_TF_OUT_NOTES: dict[JsonKind, str] = {
    JsonKind.FLOAT: "NaN, Infinity and -Infinity are written as bare literals",
    JsonKind.STRING: 'text, or {"b64": ...} when it is not UTF-8 or the output\'s name ends in _bytes',
    JsonKind.BYTES: 'text, or {"b64": ...} when it is not UTF-8 or the output\'s name ends in _bytes',
    JsonKind.COMPLEX: "[real, imaginary] pairs",
}


# ---------------------------------------------------------------- one value: elements nested per dimension


# Any shape is unrolled to a bounded nesting (3.0 has no `$defs` for a recursive schema), far
# shallower than the decoders' MAX_RANK: validators recurse a dozen Python frames per schema
# level and client generators (openapi-python-client) name a model class per level, so 64 levels
# exhaust the first's recursion limit and the second's file-name length.
LISTED_RANK = 8


def _any_rank(element: Callable[[], Schema]) -> Schema:
    """Any nesting up to `LISTED_RANK` lists. Each level is one schema typed "the element's
    types, or array" (the element's keywords apply to its own types only), which keeps
    validators' recursion shallow; complex pairs (arrays themselves) need an `anyOf` a level."""
    schema = element()
    for _ in range(LISTED_RANK):
        leaf = element()
        types = _types_of(leaf)
        if types is None:
            schema = {"anyOf": [leaf, {"type": "array", "items": schema}]}
        else:
            schema = {**_merged(leaf), "type": [*types, "array"], "items": schema}
    return schema


def _types_of(schema: Schema) -> list[str] | None:
    """The JSON types an element schema allows, when none of them is `array` (else None)."""
    if schema == _nothing():
        return []
    if "oneOf" in schema:
        parts = [_types_of(part) for part in schema["oneOf"]]
        if any(p is None for p in parts):
            return None
        return [t for p in parts if p is not None for t in p]
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    return None if not types or "array" in types else types


def _merged(schema: Schema) -> Schema:
    """An element's keywords without `type`, alternatives of different types flattened."""
    if schema == _nothing():
        return {}
    merged: Schema = {}
    for part in schema.get("oneOf", [schema]):
        merged.update({k: v for k, v in part.items() if k not in ("type", "description")})
    return merged


def _nest(element: Callable[[], Schema], shape: Shape | None, *, nonempty_outer: bool = False) -> Schema:
    """`element` in one array per dimension. `nonempty_outer`: TF Serving's decoder reads the
    rank from the first element at each depth, so an empty list is the innermost dimension."""
    if shape is None:
        return _any_rank(element)
    schema = element()
    for depth in range(len(shape) - 1, -1, -1):
        size = shape[depth]
        inner = depth < len(shape) - 1
        if nonempty_outer and inner and size == 0:
            return _nothing()
        level: Schema = {"type": "array", "items": schema}
        low = size if size >= 0 else (1 if nonempty_outer and inner else None)
        if low is not None and low > 0:
            level["minItems"] = low
        if size >= 0:
            level["maxItems"] = size
        schema = level
    return schema


def _value(element: Callable[[], Schema], spec: TensorSpec, shape: Shape | None, note: str | None, *,
           what: str = "", rank: int = MAX_RANK, nonempty_outer: bool = False) -> Schema:
    """`element` nested for `shape` (`spec`'s, or its rows'), described: what it is (`what`), the
    dtype and shape as contracts write them, what the schema cannot say, and `note`."""
    schema = _nest(element, shape, nonempty_outer=nonempty_outer)
    text = f"{what}: " if what else ""
    text += f"{spec.dtype.name}, shape {spec.shape_text()}"
    if shape is None:
        text += (f" (this schema lists up to {LISTED_RANK} nested lists, the gateway takes up "
                 f"to {rank}; every list at one depth must have the same length, which it cannot say)")
    elif len(shape) > 1 and -1 in shape[1:]:
        text += " (every list at one depth must have the same length)"
    if note:
        text += f"; {note}"
    return {**schema, "description": text}


def value_schema(spec: TensorSpec) -> Schema:
    """One input value in the native JSON form (`json_codec.decode_value`)."""
    kind = spec.dtype.json_kind
    return _value(lambda: _ELEMENTS[kind].native_in(spec.dtype), spec, spec.shape, _NOTES.get(kind))


def output_value_schema(spec: TensorSpec) -> Schema:
    """One output value as `json_codec.encode_outputs` writes it."""
    kind = spec.dtype.json_kind
    return _value(lambda: _ELEMENTS[kind].native_out(spec.dtype), spec, spec.shape, _OUT_NOTES.get(kind))


def native_request_schema(inputs: Mapping[str, TensorSpec]) -> Schema:
    """The native request body: every input, nothing else (`json_codec.decode_inputs`)."""
    return {"type": "object", "properties": {name: value_schema(spec) for name, spec in inputs.items()},
            "required": list(inputs), "additionalProperties": False}


def native_response_schema(outputs: Mapping[str, TensorSpec]) -> Schema:
    """The native answer: every output of the contract, nothing else."""
    return {"type": "object", "properties": {name: output_value_schema(spec) for name, spec in outputs.items()},
            "required": list(outputs), "additionalProperties": False}


# ---------------------------------------------------------------- examples


def _example_value(spec: TensorSpec) -> Any:
    value = _ELEMENTS[spec.dtype.json_kind].example(spec.dtype)
    if spec.shape is None:
        return [value]
    for size in reversed(spec.shape):
        value = [_copy(value) for _ in range(1 if size == -1 else size)]
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def native_example(inputs: Mapping[str, TensorSpec]) -> dict[str, Any]:
    """A request body the gateway accepts (size 1 for each -1 dimension, one level for any shape)."""
    return {name: _example_value(spec) for name, spec in inputs.items()}


# ---------------------------------------------------------------- TF Serving's REST API


def _tf_value(spec: TensorSpec, shape: Shape | None, what: str, *, rank: int = MAX_RANK) -> Schema:
    """An input value as `tfserving_json` reads it (`shape`: the whole tensor's or a row's)."""
    kind = spec.dtype.json_kind
    return _value(lambda: _ELEMENTS[kind].tf_in(spec.dtype), spec, shape, _TF_IN_NOTES.get(kind), what=what,
                  rank=rank, nonempty_outer=True)


def _batch(specs: Mapping[str, TensorSpec]) -> tuple[int, int | None] | None:
    """minItems / maxItems of `instances` (the shared first dimension), None when no row fits."""
    fixed = set()
    for spec in specs.values():
        if spec.shape is None:
            continue
        if not spec.shape:
            return None  # a scalar has no batch dimension to stack rows in
        if spec.shape[0] >= 0:
            fixed.add(spec.shape[0])
    if len(fixed) > 1 or fixed == {0}:
        return None  # rows of different counts; `instances` may not be empty
    size = next(iter(fixed), None)
    return (size, size) if size is not None else (1, None)


def _row_shape(spec: TensorSpec) -> Shape | None:
    return None if spec.shape is None else spec.shape[1:]


def _instances(items: Schema, batch: tuple[int, int | None]) -> Schema:
    schema: Schema = {"type": "array", "items": items, "minItems": batch[0]}
    if batch[1] is not None:
        schema["maxItems"] = batch[1]
    return schema


def _row_request(inputs: Mapping[str, TensorSpec]) -> Schema | None:
    batch = _batch(inputs)
    if batch is None:
        return None

    def row(spec: TensorSpec) -> Schema:
        return _tf_value(spec, _row_shape(spec), "one row (the first dimension dropped)", rank=MAX_RANK - 1)

    named = _instances({"type": "object", "properties": {n: row(s) for n, s in inputs.items()},
                        "required": list(inputs), "additionalProperties": False}, batch)
    forms = [named]
    if len(inputs) == 1:
        forms.append(_instances(row(next(iter(inputs.values()))), batch))  # bare values, one per row
    instances: Schema = forms[0] if len(forms) == 1 else {"anyOf": forms}
    return {"type": "object", "description": "The row form: `instances`, one item per row", "required": [INSTANCES_KEY],
            "properties": {SIGNATURE_KEY: _signature_name(), INSTANCES_KEY: instances},
            "not": {"required": [INPUTS_KEY]}}


def _columnar_request(inputs: Mapping[str, TensorSpec]) -> Schema:
    def column(spec: TensorSpec) -> Schema:
        return _tf_value(spec, spec.shape, "the whole tensor")

    # Names the signature does not have are ignored (tfserving_json._decode_columns).
    named: Schema = {"type": "object", "properties": {n: column(s) for n, s in inputs.items()},
                     "required": list(inputs)}
    value = named if len(inputs) != 1 else {"anyOf": [named, column(next(iter(inputs.values())))]}
    return {"type": "object", "description": "The columnar form: `inputs`, whole tensors", "required": [INPUTS_KEY],
            "properties": {SIGNATURE_KEY: _signature_name(), INPUTS_KEY: value}, "not": {"required": [INSTANCES_KEY]}}


def _signature_name() -> Schema:
    return {"type": "string", "description": "the signature to run (the model's default when absent)"}


def tfserving_request_forms(inputs: Mapping[str, TensorSpec]) -> dict[str, Schema]:
    """The forms of a `:predict` body, `{"row": ..., "columnar": ...}` (a form no body fits is left
    out: a scalar input has no rows), for documents that make each a component (client generators
    take unions of `$ref`s better than of inline objects; a union of one form they refuse)."""
    if not inputs:
        return {}
    row = _row_request(inputs)
    return {**({"row": row} if row is not None else {}), "columnar": _columnar_request(inputs)}


def tfserving_request_schema(inputs: Mapping[str, TensorSpec]) -> Schema:
    """A `:predict` body, as `tfserving_json.decode_predict` reads it: the row form (`instances`,
    one object per row, or bare values for a single input) or the columnar form (`inputs`, an
    object or, for a single input, the bare value), with an optional `signature_name`."""
    if not inputs:
        return {**_nothing(), "description": "the signature has no inputs: " + _NOTHING_DESCRIPTION}
    # A body with both `instances` and `inputs` is refused (each form's `not`).
    return _one_of(list(tfserving_request_forms(inputs).values()),
                   "TensorFlow Serving's predict request, in the row or the columnar form")


def _one_of(forms: list[Schema], description: str) -> Schema:
    """One of `forms` (the form itself when it is the only one: generators refuse unions of one)."""
    if len(forms) == 1:
        return {**forms[0], "description": f"{description}: {forms[0]['description']}"}
    return {"oneOf": forms, "description": description}


def _tf_out(spec: TensorSpec, shape: Shape | None, what: str) -> Schema:
    """An output value as `tfserving_json.encode_predict` writes it."""
    kind = spec.dtype.json_kind
    as_b64 = spec.name.endswith(BYTES_SUFFIX)
    return _value(lambda: _ELEMENTS[kind].tf_out(spec.dtype, as_b64), spec, shape, _TF_OUT_NOTES.get(kind),
                  what=what)


def tfserving_response_forms(outputs: Mapping[str, TensorSpec]) -> dict[str, Schema]:
    """The forms of a `:predict` answer (`tfserving_json.encode_predict`), `{"row": ...,
    "columnar": ...}`: `predictions` for row requests (the single output's tensor, or one object
    per row; left out when a scalar output leaves no rows), `outputs` for columnar ones (the
    single output's tensor, or an object of them)."""
    if not outputs:
        return {}
    single = next(iter(outputs.values())) if len(outputs) == 1 else None
    if single is not None:
        columns: Schema = _tf_out(single, single.shape, "the whole tensor")
    else:
        columns = {"type": "object", "properties": {n: _tf_out(s, s.shape, "the whole tensor")
                                                    for n, s in outputs.items()},
                   "required": list(outputs), "additionalProperties": False}
    forms: dict[str, Schema] = {}
    batch = _answer_batch(outputs)
    if batch is not None:
        if single is not None:
            predictions = _tf_out(single, single.shape, "the whole tensor, one item per row")
        else:
            predictions = {"type": "array", "items": {
                "type": "object", "properties": {n: _tf_out(s, _row_shape(s), "one row") for n, s in outputs.items()},
                "required": list(outputs), "additionalProperties": False}}
            if batch[0]:
                predictions["minItems"] = batch[0]
            if batch[1] is not None:
                predictions["maxItems"] = batch[1]
        forms["row"] = {"type": "object", "description": "The answer to a row request: `predictions`",
                        "required": ["predictions"], "properties": {"predictions": predictions},
                        "additionalProperties": False}
    forms["columnar"] = {"type": "object", "description": "The answer to a columnar request: `outputs`",
                         "required": ["outputs"], "properties": {"outputs": columns}, "additionalProperties": False}
    return forms


def tfserving_response_schema(outputs: Mapping[str, TensorSpec]) -> Schema:
    """A `:predict` answer: one of `tfserving_response_forms`."""
    if not outputs:
        return {"type": "object", "description": "the signature has no outputs"}
    return _one_of(list(tfserving_response_forms(outputs).values()),
                   "TensorFlow Serving's predict answer: predictions for a row request, outputs for a columnar one")


def _answer_batch(outputs: Mapping[str, TensorSpec]) -> tuple[int, int | None] | None:
    """minItems / maxItems of a row answer's `predictions` list; None when no row answer exists
    (a scalar output has no batch dimension, so TF Serving refuses to write rows)."""
    fixed = set()
    for spec in outputs.values():
        if spec.shape == ():
            return None
        if spec.shape is not None and spec.shape[0] >= 0:
            fixed.add(spec.shape[0])
    if len(fixed) > 1:
        return None
    size = next(iter(fixed), None)
    return (size, size) if size is not None else (0, None)


def _tf_example_value(spec: TensorSpec, shape: Shape | None) -> tuple[bool, Any]:
    """(whether one exists, a value `tfserving_json` accepts for `shape`)."""
    if spec.dtype.json_kind is JsonKind.COMPLEX:
        # Only empty lists decode: the innermost dimension empty, one item in each outer one.
        if shape is None:
            return True, []
        if not shape or shape[-1] not in (-1, 0) or any(d == 0 for d in shape[:-1]):
            return False, None
        value: Any = []
        for size in reversed(shape[:-1]):
            value = [_copy(value) for _ in range(1 if size == -1 else size)]
        return True, value
    if shape is not None and 0 in shape[:-1]:
        return False, None  # an empty outer list ends the rank early
    return True, _example_value(TensorSpec(spec.name, spec.dtype, shape))


def tfserving_examples(inputs: Mapping[str, TensorSpec]) -> dict[str, dict[str, Any]]:
    """`{"row": {"instances": ...}, "columnar": {"inputs": ...}}`, bodies the gateway accepts; a
    form no body fits (a scalar input has no rows; complex inputs only take empty lists) is left out."""
    examples: dict[str, dict[str, Any]] = {}
    if not inputs:
        return examples
    batch = _batch(inputs)
    rows = {name: _tf_example_value(spec, _row_shape(spec)) for name, spec in inputs.items()}
    if batch is not None and all(ok for ok, _ in rows.values()):
        count = batch[0]
        if len(inputs) == 1:
            value = next(iter(rows.values()))[1]
            examples["row"] = {INSTANCES_KEY: [_copy(value) for _ in range(count)]}
        else:
            examples["row"] = {INSTANCES_KEY: [{n: _copy(v) for n, (_, v) in rows.items()} for _ in range(count)]}
    columns = {name: _tf_example_value(spec, spec.shape) for name, spec in inputs.items()}
    if all(ok for ok, _ in columns.values()):
        examples["columnar"] = {INPUTS_KEY: {n: v for n, (_, v) in columns.items()}}
    return examples


# ---------------------------------------------------------------- contracts not known yet

_UNKNOWN = ("The model's contract is not known yet: it is discovered from the backend when the model "
            "is first called. ")

GENERIC_REQUEST: Schema = {
    "type": "object", "additionalProperties": {},
    "description": _UNKNOWN + "The body has one member per input, each value in the native JSON form "
                              "(nested lists of numbers, booleans, text or {\"b64\": ...}).",
}
GENERIC_RESPONSE: Schema = {
    "type": "object", "additionalProperties": {},
    "description": _UNKNOWN + "The answer has one member per output.",
}
GENERIC_TFSERVING_REQUEST: Schema = {
    "description": _UNKNOWN + "TensorFlow Serving's predict request, in the row or the columnar form.",
    "oneOf": [
        {"type": "object", "description": "The row form: `instances`, one item per row", "required": [INSTANCES_KEY],
         "properties": {SIGNATURE_KEY: {"type": "string"},
                        INSTANCES_KEY: {"type": "array", "items": {}, "minItems": 1}},
         "not": {"required": [INPUTS_KEY]}},
        {"type": "object", "description": "The columnar form: `inputs`, whole tensors", "required": [INPUTS_KEY],
         "properties": {SIGNATURE_KEY: {"type": "string"}, INPUTS_KEY: {}}, "not": {"required": [INSTANCES_KEY]}},
    ],
}
GENERIC_TFSERVING_RESPONSE: Schema = {
    "description": _UNKNOWN + "TensorFlow Serving's predict answer: predictions for a row request, "
                              "outputs for a columnar one.",
    "oneOf": [
        {"type": "object", "description": "The answer to a row request: `predictions`", "required": ["predictions"],
         "properties": {"predictions": {}}, "additionalProperties": False},
        {"type": "object", "description": "The answer to a columnar request: `outputs`", "required": ["outputs"],
         "properties": {"outputs": {}}, "additionalProperties": False},
    ],
}
