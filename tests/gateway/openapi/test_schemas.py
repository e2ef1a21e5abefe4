"""The schemas from contracts against the codecs they describe: every example is valid for the
schema and decodes; what the decoders refuse the schemas refuse; what the encoders write the
answer schemas accept — for every dtype and shape, the native and TF Serving's forms."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from gateway.openapi.schemas import (
    GENERIC_REQUEST,
    GENERIC_RESPONSE,
    GENERIC_TFSERVING_REQUEST,
    GENERIC_TFSERVING_RESPONSE,
    Schema,
    native_example,
    native_request_schema,
    native_response_schema,
    output_value_schema,
    tfserving_examples,
    tfserving_request_schema,
    tfserving_response_schema,
    value_schema,
)
from tensorcodecs import CodecError, DType, TensorSpec, lookup_dtype
from tensorcodecs.contract import Shape
from tensorcodecs.dtypes import TABLE, JsonKind
from tensorcodecs.json_codec import decode_inputs, encode_outputs, loads
from tensorcodecs.tfserving_json import Format, decode_predict, encode_predict

NDArray = np.ndarray[Any, Any]

SHAPES: list[Shape | None] = [(), (3,), (-1,), (-1, 2), (2, -1, 3), None]
CASES = [(row, shape) for row in TABLE for shape in SHAPES]
CASE_IDS = [f"{row.name}-{'any' if shape is None else list(shape)}" for row, shape in CASES]
# One property test draws its dtype and shape too: hypothesis's cost is per test, not per example.
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _specs(row: DType, shape: Shape | None, names: tuple[str, ...] = ("x",)) -> dict[str, TensorSpec]:
    return {name: TensorSpec(name, row, shape) for name in names}


@functools.cache
def _validator(kind: str, row: DType, shape: Shape | None, names: tuple[str, ...] = ("x",)) -> Draft202012Validator:
    build: dict[str, Callable[[Mapping[str, TensorSpec]], Schema]] = {
        "native_in": native_request_schema, "native_out": native_response_schema,
        "tf_in": tfserving_request_schema, "tf_out": tfserving_response_schema}
    schema = build[kind](_specs(row, shape, names))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _native_decodes(body: Any, specs: Mapping[str, TensorSpec]) -> bool:
    try:
        arrays = decode_inputs(body, specs)
    except CodecError:
        return False
    for name, spec in specs.items():
        assert arrays[name].dtype == spec.dtype.numpy
        assert spec.accepts_shape(arrays[name].shape)
    return True


def _tf_decodes(body: Any, specs: Mapping[str, TensorSpec]) -> bool:
    try:
        decoded = decode_predict(body, specs)
    except CodecError:
        return False
    for name, spec in specs.items():
        assert decoded.inputs[name].dtype == spec.dtype.numpy
        assert spec.accepts_shape(decoded.inputs[name].shape)
    return True


# ---------------------------------------------------------------- (a) examples


@pytest.mark.parametrize(("row", "shape"), CASES, ids=CASE_IDS)
def test_the_native_example_is_valid_and_decodes(row: DType, shape: Shape | None) -> None:
    specs = _specs(row, shape, ("x", "y"))
    example = native_example(specs)
    _validator("native_in", row, shape, ("x", "y")).validate(example)
    assert _native_decodes(json.loads(json.dumps(example)), specs)


@pytest.mark.parametrize(("row", "shape"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("names", [("x",), ("x", "y")])
def test_the_tfserving_examples_are_valid_and_decode(row: DType, shape: Shape | None, names: tuple[str, ...]) -> None:
    specs = _specs(row, shape, names)
    examples = tfserving_examples(specs)
    validator = _validator("tf_in", row, shape, names)
    for body in examples.values():
        validator.validate(body)
        assert _tf_decodes(body, specs)
    # A form is left out only when no body of that form decodes.
    if shape != () and row.json_kind is not JsonKind.COMPLEX:
        assert set(examples) == {"row", "columnar"}
    if shape == ():
        assert "row" not in examples
        assert not validator.is_valid({"instances": [native_example(specs)[names[0]]]})


def test_increment_apps_example_and_schema() -> None:
    specs = {"number": TensorSpec("number", lookup_dtype("int32"), (-1,))}
    assert native_example(specs) == {"number": [1]}
    assert value_schema(specs["number"]) == {
        "type": "array", "items": {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1},
        "description": "int32, shape [-1]; integer literals only (1.0 is refused)"}
    assert tfserving_examples(specs) == {"row": {"instances": [1]}, "columnar": {"inputs": {"number": [1]}}}


# ---------------------------------------------------------------- (b) refusals


_BAD_ELEMENTS: dict[JsonKind, list[Any]] = {
    JsonKind.INT: ["1", 1.5, True, None, {}],
    JsonKind.FLOAT: ["1.5", "NaN", "Infinity", True, None, {}],
    JsonKind.BOOL: [1, 0, "true", None, 1.0],
    JsonKind.STRING: [1, None, True, {"b64": "!!!!"}, {"b64": "QQ"}, {"b64": "QQ==", "x": "y"}, {}, {"b64": 1}],
    JsonKind.BYTES: [1, None, 2.5, {"b64": "Q"}, {"text": "a"}],
    JsonKind.COMPLEX: [1, [1], [1, 2, 3], ["a", 1], [True, 1], None],
}


def _out_of_range(row: DType) -> list[Any]:
    if row.json_kind is JsonKind.INT:
        info = np.iinfo(row.numpy)
        return [int(info.max) + 1, int(info.min) - 1]
    if row.json_kind is JsonKind.FLOAT and row.numpy.itemsize < 8:
        return [float(np.finfo(row.numpy).max) * 1.001, -float(np.finfo(row.numpy).max) * 1.001]
    return []


def _with_leaf(example: Any, shape: Shape | None, leaf: Any) -> Any:
    """The example with its first element replaced by `leaf`."""
    depth = 1 if shape is None else len(shape)
    if depth == 0:
        return leaf
    value = json.loads(json.dumps(example))
    holder = value
    for _ in range(depth - 1):
        holder = holder[0]
    holder[0] = leaf
    return value


@pytest.mark.parametrize(("row", "shape"), CASES, ids=CASE_IDS)
def test_native_values_of_the_wrong_type_or_range_are_refused_by_both(row: DType, shape: Shape | None) -> None:
    specs = _specs(row, shape)
    validator = _validator("native_in", row, shape)
    example = native_example(specs)["x"]
    for leaf in [*_BAD_ELEMENTS[row.json_kind], *_out_of_range(row)]:
        body = {"x": _with_leaf(example, shape, leaf)}
        assert not _native_decodes(body, specs), body
        assert not validator.is_valid(body), body


def _wrong_shapes(example: Any, shape: Shape | None) -> list[Any]:
    if shape is None:
        return []
    wrong = [[example]]  # one dimension too many
    if shape:
        wrong.append(example[0])  # one too few
    for depth, size in enumerate(shape):
        if size >= 0:  # a fixed size one longer and one shorter
            for change in (1, -1):
                value = json.loads(json.dumps(example))
                holder = value
                for _ in range(depth):
                    holder = holder[0]
                if change > 0:
                    holder.append(json.loads(json.dumps(holder[0])))
                else:
                    holder.pop()
                wrong.append(value)
    return wrong


@pytest.mark.parametrize(("row", "shape"), CASES, ids=CASE_IDS)
def test_native_values_of_the_wrong_shape_are_refused_by_both(row: DType, shape: Shape | None) -> None:
    specs = _specs(row, shape)
    validator = _validator("native_in", row, shape)
    for value in _wrong_shapes(native_example(specs)["x"], shape):
        body = {"x": value}
        assert not _native_decodes(body, specs), body
        assert not validator.is_valid(body), body


@pytest.mark.parametrize("body", [[], "x", None, {}, {"x": [1], "y": [1]}, {"y": [1]}])
def test_native_bodies_missing_or_adding_inputs_are_refused_by_both(body: Any) -> None:
    row = lookup_dtype("int32")
    assert not _native_decodes(body, _specs(row, (-1,)))
    assert not _validator("native_in", row, (-1,)).is_valid(body)


def test_empty_dimensions_follow_the_decoder() -> None:
    row = lookup_dtype("float32")
    cases: list[tuple[Shape, Any, bool]] = [
        ((-1, 3), [], True), ((2, -1, 3), [[], []], True), ((-1, 2), [[]], False),
        ((0, 3), [], True), ((3,), [], False), ((), [], False)]
    for shape, value, accepted in cases:
        specs = _specs(row, shape)
        assert _native_decodes({"x": value}, specs) is accepted
        assert _validator("native_in", row, shape).is_valid({"x": value}) is accepted
        # TF Serving's decoder takes the rank from the first element: an empty outer list ends it.
        tf_accepted = accepted and (not shape or value != [] or len(shape) == 1) and value != [[], []]
        assert _tf_decodes({"inputs": value}, specs) is tf_accepted, (shape, value)
        assert _validator("tf_in", row, shape).is_valid({"inputs": value}) is tf_accepted, (shape, value)


@pytest.mark.parametrize("name", ["float16", "float32", "complex64"])
def test_float_bounds_are_where_values_start_rounding_to_infinity(name: str) -> None:
    row = lookup_dtype(name)
    part = np.float32 if name == "complex64" else row.numpy
    largest = float(np.finfo(part).max)
    threshold = largest + 2.0 ** (np.finfo(part).maxexp - np.finfo(part).nmant - 2)
    specs = _specs(row, (-1,))
    validator = _validator("native_in", row, (-1,))
    for value, accepted in [(largest, True), (float(np.nextafter(threshold, 0)), True), (threshold, False),
                            (threshold * 2, False)]:
        for sign in (1, -1):
            element = sign * value if name != "complex64" else [sign * value, 0]
            body = {"x": [element]}
            assert _native_decodes(body, specs) is accepted, body
            assert validator.is_valid(body) is accepted, body


# ---------------------------------------------------------------- exactness on random JSON

_LEAVES = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(-300, 300),
    st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e5, 1e5), st.booleans(), st.none(),
    st.text(max_size=4),
    # The base64 alphabet and "=": no newline, which Python's `$` matches before (ECMA's does not).
    st.builds(lambda t: {"b64": t}, st.text("AQIDBAUGBw+/=ab-_", max_size=9)),
    st.builds(lambda a, b: [a, b], st.floats(-1e3, 1e3), st.integers(-5, 5)),
)


def _json_values(depth: int) -> st.SearchStrategy[Any]:
    return st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3), max_leaves=8) if depth else _LEAVES


def _ragged(value: Any) -> bool:
    """Whether lists at one depth differ in length or leaves sit at different depths."""
    level = [value]
    while level:
        kinds = {len(v) if isinstance(v, list) else None for v in level}
        if len(kinds) > 1:
            return True
        if kinds == {None}:
            return False
        level = [child for v in level for child in v]
    return False


def _has_integral_float(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_integral_float(v) for v in value)
    return isinstance(value, float) and value.is_integer()


def _explained(row: DType, value: Any) -> bool:
    """What a schema accepts and a decoder refuses because JSON Schema cannot say it."""
    return _ragged(value) or (row.json_kind is JsonKind.INT and _has_integral_float(value))


@FAST
@given(case=st.sampled_from(CASES), data=st.data())
def test_the_native_schema_accepts_exactly_what_the_decoder_does(case: tuple[DType, Shape | None],
                                                                 data: st.DataObject) -> None:
    row, shape = case
    specs = _specs(row, shape)
    example = native_example(specs)["x"]
    value = data.draw(st.one_of(_json_values(3), _mutations(example, shape)))
    body = {"x": loads(json.dumps(value))}  # as a request body parses
    decodes, valid = _native_decodes(body, specs), _validator("native_in", row, shape).is_valid(body)
    assert valid or not decodes, body
    assert decodes or not valid or _explained(row, body["x"]), body


def _mutations(example: Any, shape: Shape | None) -> st.SearchStrategy[Any]:
    """The example with one element replaced (values close to valid ones)."""
    return _LEAVES.map(lambda leaf: _with_leaf(example, shape, leaf))


@FAST
@given(case=st.sampled_from(CASES), data=st.data())
def test_the_tfserving_schema_accepts_exactly_what_the_decoder_does(case: tuple[DType, Shape | None],
                                                                    data: st.DataObject) -> None:
    row, shape = case
    specs = _specs(row, shape)
    column = native_example(specs)["x"]
    values = st.one_of(_json_values(3), _mutations(column, shape))
    body = data.draw(st.one_of(
        st.builds(lambda v: {"inputs": v}, values),
        st.builds(lambda v: {"inputs": {"x": v}}, values),
        st.builds(lambda vs: {"instances": vs}, st.lists(values, max_size=3)),
        st.builds(lambda vs: {"instances": [{"x": v} for v in vs]}, st.lists(values, max_size=3)),
        st.builds(lambda v: {"inputs": v, "instances": [v]}, values),
    ))
    body = loads(json.dumps(body))
    decodes, valid = _tf_decodes(body, specs), _validator("tf_in", row, shape).is_valid(body)
    assert valid or not decodes, body
    rows = body.get("instances")
    stacked = rows if not rows or not isinstance(rows[0], dict) or "b64" in rows[0] else [r.get("x") for r in rows]
    value = body.get("inputs", stacked)
    if isinstance(value, dict) and "x" in value:
        value = value["x"]
    assert decodes or not valid or _explained(row, value), body


# ---------------------------------------------------------------- (c) answers


_FLOAT_ELEMENTS = {"float16": st.floats(width=16), "float32": st.floats(width=32)}


@st.composite
def _arrays(draw: st.DrawFn, row: DType, shape: Shape | None) -> NDArray:
    if shape is None:
        concrete = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    else:
        concrete = tuple(draw(st.integers(0, 3)) if d == -1 else d for d in shape)
    if row.is_numeric:
        if row.json_kind is JsonKind.COMPLEX:
            return draw(hnp.arrays(row.numpy, concrete, elements=st.complex_numbers(
                width=64 if row.numpy.itemsize == 8 else 128, allow_nan=True, allow_infinity=True)))
        return draw(hnp.arrays(row.numpy, concrete, elements=_FLOAT_ELEMENTS.get(row.name)))
    size = math.prod(concrete)
    leaf = st.one_of(st.binary(max_size=5), st.text(max_size=4), st.text(max_size=4).map(str.encode))
    array = np.empty(size, dtype=object)
    array[:] = draw(st.lists(leaf, min_size=size, max_size=size))
    return array.reshape(concrete)


@FAST
@given(case=st.sampled_from(CASES), data=st.data())
def test_native_answers_match_the_output_schema(case: tuple[DType, Shape | None], data: st.DataObject) -> None:
    row, shape = case
    specs = _specs(row, shape, ("x", "y"))
    arrays = {name: data.draw(_arrays(row, shape)) for name in specs}
    answer = json.loads(encode_outputs(arrays, specs))
    _validator("native_out", row, shape, ("x", "y")).validate(answer)


@FAST
@given(case=st.sampled_from(CASES), names=st.sampled_from([("x",), ("x", "y_bytes")]), data=st.data())
def test_tfserving_answers_match_the_output_schema(case: tuple[DType, Shape | None], names: tuple[str, ...],
                                                   data: st.DataObject) -> None:
    row, shape = case
    batch = data.draw(st.integers(0, 3))
    arrays = {}
    for name in names:
        array = data.draw(_arrays(row, shape))
        if shape is not None and shape and shape[0] == -1 and array.ndim:  # one batch size for the rows
            array = np.resize(array, (batch, *array.shape[1:])) if array.size else np.zeros(
                (batch, *array.shape[1:]), dtype=array.dtype)
        arrays[name] = array
    validator = _validator("tf_out", row, shape, names)
    validator.validate(loads(encode_predict(arrays, Format.COLUMNAR)))
    try:
        rows = encode_predict(arrays, Format.ROW)
    except CodecError:  # scalars, or batches that differ: TF Serving refuses to write rows
        return
    validator.validate(loads(rows))


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_non_finite_native_answers_are_null(row: DType) -> None:
    if row.json_kind not in (JsonKind.FLOAT, JsonKind.COMPLEX):
        return
    spec = TensorSpec("x", row, (-1,))
    answer = json.loads(encode_outputs({"x": np.array([np.nan, np.inf, -np.inf, 1], dtype=row.numpy)}, {"x": spec}))
    Draft202012Validator(output_value_schema(spec)).validate(answer["x"])
    assert not Draft202012Validator(value_schema(spec)).is_valid(answer["x"])  # null is no request value


# ---------------------------------------------------------------- contracts not known yet


def test_generic_schemas_take_any_contract_and_say_so() -> None:
    for schema in (GENERIC_REQUEST, GENERIC_RESPONSE, GENERIC_TFSERVING_REQUEST, GENERIC_TFSERVING_RESPONSE):
        Draft202012Validator.check_schema(schema)
        assert "not known yet" in schema["description"]
    assert Draft202012Validator(GENERIC_REQUEST).is_valid({"a": [[1.5]], "b": "t"})
    request = Draft202012Validator(GENERIC_TFSERVING_REQUEST)
    assert request.is_valid({"instances": [1]})
    assert request.is_valid({"inputs": {"a": 1}, "signature_name": "s"})
    assert not request.is_valid({"instances": [1], "inputs": [1]})
    assert not request.is_valid({"instances": []})
    response = Draft202012Validator(GENERIC_TFSERVING_RESPONSE)
    assert response.is_valid({"predictions": [1]})
    assert response.is_valid({"outputs": {"a": 1}})
    assert not response.is_valid({"error": "x"})


@pytest.mark.parametrize(("row", "shape"), CASES, ids=CASE_IDS)
def test_schemas_are_strict_json(row: DType, shape: Shape | None) -> None:
    """orjson writes them (no NaN or infinity, integers within 64 bits) and reads them back equal."""
    specs = _specs(row, shape, ("x", "y"))
    for schema in (native_request_schema(specs), native_response_schema(specs), tfserving_request_schema(specs),
                   tfserving_response_schema(specs), native_example(specs), tfserving_examples(specs)):
        assert orjson.loads(orjson.dumps(schema)) == schema


def test_schemas_share_no_objects() -> None:
    """YAML writers alias shared objects (`&id001`): every place of a schema is its own dict."""
    schema = tfserving_request_schema(_specs(lookup_dtype("string"), None, ("x", "y")))
    seen: set[int] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict | list):
            assert id(node) not in seen
            seen.add(id(node))
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(schema)
