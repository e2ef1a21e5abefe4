"""TF Serving's REST JSON semantics (json_tensor.cc), as pure functions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protos.services import SIGNATURE_DEF_MAP_TYPE_URL
from protos.tensorflow_serving.classification_pb2 import ClassificationResult
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataResponse, SignatureDefMap
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusResponse, ModelVersionStatus
from protos.tensorflow_serving.regression_pb2 import RegressionResult
from tensorcodecs import CodecError, Signature, TensorSpec, lookup_dtype
from tensorcodecs.json_codec import loads, may_hold_bools
from tensorcodecs.rapidjson_dtoa import _CACHED_POWERS, rapidjson_number
from tensorcodecs.signature_def import signature_to_def
from tensorcodecs.tfserving_json import (
    Format,
    _exact_tensor,
    classification_json,
    decimal_text,
    decode_examples,
    decode_predict,
    encode_predict,
    model_metadata_json,
    model_status_json,
    parse_document,
    regression_json,
    signature_name,
    signatures_from_metadata,
    tensor_from_json,
    tensor_json,
    value_text,
)


def spec(name: str, dtype: str, shape: tuple[int, ...] | None = None) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


ONE = {"x": spec("x", "float32")}
TWO = {"a": spec("a", "int32"), "b": spec("b", "string")}


def decode(body: str, specs: dict[str, TensorSpec] = ONE) -> tuple[dict[str, np.ndarray], Format]:
    result = decode_predict(parse_document(body.encode()), specs)
    return result.inputs, result.format


def error(body: str, specs: dict[str, TensorSpec] = ONE) -> str:
    with pytest.raises(CodecError) as caught:
        decode(body, specs)
    return caught.value.message


def test_row_format_single_input_batches_instances() -> None:
    inputs, fmt = decode('{"instances": [[1, 2], [3.5, 4]]}')
    assert fmt is Format.ROW
    assert inputs["x"].dtype == np.float32
    assert inputs["x"].tolist() == [[1, 2], [3.5, 4]]


def test_row_format_named_inputs_and_b64() -> None:
    inputs, _ = decode('{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": {"b64": "aGk="}}]}', TWO)
    assert inputs["a"].tolist() == [1, 2]
    assert inputs["b"].tolist() == [b"x", b"hi"]


def test_row_of_b64_objects_is_a_plain_list() -> None:
    inputs, _ = decode('{"instances": [{"b64": "aGk"}, "yo"]}', {"s": spec("s", "string")})
    assert inputs["s"].tolist() == [b"hi", b"yo"]


def test_columnar_format_single_and_named() -> None:
    inputs, fmt = decode('{"inputs": [[1, 2]]}')
    assert fmt is Format.COLUMNAR
    assert inputs["x"].shape == (1, 2)
    inputs, _ = decode('{"inputs": {"a": [[1], [2]], "b": "s", "extra": 1}}', TWO)
    assert inputs["a"].shape == (2, 1)
    assert inputs["b"].shape == ()
    inputs, _ = decode('{"inputs": 3}')
    assert inputs["x"].shape == ()
    assert inputs["x"].item() == 3.0


def test_signature_name() -> None:
    assert signature_name(parse_document(b'{"signature_name": "s", "inputs": 1}')) == "s"
    assert signature_name({"inputs": 1}) is None
    with pytest.raises(CodecError, match="'signature_name' key must be a string value"):
        signature_name({"signature_name": 1})


def test_nan_and_infinity_are_accepted_for_floats() -> None:
    inputs, _ = decode('{"instances": [NaN, Infinity, -Infinity]}')
    values = inputs["x"].tolist()
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("body", "specs", "message"),
    [
        ("[1]", ONE, "JSON Value: [1] Is not object"),
        ("", ONE, "JSON Parse error: The document is empty"),
        ("{", ONE, "JSON Parse error"),
        ('{"instances": [1], "inputs": [1]}', ONE, "expecting only one of 'inputs' or 'instances'"),
        ('{"instances": 1}', ONE, "Excepting 'instances' to be an list/array"),
        ('{"instances": []}', ONE, "No values in 'instances' array"),
        ('{"foo": []}', ONE, "Missing 'inputs' or 'instances' key"),
        ('{"instances": [1, 2]}', TWO, "instances is a plain list, but expecting list of objects"),
        ('{"inputs": [1, 2]}', TWO, "inputs is a plain value/list, but expecting an object"),
        ('{"inputs": {"a": 1}}', TWO, "Missing named input: b in 'inputs' object."),
        ('{"instances": [{"a": 1, "b": "x"}, [1]]}', TWO, "Expecting object but got list at item 1"),
        ('{"instances": [1, {"a": 1}]}', ONE, "Expecting value/list but got object at item 1"),
        ('{"instances": [{"a": 1}]}', TWO,
         "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal "
         "to: a,b"),
        ('{"instances": [{"a": 1, "b": "x", "c": 2}]}', TWO, "does not have named input: c"),
        ('{"instances": [{"a": 1.5, "b": "x"}]}', TWO,
         "Failed to process element: 0 key: a of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        ('{"inputs": ["1"]}', ONE, 'JSON Value: "1" Type: String is not of expected type: float'),
        ('{"inputs": [true]}', ONE, "JSON Value: true Type: True is not of expected type: float"),
        ('{"inputs": [1, true]}', ONE, "Type: True is not of expected type: float"),
        ('{"inputs": [null]}', ONE, "Type: Null is not of expected type: float"),
        ('{"inputs": [[1, 2], [3]]}', ONE,
         "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ('{"inputs": [[1, 2], 3]}', ONE, "JSON Value: 3 found at incorrect level: 2"),
        ('{"inputs": [1, [2]]}', ONE, "Encountered list at unexpected level: 1 expected < 1"),
        ('{"instances": [[1, 2], [3]]}', ONE, "Expecting tensor size: 2 but got: 1"),
        ('{"instances": [[1, 2], [[3], [4]]]}', ONE, "Expecting shape [2] but got: [2,1]"),
        ('{"inputs": [{"b64": 1}]}', {"s": spec("s", "string")}, "not formatted correctly for base64 data"),
        ('{"inputs": [{"b": 1}]}', ONE, "Type: Object is not of expected type: float"),
        ('{"inputs": {"s": [{"b64": "!!"}]}}', {"s": spec("s", "string")}, "Unable to base64 decode"),
        ('{"inputs": {"s": [{"b64": "AAAAAAAA="}]}}', {"s": spec("s", "string")}, "Unable to base64 decode"),
        ('{"inputs": {"s": [{"b64": "AA="}]}}', {"s": spec("s", "string")}, "Unable to base64 decode"),
        ('{"inputs": [300]}', {"i": spec("i", "int8")}, "is not of expected type: int8"),
        ('{"inputs": [9223372036854775808]}', {"i": spec("i", "int64")}, "not of expected type: int64"),
        ('{"inputs": [[1, 2]]}', {"x": spec("x", "float32", (-1, 3))},
         "input 'x' has shape [1, 2] but the signature expects [-1, 3]"),
    ],
)
def test_errors_are_tf_servings(body: str, specs: dict[str, TensorSpec], message: str) -> None:
    assert message in error(body, specs)


def test_quoted_values_stop_after_256_bytes_as_json_value_to_debug_string() -> None:
    """TF checks the size before each writer call and writes that call whole, adding nothing."""
    message = error('{"instances": 1, "padding": [' + ",".join(["12345"] * 100_000) + "]}", ONE)
    # 38 bytes up to the "[", then 12345 and ", 12345" (7 bytes) while fewer than 256 are out: 32 numbers.
    assert message == ('JSON Value: {\n    "instances": 1,\n    "padding": [' + ", ".join(["12345"] * 32)
                       + " Excepting 'instances' to be an list/array")
    long_string = error('{"inputs": ["' + "x" * 100_000 + '"]}', ONE)
    assert long_string == f'JSON Value: "{"x" * 100_000}" Type: String is not of expected type: float'


@pytest.mark.parametrize(("key_bytes", "quoted"), [
    # a key is a writer call of its own: 28 + 228 bytes end on the key, without its value
    (228, '{\n    "instances": 1,\n    "' + "k" * 228 + '"'),
    (227, '{\n    "instances": 1,\n    "' + "k" * 227 + '": 2'),
    (225, '{\n    "instances": 1,\n    "' + "k" * 225 + '": 2'),  # 256 bytes out: no "}"
    (224, '{\n    "instances": 1,\n    "' + "k" * 224 + '": 2\n}'),
])
def test_the_cut_falls_between_writer_calls(key_bytes: int, quoted: str) -> None:
    message = error('{"instances": 1, "' + "k" * key_bytes + '": 2}', ONE)
    assert message == f"JSON Value: {quoted} Excepting 'instances' to be an list/array"


@pytest.mark.parametrize(("value", "text"), [
    ({"a": 1, "b": [1, 2]}, '{\n    "a": 1,\n    "b": [1, 2]\n}'),
    ([{"a": 1}, {"b": {}}, []], '[{\n        "a": 1\n    }, {\n        "b": {}\n    }, []]'),
    ({"a": {"b": [{"c": None}]}},
     '{\n    "a": {\n        "b": [{\n                "c": null\n            }]\n    }\n}'),
    ([True, False, "x"], '[true, false, "x"]'),
    # rapidjson's dtoa
    (1e21, "1e21"), (1e20, "100000000000000000000.0"), (1.5e-7, "1.5e-7"), (1e-7, "1e-7"),
    (0.000001, "0.000001"), (0.0001234, "0.0001234"), (-0.0, "-0.0"), (0.0, "0.0"), (1.5, "1.5"),
    (123.0, "123.0"), (-2.5e300, "-2.5e300"), (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e308"),
    (0.1, "0.1"), (12345678.9, "12345678.9"),
    # integers within 64 bits as read; beyond them rapidjson reads a double
    (2**64 - 1, "18446744073709551615"), (-(2**63), "-9223372036854775808"), (2**64, "18446744073709553000.0"),
    # the writer refuses NaN and Infinity: the text stops after the separator
    ([1.0, math.nan, 2], "[1.0, "), ({"a": math.inf}, '{\n    "a": '), (math.nan, ""),
    # control characters as \u00XX (upper case), non-ASCII as it is
    ("\x01\x1f\n\t\"\\/é\x7f", '"\\u0001\\u001F\\n\\t\\"\\\\/é\x7f"'),
])
def test_values_are_written_as_rapidjsons_pretty_writer(value: Any, text: str) -> None:
    assert value_text(value) == text


# JsonValueToDebugString's text of these documents, from json_tensor.cc's function built
# against rapidjson 1.1.0 (TF Serving's) with its parse flags.
@pytest.mark.parametrize(("body", "text"), [
    # Grisu2's digits round-trip but are not always the shortest or the closest
    ("[2.2642311506022173e-205, -2.4656440169470205e-293, 1.7495110049777856e+107, 1.5520455747747724e+41]",
     "[2.264231150602217e-205, -2.4656440169470206e-293, 1.7495110049777857e107, 1.5520455747747727e41]"),
    # rapidjson's reading without full precision: 17 digits at most, one scaling by a power of ten
    ("[2.5236874343042183e+206, -9.860259320552738e+148, 6.707492812549787e+246, 1.1020867573674546e+21]",
     "[2.5236874343042188e206, -9.860259320552739e148, 6.707492812549788e246, 1.1020867573674546e21]"),
    ("[5e-324, 1.7976931348623157e+308, 2.2250738585072014e-308, 0.1, 1e23, 9007199254740993]",
     "[5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 0.1, 9.999999999999999e22, 9007199254740993]"),
])
def test_numbers_are_quoted_as_tf_serving_reads_and_writes_them(body: str, text: str) -> None:
    assert value_text(loads(body)) == text


def test_integers_beyond_64_bits_are_read_digit_by_digit_as_rapidjson_does() -> None:
    assert value_text([123456789012345678901234, -9223372036854775809, 18446744073709551616]) == (
        "[1.2345678901234567e23, -9223372036854776000.0, 18446744073709553000.0]")
    assert rapidjson_number("-188364806940185954666") == -1.88364806940186e20  # the nearest: ...8595e20
    assert rapidjson_number("18446744073709551615") == 2**64 - 1


def test_grisu_powers_of_ten_are_rapidjsons_table() -> None:
    """kCachedPowers_F / _E of rapidjson's diyfp.h: first, two middle ones, last."""
    assert _CACHED_POWERS[0] == (0xFA8FD5A0081C0288, -1220)
    assert _CACHED_POWERS[43] == (0xD1B71758E219652C, -77)
    assert _CACHED_POWERS[46] == (0xAD78EBC5AC620000, 3)
    assert _CACHED_POWERS[86] == (0xAF87023B9BF0EE6B, 1066)


