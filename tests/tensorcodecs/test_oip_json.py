"""The Open Inference Protocol's JSON tensors: the spec's examples, every datatype, the binary
extension, and errors that name the field."""

from __future__ import annotations

import base64
import math
import struct

import numpy as np
import orjson
import pytest

from tensorcodecs.contract import TensorSpec
from tensorcodecs.dtypes import OIP_DATATYPES, dtype_from_oip, lookup_dtype
from tensorcodecs.errors import CodecError
from tensorcodecs.json_codec import loads
from tensorcodecs.oip_json import NDArray, decode_inputs, encode_outputs, requested_outputs


def spec(name: str, dtype: str, shape: tuple[int, ...] | None) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


def specs(*items: TensorSpec) -> dict[str, TensorSpec]:
    return {item.name: item for item in items}


def dumps(items: list[dict[str, object]]) -> bytes:
    return orjson.dumps(items, option=orjson.OPT_SERIALIZE_NUMPY)


# ---------------------------------------------------------------- the spec's examples


def test_spec_request_example() -> None:
    """The REST spec's inference request example (two inputs, flat data)."""
    body = loads(b"""{"id": "42", "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [true, false, true]}],
      "outputs": [{"name": "output0"}]}""")
    contract = specs(spec("input0", "uint32", (2, 2)), spec("input1", "bool", (3,)))
    arrays = decode_inputs(body["inputs"], contract)
    assert arrays["input0"].dtype == np.uint32
    assert arrays["input0"].tolist() == [[1, 2], [3, 4]]
    assert arrays["input1"].dtype == np.bool_
    assert arrays["input1"].tolist() == [True, False, True]


def test_spec_response_example() -> None:
    """The REST spec's response example: output0 FP32 [3, 2], flat data."""
    items, buffers = encode_outputs({"output0": np.array([[1, 1.2], [3.3, 4], [5.1, 6]], dtype=np.float32)},
                                    [{"name": "output0"}])
    assert buffers == []
    document = orjson.loads(dumps(items))
    assert document[0]["name"] == "output0"
    assert document[0]["datatype"] == "FP32"
    assert document[0]["shape"] == [3, 2]
    np.testing.assert_allclose(document[0]["data"], [1, 1.2, 3.3, 4, 5.1, 6], rtol=1e-6)


def test_nested_data_as_the_shape() -> None:
    items = [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, 6]]}]
    arrays = decode_inputs(items, specs(spec("x", "int64", (-1, 3))))
    assert arrays["x"].shape == (2, 3)
    assert arrays["x"].dtype == np.int64


def test_nesting_other_than_the_shape_is_refused() -> None:
    items = [{"name": "x", "shape": [2, 3], "datatype": "INT32", "data": [[1, 2], [3, 4], [5, 6]]}]
    with pytest.raises(CodecError, match="nested as \\[3, 2\\]") as error:
        decode_inputs(items, None)
    assert error.value.field == "inputs[0].data"


# ---------------------------------------------------------------- every datatype


SAMPLES: dict[str, list[object]] = {
    "BOOL": [True, False, True, True],
    "INT8": [-128, 0, 1, 127],
    "INT16": [-32768, 0, 1, 32767],
    "INT32": [-(2**31), 0, 1, 2**31 - 1],
    "INT64": [-(2**63), 0, 1, 2**63 - 1],
    "UINT8": [0, 1, 200, 255],
    "UINT16": [0, 1, 2, 65535],
    "UINT32": [0, 1, 2, 2**32 - 1],
    "UINT64": [0, 1, 2, 2**64 - 1],
    "FP16": [0.5, -1.0, 2.0, 1024.0],
    "FP32": [0.5, -1.25, 3.0, 1e30],
    "FP64": [0.1, -1e300, 3.0, 5e-324],
    "BYTES": ["a", "é", "", "xyz"],
}


