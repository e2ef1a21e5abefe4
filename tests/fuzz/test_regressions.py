"""Failure classes the fuzz suite found, one narrow test each now that they are fixed (the main
properties generate them too; these pin the smallest cases). The oracle is the main suite's, so
each also checks that the keep-alive connection serves on (an unexpected 500 keeps it too:
tests/gateway/test_errors.py)."""

from __future__ import annotations

import json

import pytest

from tests.fuzz.harness import Connection, FuzzGateway, Request
from tests.fuzz.oracle import check

JSON = (("Content-Type", b"application/json"),)
BINARY = (("Content-Type", b"application/octet-stream"),)
DEPTHS = (65, 100, 512, 1023)


def nest(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(("path", "template"), ids=["application", "model", "v1-instances", "v1-inputs"], argvalues=[
    ("/gateway/applications/increment_app", '{{"number": {}}}'),
    ("/gateway/models/toy", '{{"input_1": {}}}'),
    ("/v1/models/toy:predict", '{{"instances": {}}}'),
    ("/v1/models/increment_model:predict", '{{"inputs": {}}}'),
])
def test_lists_nested_65_to_1023_deep(gateway: FuzzGateway, connection: Connection, path: str,
                                      template: str) -> None:
    """More dimensions than numpy's 64 is a client error (it answered 500 and reset)."""
    for depth in DEPTHS:
        answer = check(gateway, connection, Request("POST", path, JSON, template.format(nest(depth)).encode()))
        assert answer.status == 400, (depth, answer.body)


@pytest.mark.parametrize("shape", [b"99999999999999999999", b"18446744073709551616", b"1,99999999999999999999"])
def test_x_tensor_shape_beyond_int64(gateway: FuzzGateway, connection: Connection, shape: bytes) -> None:
    request = Request("POST", "/gateway/applications/matrix_app", (*BINARY, ("x-tensor-shape", shape)), b"")
    answer = check(gateway, connection, request)
    assert answer.status == 400, answer.body


@pytest.mark.parametrize(("shape", "body"), ids=["2**64", "2**62*4", "7*inverse"], argvalues=[
    (b"4294967296,4294967296", b""), (b"4611686018427387904,4", b""),
    (b"7,7905747460161236407", b"\0" * 4),  # 1 element, once wrapped
])
def test_x_tensor_shape_product_wrapping_in_64_bits(gateway: FuzzGateway, connection: Connection, shape: bytes,
                                                    body: bytes) -> None:
    """Sizes whose product wraps to the body's size in 64 bits name no tensor of that body."""
    request = Request("POST", "/gateway/applications/matrix_app", (*BINARY, ("x-tensor-shape", shape)), body)
    answer = check(gateway, connection, request)
    assert answer.status == 400, answer.body


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the test server's arithmetic
@pytest.mark.parametrize(("path", "body", "output"), ids=["nan-application", "infinity-model", "overflow-application"],
                         argvalues=[
    ("/gateway/applications/scaler_app", b'{"features": [[NaN, 1, 2]], "unit": "cm"}', "scaled"),
    ("/gateway/models/toy", b'{"input_1": [[Infinity, 1]]}', "output_1"),
    ("/gateway/applications/toy_app", b'{"input_1": [[3e38, 3e38]]}', "output_1"),  # the sum overflows
])
def test_native_answers_write_non_finite_floats_as_null(gateway: FuzzGateway, connection: Connection, path: str,
                                                        body: bytes, output: str) -> None:
    answer = check(gateway, connection, Request("POST", path, JSON, body))  # the oracle refuses bare NaN
    assert answer.status == 200, answer.body
    assert None in _leaves(json.loads(answer.body)[output]), answer.body


def test_v1_answers_keep_tf_servings_tokens(gateway: FuzzGateway, connection: Connection) -> None:
    request = Request("POST", "/v1/models/toy:predict", JSON, b'{"instances": [[Infinity, 1]]}')
    answer = check(gateway, connection, request)
    assert answer.status == 200, answer.body
    assert b"Infinity" in answer.body, answer.body


def _leaves(value: object) -> list[object]:
    return [leaf for item in value for leaf in _leaves(item)] if isinstance(value, list) else [value]


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/models/toy/labels/%0A:predict", 400),  # TF Serving: "Unrecognized servable version label"
    ("GET", "/v1/models/to%0Ay", 404), ("GET", "/v1/models/toy%0A", 404),
])
def test_a_newline_in_a_tf_path(gateway: FuzzGateway, connection: Connection, method: str, path: str,
                                status: int) -> None:
    """A percent-encoded newline reaches the /v1 routes (it missed them: Starlette's 404 shape)."""
    body = b'{"instances": [[1, 2]]}' if method == "POST" else None
    answer = check(gateway, connection, Request(method, path, JSON if body else (), body))
    assert answer.status == status, answer.body


@pytest.mark.parametrize(("method", "kind"), [("classify", "classification"), ("regress", "regression")])
def test_classify_on_a_local_model(gateway: FuzzGateway, connection: Connection, method: str, kind: str) -> None:
    """An embedded runtime's signature is a predict signature: TF Serving's 400 (it answered 501)."""
    request = Request("POST", f"/v1/models/increment_model:{method}", JSON, b'{"examples": [{"x": [1.0]}]}')
    answer = check(gateway, connection, request)
    assert answer.status == 400, answer.body
    assert f"No {kind} inputs found in SignatureDef: ".encode() in answer.body, answer.body