@pytest.mark.parametrize(
    ("dtype", "body", "expected"),
    [
        ("float64", "[16777217]", [16777217.0]),
        ("int64", "[-9223372036854775808]", [-(2**63)]),
        ("uint64", "[18446744073709551615]", [2**64 - 1]),
        ("bool", "[true, false]", [True, False]),
        ("float32", "[]", []),
        ("int32", "[[], []]", [[], []]),
        ("float32", "[1, 2.5, 3]", [1.0, 2.5, 3.0]),
    ],
)
def test_int_and_float_rules(dtype: str, body: str, expected: Any) -> None:
    inputs, _ = decode('{"inputs": ' + body + "}", {"v": spec("v", dtype)})
    assert inputs["v"].dtype == lookup_dtype(dtype).numpy
    assert inputs["v"].tolist() == expected


DBL_MAX, DBL_MIN = "1.79769e+308", "2.22507e-308"  # absl::Substitute's text of the test's limits


@pytest.mark.parametrize("key", ["instances", "inputs"])
@pytest.mark.parametrize(
    ("dtype", "body", "expected"),
    [
        # json_tensor_test.cc at HEAD: FloatTensorWithPrecisionLoss, with and without a decimal point.
        ("float32", "[1435774380]", [1435774336.0]),
        ("float32", "[1435774380.0]", [1435774336.0]),
        # FloatTensorThatExceedsMaxReturnsInf and FloatTensorThatExceedsMinReturnsZero.
        ("float32", f"[{DBL_MAX}, -{DBL_MAX}]", [math.inf, -math.inf]),
        ("float32", f"[{DBL_MIN}, -{DBL_MIN}]", [0.0, -0.0]),
        ("float32", "[16777216, 16777217, 1e39]", [16777216.0, 16777216.0, math.inf]),  # 2**24 is exact
        ("float32", "[18446744073709551615]", [2.0**64]),  # uint64 through double
        ("float64", "[9007199254740993, 1e-320]", [9007199254740992.0, 1e-320]),  # 2**53 + 1: GetDouble
        ("float16", "[65520, 2049, 1e-8]", [math.inf, 2048.0, 0.0]),  # the same rule (TF has no half)
    ],
)
def test_floats_take_any_number_rounded_as_tf_serving_at_head(key: str, dtype: str, body: str,
                                                              expected: list[float]) -> None:
    inputs, _ = decode(f'{{"{key}": {body}}}', {"v": spec("v", dtype)})
    assert inputs["v"].dtype == lookup_dtype(dtype).numpy
    assert inputs["v"].tolist() == expected
    assert [math.copysign(1, v) for v in inputs["v"].tolist()] == [math.copysign(1, v) for v in expected]