@pytest.mark.parametrize("datatype", OIP_DATATYPES)
def test_every_datatype_round_trips_json(datatype: str) -> None:
    row = dtype_from_oip(datatype)
    items = [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": SAMPLES[datatype]}]
    arrays = decode_inputs(loads(orjson.dumps(items)), specs(TensorSpec("x", row, (2, 2))))
    array = arrays["x"]
    assert array.shape == (2, 2)
    if datatype == "BYTES":
        assert array.reshape(-1).tolist() == [str(v).encode() for v in SAMPLES[datatype]]
    else:
        assert array.dtype == row.numpy
    answer, _ = encode_outputs({"y": array})
    document = orjson.loads(dumps(answer))[0]
    assert document["datatype"] == datatype
    assert document["shape"] == [2, 2]
    assert document["data"] == SAMPLES[datatype]


@pytest.mark.parametrize("datatype", OIP_DATATYPES)
def test_every_datatype_round_trips_binary(datatype: str) -> None:
    row = dtype_from_oip(datatype)
    source = np.array(SAMPLES[datatype], dtype=row.numpy).reshape(2, 2)
    if datatype == "BYTES":
        source = np.array([str(v).encode() for v in SAMPLES[datatype]], dtype=object).reshape(2, 2)
    answer, buffers = encode_outputs({"x": source}, binary_output=True)
    assert "data" not in answer[0]
    assert answer[0]["parameters"] == {"binary_data_size": len(buffers[0])}
    request = [{"name": "x", "shape": [2, 2], "datatype": datatype, "parameters": answer[0]["parameters"]}]
    arrays = decode_inputs(request, specs(TensorSpec("x", row, (2, 2))), memoryview(b"".join(buffers)))
    assert arrays["x"].tolist() == source.tolist()


def test_float16_answers_are_the_shortest_text() -> None:
    answer, _ = encode_outputs({"y": np.array([0.1, 1 / 3], dtype=np.float16)})
    assert b'"data":[0.1,0.3333]' in dumps(answer)


def test_non_finite_literals_in_requests_null_in_answers() -> None:
    body = loads(b'[{"name": "x", "shape": [3], "datatype": "FP32", "data": [NaN, Infinity, -Infinity]}]')
    array = decode_inputs(body, None)["x"]
    assert math.isnan(array[0])
    assert array[1] == np.inf
    assert array[2] == -np.inf
    answer, _ = encode_outputs({"y": array})
    assert b'"data":[null,null,null]' in dumps(answer)


def test_without_a_contract_the_datatype_decides() -> None:
    arrays = decode_inputs([{"name": "a", "shape": [1], "datatype": "FP16", "data": [1.5]},
                            {"name": "b", "shape": [], "datatype": "INT8", "data": [3]}], None)
    assert arrays["a"].dtype == np.float16
    assert arrays["b"].shape == ()
    assert arrays["b"].dtype == np.int8


def test_scalars_and_empty_tensors() -> None:
    arrays = decode_inputs([{"name": "s", "shape": [], "datatype": "FP64", "data": [2.5]},
                            {"name": "e", "shape": [0, 3], "datatype": "INT32", "data": []}], None)
    assert arrays["s"].shape == ()
    assert arrays["s"].item() == 2.5
    assert arrays["e"].shape == (0, 3)
    answer, _ = encode_outputs(arrays)
    assert answer[0]["shape"] == []
    assert orjson.loads(dumps(answer))[0]["data"] == [2.5]
    assert answer[1]["shape"] == [0, 3]
    assert orjson.loads(dumps(answer))[1]["data"] == []


def test_bytes_contract_takes_bytes_datatype() -> None:
    arrays = decode_inputs([{"name": "b", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
                           specs(spec("b", "bytes", (-1,))))
    assert arrays["b"].tolist() == [b"hi"]


def test_base64_content_type() -> None:
    encoded = base64.b64encode(b"\xff\x00").decode()
    item = {"name": "b", "shape": [1], "datatype": "BYTES", "data": [encoded],
            "parameters": {"content_type": "base64"}}
    assert decode_inputs([item], None)["b"].tolist() == [b"\xff\x00"]
    item["data"] = ["not base64!"]
    with pytest.raises(CodecError, match="invalid base64") as error:
        decode_inputs([item], None)
    assert error.value.field == "inputs[0].data[0]"


def test_non_utf8_bytes_answer_as_base64() -> None:
    answer, _ = encode_outputs({"y": np.array([b"ok", b"\xff"], dtype=object)})
    assert answer[0]["parameters"] == {"content_type": "base64"}
    assert answer[0]["data"] == [base64.b64encode(b"ok").decode(), base64.b64encode(b"\xff").decode()]
    text, _ = encode_outputs({"y": np.array(["ok", b"\xc3\xa9"], dtype=object)})
    assert text[0]["data"] == ["ok", "é"]
    assert "parameters" not in text[0]


def test_contract_order_whatever_the_request_order() -> None:
    contract = specs(spec("a", "int32", (1,)), spec("b", "int32", (1,)))
    arrays = decode_inputs([{"name": "b", "shape": [1], "datatype": "INT32", "data": [2]},
                            {"name": "a", "shape": [1], "datatype": "INT32", "data": [1]}], contract)
    assert list(arrays) == ["a", "b"]


# ---------------------------------------------------------------- binary extension


def test_binary_inputs_are_views_of_the_body() -> None:
    body = bytearray(struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<2q", 7, 8))
    items = [{"name": "f", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
             {"name": "j", "shape": [1], "datatype": "INT32", "data": [5]},
             {"name": "i", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}]
    arrays = decode_inputs(items, None, memoryview(body))
    assert arrays["f"].tolist() == [[1, 2], [3, 4]]
    assert arrays["i"].tolist() == [7, 8]
    assert arrays["j"].tolist() == [5]
    assert np.shares_memory(arrays["f"], np.frombuffer(body, dtype=np.uint8))


@pytest.mark.parametrize(("items", "binary", "message", "field"), [
    ([{"name": "f", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], None,
     "no binary part", "inputs[0].parameters.binary_data_size"),
    ([{"name": "f", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], b"1234",
     "runs past", "inputs[0].parameters.binary_data_size"),
    ([{"name": "f", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}], b"1234",
     "raw contents of 4 bytes", "inputs[0].data"),
    ([{"name": "f", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}], b"12345",
     "1 bytes after", "inputs"),
    ([{"name": "f", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": -1}}], b"",
     "number of bytes", "inputs[0].parameters.binary_data_size"),
    ([{"name": "f", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}}],
     b"1234", "has no data", "inputs[0].data"),
])
def test_binary_errors(items: list[dict[str, object]], binary: bytes | None, message: str, field: str) -> None:
    with pytest.raises(CodecError, match=message) as error:
        decode_inputs(items, None, None if binary is None else memoryview(binary))
    assert error.value.field == field


# ---------------------------------------------------------------- requested outputs


def test_requested_outputs_filter_and_binary_choice() -> None:
    outputs: dict[str, NDArray] = {"a": np.array([1, 2], dtype=np.int32), "b": np.array([0.5], dtype=np.float64)}
    items, buffers = encode_outputs(outputs, [{"name": "b", "parameters": {"binary_data": True}}])
    assert [item["name"] for item in items] == ["b"]
    assert items[0]["parameters"] == {"binary_data_size": 8}
    assert bytes(buffers[0]) == struct.pack("<d", 0.5)
    # binary_data_output for the request; binary_data false per output wins
    items, buffers = encode_outputs(outputs, [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
                                    binary_output=True)
    assert items[0]["parameters"] == {"binary_data_size": 8}
    assert bytes(buffers[0]) == struct.pack("<2i", 1, 2)
    assert items[1]["data"] is not None
    assert "parameters" not in items[1]


def test_binary_buffers_are_little_endian() -> None:
    _, buffers = encode_outputs({"a": np.array([1, 2], dtype=">i4")}, binary_output=True)
    assert bytes(buffers[0]) == struct.pack("<2i", 1, 2)


@pytest.mark.parametrize(("requested", "message", "field"), [
    ({"name": "a"}, "outputs must be a list", "outputs"),
    (["a"], "must be an object", "outputs[0]"),
    ([{"name": 3}], "needs a name", "outputs[0].name"),
    ([{"name": "a"}, {"name": "a"}], "requested twice", "outputs[1].name"),
    ([{"name": "a", "parameters": {"binary_data": "yes"}}], "true or false", "outputs[0].parameters.binary_data"),
    ([{"name": "a", "parameters": {"classification": 2}}], "classification", "outputs[0].parameters.classification"),
])
def test_requested_output_errors(requested: object, message: str, field: str) -> None:
    with pytest.raises(CodecError, match=message) as error:
        requested_outputs(requested)
    assert error.value.field == field


def test_unknown_requested_output() -> None:
    with pytest.raises(CodecError, match="unknown output 'z'; the model answers 'a'") as error:
        encode_outputs({"a": np.zeros(1)}, [{"name": "z"}])
    assert error.value.field == "outputs[0].name"


# ---------------------------------------------------------------- request errors


CONTRACT = specs(spec("x", "float32", (-1, 2)), spec("n", "int32", (1,)))


def good() -> list[dict[str, object]]:
    return [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "n", "shape": [1], "datatype": "INT32", "data": [3]}]


def with_change(index: int, **changes: object) -> list[dict[str, object]]:
    items = good()
    items[index].update(changes)
    return items


@pytest.mark.parametrize(("items", "message", "field"), [
    ({"x": [1]}, "inputs must be a list", "inputs"),
    ([3], "must be an object", "inputs[0]"),
    (with_change(0, name=None), "needs a name", "inputs[0].name"),
    (with_change(1, name="x"), "given twice", "inputs[1].name"),
    (with_change(1, name="q"), "unknown input 'q'; expected 'x', 'n'", "inputs[1].name"),
    (good()[:1], "missing input 'n'", "inputs"),
    (with_change(0, shape=[2, -1]), "integers >= 0", "inputs[0].shape"),
    (with_change(0, shape="1,2"), "shape must be a list", "inputs[0].shape"),
    (with_change(0, shape=[2]), "has shape \\[-1, 2\\], got \\[2\\]", "inputs[0].shape"),
    (with_change(0, datatype="FP64"), "is FP32 \\(float32\\), got datatype FP64", "inputs[0].datatype"),
    (with_change(0, datatype="fp32"), "unsupported datatype 'fp32'", "inputs[0].datatype"),
    (with_change(0, datatype=None), "datatype must be a string", "inputs[0].datatype"),
    (with_change(0, data=[1.0, 2.0, 3.0]), "3 elements, shape \\[1, 2\\] holds 2", "inputs[0].data"),
    (with_change(0, data=[1.0, "a"]), "expected a number", "inputs[0].data[1]"),
    (with_change(1, data=[1.5]), "expected an integer", "inputs[1].data[0]"),
    (with_change(1, data=[True]), "expected an integer", "inputs[1].data[0]"),
    (with_change(1, data=[2**40]), "out of range for int32", "inputs[1].data[0]"),
    (with_change(0, data=[[1.0], [2.0, 3.0]]), "ragged", "inputs[0].data[1]"),
    (with_change(0, data=None), "expected a number", "inputs[0].data"),
    ([good()[0], {"name": "n", "shape": [1], "datatype": "INT32"}], "has no data", "inputs[1].data"),
    (with_change(0, parameters=[1]), "parameters must be an object", "inputs[0].parameters"),
])
def test_request_errors_name_the_field(items: object, message: str, field: str) -> None:
    with pytest.raises(CodecError, match=message) as error:
        decode_inputs(items, CONTRACT)
    assert error.value.field == field


def test_bool_datatype_takes_bools_only() -> None:
    with pytest.raises(CodecError, match="expected true or false") as error:
        decode_inputs([{"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, 1]}], None)
    assert error.value.field == "inputs[0].data[1]"


def test_element_limit_is_checked_from_the_shapes_before_the_data() -> None:
    items = [{"name": "x", "shape": [1000, 1000], "datatype": "FP32", "data": "never read"}]
    with pytest.raises(CodecError, match="1000000 tensor elements; the limit is 1000") as error:
        decode_inputs(items, None, max_elements=1000)
    assert error.value.field == "inputs"


def test_complex_contract_has_no_datatype() -> None:
    with pytest.raises(CodecError, match="has no datatype"):
        decode_inputs([{"name": "c", "shape": [1], "datatype": "FP64", "data": [1.0]}],
                      specs(spec("c", "complex128", (1,))))
