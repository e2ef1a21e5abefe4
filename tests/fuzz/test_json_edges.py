"""Bodies that only the standard library's JSON parser sees (those with NaN or Infinity, which
orjson refuses): lone surrogates and deep nesting there answer 400 as they do without the
token, on every route (they answered 500, and reset the connection, from that parser)."""

from __future__ import annotations

import pytest

from tests.fuzz.harness import Connection, FuzzGateway, Request
from tests.fuzz.oracle import check

JSON = (("Content-Type", b"application/json"),)
ROUTES = {
    "application": ("/gateway/applications/scaler_app", '{{"features": [[NaN, 1, 2]], "unit": {}}}'),
    "application-key": ("/gateway/applications/increment_app", '{{"number": [1], "\\ud800": {}}}'),
    "model-key": ("/gateway/models/increment_model", '{{"number": [1], "\\udc00x": {}}}'),
    "v1-predict": ("/v1/models/toy:predict", '{{"instances": [[1, 2]], "signature_name": {}}}'),
    "v1-classify": ("/v1/models/toy:classify", '{{"examples": [{{"x": [1.0]}}], "signature_name": {}}}'),
    "v1-regress": ("/v1/models/toy:regress", '{{"examples": [{{"x": [1.0]}}], "context": {}}}'),
}
VALUES = {
    "lone-high-surrogate": r'["\ud800", NaN]',
    "lone-low-surrogate-key": r'{"\udc00": NaN}',
    "surrogate-string": r'"\udfff"',
    "deep-with-nan": "[" * 1000 + "NaN" + "]" * 1000,
    "deeper-with-nan": '{"a":' * 1030 + "NaN" + "}" * 1030,
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("value", sorted(VALUES))
def test_bodies_for_the_fallback_parser(gateway: FuzzGateway, connection: Connection, route: str,
                                        value: str) -> None:
    path, template = ROUTES[route]
    body = template.format(VALUES[value])
    if "NaN" not in body:
        body = body[:-1] + ', "y": NaN}'
    answer = check(gateway, connection, Request("POST", path, JSON, body.encode()))
    assert answer.status == 400, answer.body


def test_a_valid_surrogate_pair_with_nan_is_read(gateway: FuzzGateway, connection: Connection) -> None:
    body = rb'{"features": [[NaN, 1, 2]], "unit": "\ud83d\ude00"}'
    answer = check(gateway, connection, Request("POST", "/v1/models/scaler_model:predict", JSON,
                                                b'{"inputs": ' + body + b"}"))
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("levels", [1024, 1025, 1100])
def test_nesting_with_nan_is_bounded_as_without(gateway: FuzzGateway, connection: Connection, levels: int) -> None:
    """orjson's bound (1024 levels) holds for bodies only the standard library parses, whatever
    the interpreter's recursion limit (hypothesis raises it while its tests run)."""
    inner = "[" * (levels - 2) + "{}" + "]" * (levels - 2)
    body = f'{{"instances": [[1, 2]], "signature_name": {inner}, "x": NaN}}'.encode()
    answer = check(gateway, connection, Request("POST", "/v1/models/toy:predict", JSON, body))
    assert answer.status == 400, answer.body
    if levels > 1024:
        assert b"depth limit exceeded" in answer.body or b"nested deeper than 1024" in answer.body, answer.body