def test_float_features_take_any_number_rounded() -> None:
    request_input = decode_examples({"examples": [{"x": [1435774380.0, 1e39, 1e-50]}]})
    assert list(request_input.example_list.examples[0].features.feature["x"].float_list.value) == [
        1435774336.0, math.inf, 0.0]


@pytest.mark.parametrize(
    ("dtype", "body"),
    [
        ("int32", "[2147483648]"),  # IsInt: beyond int32 is a type error
        ("int64", "[9223372036854775808]"),  # IsInt64
        ("uint32", "[-1]"),  # IsUint
        ("uint64", "[18446744073709551616]"),  # beyond 64 bits rapidjson holds a double
        ("int32", "[1.0]"),  # a decimal literal is a double, never an integer
        ("bool", "[1]"),  # IsBool only
    ],
)
def test_integer_and_bool_inputs_keep_tf_servings_type_checks(dtype: str, body: str) -> None:
    assert f"is not of expected type: {dtype}" in error('{"inputs": ' + body + "}", {"v": spec("v", dtype)})


@pytest.mark.parametrize(
    ("value", "double", "text"),
    [
        (0.5, False, "0.5"),
        (3.0, False, "3.0"),
        (float(np.float32(0.2)), False, "0.2"),
        (float(np.float32(0.9990350008010864)), False, "0.999035"),
        (float(np.float32(0.1234567)), False, "0.123456702"),
        (9000000.0, False, "9e+06"),
        (0.1, True, "0.1"),
        (1 / 3, True, "0.33333333333333331"),
        (math.nan, True, "NaN"),
        (-math.inf, False, "-Infinity"),
        (-0.0, True, "-0.0"),
    ],
)
def test_decimals_are_written_as_tf_writes_them(value: float, double: bool, text: str) -> None:
    assert decimal_text(value, double=double) == text


