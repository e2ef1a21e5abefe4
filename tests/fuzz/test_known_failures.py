"""The failure classes the fuzz suite found, one narrow test each, marked strict xfail: each
fails today, and flags (XPASS) as soon as a fix lands, so that its exclusion from the main
properties (named in each reason) can be lifted. The oracle is the main suite's."""

from __future__ import annotations

import pytest

from tests.fuzz.harness import Connection, FuzzGateway, Request
from tests.fuzz.oracle import Expect, check

JSON = (("Content-Type", b"application/json"),)
BINARY = (("Content-Type", b"application/octet-stream"),)
DEPTHS = (65, 100, 512, 1023)


def known(reason: str) -> pytest.MarkDecorator:
    """A failure class seen today: the test must fail (with the oracle's AssertionError)."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


def nest(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@known("lists nested 65-1023 deep answer 500 (numpy's 64 dimensions); "
       "excluded from the main properties by strategies.DEEP_LISTS")
@pytest.mark.parametrize(("path", "template"), ids=["application", "model", "v1-instances", "v1-inputs"], argvalues=[
    ("/gateway/applications/increment_app", '{{"number": {}}}'),
    ("/gateway/models/toy", '{{"input_1": {}}}'),
    ("/v1/models/toy:predict", '{{"instances": {}}}'),
    ("/v1/models/increment_model:predict", '{{"inputs": {}}}'),
])
def test_lists_nested_65_to_1023_deep(gateway: FuzzGateway, connection: Connection, path: str,
                                      template: str) -> None:
    for depth in DEPTHS:
        check(gateway, connection, Request("POST", path, JSON, template.format(nest(depth)).encode()))


@known("an unexpected error (500 internal) resets the keep-alive connection "
       "outside the application fast path; triggered here by a 100-deep list")
@pytest.mark.parametrize(("path", "body"), ids=["model", "v1"], argvalues=[
    ("/gateway/models/toy", f'{{"input_1": {nest(100)}}}'),
    ("/v1/models/toy:predict", f'{{"instances": {nest(100)}}}'),
])
def test_an_unexpected_error_keeps_the_connection(gateway: FuzzGateway, connection: Connection, path: str,
                                                   body: str) -> None:
    try:
        answer = connection.exchange(Request("POST", path, JSON, body.encode()))
    except OSError as error:
        raise AssertionError(f"the connection failed before an answer: {error}") from None
    assert answer.kept_alive, answer.follow_up


@known("an x-tensor-shape size beyond int64 answers 500 (np.prod overflows); "
       "excluded from the main properties by strategies.shape_in_range")
@pytest.mark.parametrize("shape", [b"99999999999999999999", b"18446744073709551616", b"1,99999999999999999999"])
def test_x_tensor_shape_beyond_int64(gateway: FuzzGateway, connection: Connection, shape: bytes) -> None:
    request = Request("POST", "/gateway/applications/matrix_app", (*BINARY, ("x-tensor-shape", shape)), b"")
    check(gateway, connection, request)


@known("x-tensor-shape sizes whose product wraps to the body's size in 64 bits "
       "answer 500 (reshape fails); excluded by strategies.shape_sizes")
@pytest.mark.parametrize(("shape", "body"), ids=["2**64", "2**62*4", "7*inverse"], argvalues=[
    (b"4294967296,4294967296", b""), (b"4611686018427387904,4", b""),
    (b"7,7905747460161236407", b"\0" * 4),  # 1 element, once wrapped
])
def test_x_tensor_shape_product_wrapping_in_64_bits(gateway: FuzzGateway, connection: Connection, shape: bytes,
                                                    body: bytes) -> None:
    request = Request("POST", "/gateway/applications/matrix_app", (*BINARY, ("x-tensor-shape", shape)), body)
    check(gateway, connection, request)


@known("native answers write bare NaN/Infinity, which strict JSON refuses; "
       "excluded from the main properties by oracle.KNOWN_NATIVE_NON_FINITE")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the test server's arithmetic
@pytest.mark.parametrize(("path", "body"), ids=["nan-application", "infinity-model", "overflow-application"],
                         argvalues=[
    ("/gateway/applications/scaler_app", b'{"features": [[NaN, 1, 2]], "unit": "cm"}'),
    ("/gateway/models/toy", b'{"input_1": [[Infinity, 1]]}'),
    ("/gateway/applications/toy_app", b'{"input_1": [[3e38, 3e38]]}'),  # finite input, the sum overflows
])
def test_native_answers_are_strict_json(gateway: FuzzGateway, connection: Connection, path: str,
                                        body: bytes) -> None:
    check(gateway, connection, Request("POST", path, JSON, body), Expect(), skip_known=False)


@known("a percent-encoded newline in a /v1 path misses the TF routes "
       "({rest:path} does not match it): Starlette's 404 shape, not TF's; "
       "excluded by test_tfserving.NEWLINE")
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/models/toy/labels/%0A:predict"),
                                              ("GET", "/v1/models/to%0Ay")])
def test_a_newline_in_a_tf_path(gateway: FuzzGateway, connection: Connection, method: str, path: str) -> None:
    body = b'{"instances": [[1, 2]]}' if method == "POST" else None
    check(gateway, connection, Request(method, path, JSON if body else (), body))


@known(":classify/:regress on an embedded-runtime model answer 501 "
       "'Method not found!' (TF Serving: 400 for a signature that cannot "
       "classify); excluded by test_tfserving.REMOTE")
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_on_a_local_model(gateway: FuzzGateway, connection: Connection, method: str) -> None:
    request = Request("POST", f"/v1/models/increment_model:{method}", JSON, b'{"examples": [{"x": [1.0]}]}')
    check(gateway, connection, request)