def test_predictions_single_output() -> None:
    out = {"y": np.array([[1.5], [2.0]], dtype=np.float32)}
    assert encode_predict(out, Format.ROW) == b'{"predictions":[[1.5],[2.0]]}'
    assert encode_predict(out, Format.COLUMNAR) == b'{"outputs":[[1.5],[2.0]]}'


def test_predictions_several_outputs_are_objects_per_instance() -> None:
    out = {"n": np.array([1, 2], dtype=np.int64), "s_bytes": np.array([b"a", b"\xff"], dtype=object),
           "t": np.array([b"x", b"y"], dtype=object)}
    assert orjson.loads(encode_predict(out, Format.ROW)) == {"predictions": [
        {"n": 1, "s_bytes": {"b64": "YQ=="}, "t": "x"}, {"n": 2, "s_bytes": {"b64": "/w=="}, "t": "y"}]}
    assert orjson.loads(encode_predict(out, Format.COLUMNAR)) == {"outputs": {
        "n": [1, 2], "s_bytes": [{"b64": "YQ=="}, {"b64": "/w=="}], "t": ["x", "y"]}}


def test_non_finite_outputs_are_literals() -> None:
    out = {"y": np.array([math.nan, math.inf, -math.inf], dtype=np.float32)}
    assert encode_predict(out, Format.COLUMNAR) == b'{"outputs":[NaN,Infinity,-Infinity]}'


def test_row_answers_need_a_batch_dimension() -> None:
    with pytest.raises(CodecError, match="Tensor name: y has no shape information"):
        encode_predict({"y": np.array(1.0)}, Format.ROW)
    with pytest.raises(CodecError, match="Tensor name: b has inconsistent batch size: 3 expecting: 2"):
        encode_predict({"a": np.zeros(2), "b": np.zeros(3)}, Format.ROW)
    assert encode_predict({"y": np.array(1.0)}, Format.COLUMNAR) == b'{"outputs":1.0}'


def test_empty_and_scalar_tensors() -> None:
    assert tensor_json(np.zeros((2, 0), dtype=np.float32)) == b"[[],[]]"
    assert tensor_json(np.array(True)) == b"true"
    assert tensor_json(np.zeros((0, 3), dtype=np.int32)) == b"[]"


FLOAT32 = (st.floats(width=32, allow_nan=False, allow_infinity=False).filter(lambda v: abs(v) < 3e38)
           | st.sampled_from([math.nan, math.inf]))


@given(st.lists(st.lists(FLOAT32, min_size=2, max_size=2), min_size=1, max_size=5))
def test_float32_round_trip(rows: list[list[float]]) -> None:
    array = np.array(rows, dtype=np.float32)
    text = encode_predict({"y": array}, Format.ROW)
    back = decode_predict(parse_document(text.replace(b"predictions", b"instances")),
                          {"y": spec("y", "float32")}).inputs["y"]
    np.testing.assert_array_equal(back, array)


def test_examples_with_context() -> None:
    document = orjson.loads(b'{"context": {"q": "pizza"}, "examples": [{"f": [1.5, 2.0], "i": 3, "b": true, '
                            b'"s": {"b64": "aGk="}}, {"e": []}]}')
    request_input = decode_examples(document)
    context = request_input.example_list_with_context.context.features.feature
    assert list(context["q"].bytes_list.value) == [b"pizza"]
    first = request_input.example_list_with_context.examples[0].features.feature
    assert list(first["f"].float_list.value) == [1.5, 2.0]
    assert list(first["i"].int64_list.value) == [3]
    assert list(first["b"].int64_list.value) == [1]
    assert list(first["s"].bytes_list.value) == [b"hi"]
    plain = decode_examples({"examples": [{"x": 1}]})
    assert plain.WhichOneof("kind") == "example_list"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"context": {}}, "key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{"f": [1, "a"]}]}, "Unexpected element type in feature: f expecting type: int64"),
        ({"examples": [{"f": [None]}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": [[1]]}]}, "Feature: f has element with unexpected JSON type: Array"),
        ({"examples": [{"f": 2**63}]}, "Feature: f has uint64 element. Only int64 is supported."),
    ],
)
def test_example_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_examples(document)
    assert message in caught.value.message


def test_classify_and_regress_results() -> None:
    result = ClassificationResult()
    classes = result.classifications.add().classes
    classes.add(label="a", score=0.5)
    classes.add(label="b", score=0.25)
    assert orjson.loads(classification_json(result)) \
        == {"results": [[["a", 0.5], ["b", 0.25]]]}
    regression = RegressionResult()
    regression.regressions.add(value=1.0)
    regression.regressions.add(value=0.5)

    assert regression_json(regression) == b'{"results":[1.0,0.5]}'
    with pytest.raises(CodecError, match="empty RegressionResults"):
        regression_json(RegressionResult())


def test_model_status_json_is_tfs_shape() -> None:
    response = GetModelStatusResponse()
    entry = response.model_version_status.add(version=2, state=ModelVersionStatus.AVAILABLE)
    entry.status.SetInParent()
    assert orjson.loads(model_status_json(response)) == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def _metadata(signature: Signature) -> GetModelMetadataResponse:
    response = GetModelMetadataResponse()
    response.model_spec.name = "Toy"
    response.model_spec.version.value = 2
    signature_map = SignatureDefMap()
    signature_map.signature_def["serving_default"].CopyFrom(signature_to_def(signature))
    packed = response.metadata["signature_def"]
    packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
    packed.value = signature_map.SerializeToString()
    return response


def test_metadata_round_trip_and_json() -> None:
    signature = Signature("serving_default", {"input_1": spec("input_1", "float32", (-1, 2))},
                          {"output_1": spec("output_1", "float32", None)})
    response = _metadata(signature)
    assert signatures_from_metadata(response) == {"serving_default": signature}
    document = orjson.loads(model_metadata_json(response))
    assert document["model_spec"] == {"name": "Toy", "signature_name": "", "version": "2"}
    definition = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert definition["inputs"]["input_1"] == {
        "dtype": "DT_FLOAT", "name": "input_1",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                         "unknown_rank": False},
    }
    assert definition["outputs"]["output_1"]["tensor_shape"]["unknown_rank"] is True
    assert definition["method_name"] == "tensorflow/serving/predict"


def test_metadata_without_signature_def_is_an_error() -> None:
    with pytest.raises(CodecError, match="Failed to find 'signature_def' key"):
        signatures_from_metadata(GetModelMetadataResponse())


@given(st.lists(st.floats(width=32) | st.floats(), max_size=50), st.booleans())
def test_bulk_float_text_is_decimal_text(values: list[float], double: bool) -> None:
    with np.errstate(over="ignore"):
        array = np.array(values, dtype=np.float64 if double else np.float32)
    expected = "[" + ",".join(decimal_text(float(v), double=double) for v in array) + "]"
    assert tensor_json(array).decode() == expected


# Any JSON scalar TF's element rules tell apart: integers up to beyond 64 bits, doubles with
# NaN and +-Infinity, bools (which numpy reads as 0 and 1), and the odd string or null.
JSON_SCALARS = (st.integers(-(2**70), 2**70) | st.integers(-3, 3) | st.floats() | st.booleans()
                | st.sampled_from(["1", None]))
NUMERIC_DTYPES = ["float32", "float64", "float16", "int8", "uint8", "int32", "uint32", "int64", "uint64", "bool"]


def _outcome(read: Callable[[], np.ndarray]) -> tuple[Any, ...]:
    """An array as (dtype, shape, bytes: NaN canonical, the sign of zero kept), or TF's error."""
    try:
        with np.errstate(over="ignore", under="ignore"):
            array = read()
    except CodecError as caught:
        return ("error", caught.message)
    if array.dtype.kind == "f":
        array = np.where(np.isnan(array), np.array(np.nan, array.dtype), array)
    return (array.dtype.str, array.shape, array.tobytes())


@given(st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=16),
       st.sampled_from(NUMERIC_DTYPES))
def test_the_numpy_shortcut_reads_values_as_tfs_element_walk(value: Any, dtype: str) -> None:
    # The native codec's fast path, with TF's float rule, gives what the walk gives, or defers to it.
    walked = _outcome(lambda: _exact_tensor(value, lookup_dtype(dtype)))
    assert _outcome(lambda: tensor_from_json(value, lookup_dtype(dtype))) == walked


# ---------------------------------------------------------------- numbers beyond double, bool-free bodies

BEYOND_DOUBLE = "1" + "0" * 400  # the NaN token makes loads keep it exact (the stdlib parser)
TOO_BIG = "JSON Parse error: Number too big to be stored in double"


@pytest.mark.parametrize(("body", "message"), [  # d20565e's answers, word for word
    (f'{{"instances": [[0.5, {BEYOND_DOUBLE}], [NaN, 1.0]]}}',
     f"Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: {TOO_BIG}"),
    (f'{{"inputs": [[0.5, {BEYOND_DOUBLE}], [NaN, 1.0]]}}', TOO_BIG),
    (f'{{"inputs": {{"x": [[0.5, {BEYOND_DOUBLE}], [NaN, 1.0]]}}}}', TOO_BIG),
    (f'{{"instances": [{{"x": [0.5, {BEYOND_DOUBLE}]}}, {{"x": [NaN, 1.0]}}]}}',
     f"Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: {TOO_BIG}"),
])
def test_an_integer_beyond_double_next_to_floats_is_too_big(body: str, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode(body)
    assert caught.value.message == message


@pytest.mark.parametrize("body", [
    '{"instances": [[1, 2]]}', '{"instances": [[1.5, 2.5], [0, 1]]}', '{"inputs": [[0, 1]]}',
    '{"inputs": {"x": [[1, 0]]}}', '{"instances": [{"x": [1, 0]}, {"x": [0.5, 1]}]}',
])
def test_a_bool_free_body_decodes_the_same_without_the_bool_check(body: str) -> None:
    document = parse_document(body.encode())
    assert not may_hold_bools(body.encode())
    checked, unchecked = decode_predict(document, ONE), decode_predict(document, ONE, bools=False)
    assert checked.format is unchecked.format
    assert checked.inputs["x"].dtype == unchecked.inputs["x"].dtype == np.float32
    assert np.array_equal(checked.inputs["x"], unchecked.inputs["x"])


@pytest.mark.parametrize(("body", "message"), [  # d20565e's answers, word for word
    ('{"instances": [[true, 2.0]]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: true Type: True is not of expected type: float"),
    ('{"instances": [[1.5, false]]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: false Type: False is not of expected type: float"),
    ('{"inputs": [[1, true]]}', "JSON Value: true Type: True is not of expected type: float"),
    ('{"instances": [{"x": [true, 2.0]}]}', "Failed to process element: 0 key: x of 'instances' list. "
     "Error: INVALID_ARGUMENT: JSON Value: true Type: True is not of expected type: float"),
])
def test_a_bool_in_a_small_float_input_is_refused(body: str, message: str) -> None:
    assert may_hold_bools(body.encode())
    with pytest.raises(CodecError) as caught:
        decode_predict(parse_document(body.encode()), ONE, bools=True)
    assert caught.value.message == message


def test_a_scalar_against_a_shaped_input_says_its_shape_as_before() -> None:
    with pytest.raises(CodecError) as caught:
        decode('{"inputs": 3}', {"x": spec("x", "float32", (-1, 2))})
    assert caught.value.message == "input 'x' has shape [] but the signature expects [-1, 2]"  # d20565e's
    assert caught.value.field == "x"
