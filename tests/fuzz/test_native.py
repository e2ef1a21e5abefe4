"""The native routes under hostile input: `POST /gateway/applications/{name}` (and Hydrosphere's
`/gateway/application/{name}`), `POST /gateway/models/{name}[/versions/{v}|/labels/{l}]`, and
the wrong methods on them. The oracle is tests/fuzz/oracle.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import Connection, FuzzGateway, Request
from tests.fuzz.oracle import check
from tests.fuzz.routes import (
    APPLICATIONS,
    MODELS,
    fuzz_settings,
    json_body,
    outputs_of,
    post,
    served_name,
    suffix_for,
)
from tests.fuzz.strategies import common_headers, document, header_text, one_in

# The test server's float32 arithmetic on huge valid inputs overflows to Infinity (null in the answer).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


@fuzz_settings(300)
@given(data=st.data())
def test_application_route(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    prefix = data.draw(st.sampled_from(["/gateway/applications/", "/gateway/application/"]), "prefix")
    segment, name = data.draw(served_name(APPLICATIONS, valid), "application")
    fields = APPLICATIONS[name][0] if name else APPLICATIONS["increment_app"][0]
    body, headers = data.draw(json_body(document(fields, valid), valid), "request")
    check(gateway, connection, post(prefix + segment, body, headers), outputs_of(APPLICATIONS, name, binary=True))


@fuzz_settings(250)
@given(data=st.data())
def test_model_route(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    segment, name = data.draw(served_name(MODELS, valid), "model")
    suffix = data.draw(suffix_for(name, valid), "version or label")
    fields = MODELS[name][0] if name else MODELS["increment_model"][0]
    body, headers = data.draw(json_body(document(fields, valid), valid), "request")
    check(gateway, connection, post(f"/gateway/models/{segment}{suffix}", body, headers),
          outputs_of(MODELS, name, binary=True))  # a raw tensor body (any Content-Type drawn) is answered raw


@fuzz_settings(60)
@given(data=st.data())
def test_wrong_methods_and_paths(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "POST"]), "method")
    path = data.draw(st.one_of(
        st.sampled_from(["/gateway/applications/increment_app", "/gateway/application/scaler_app",
                         "/gateway/models/toy", "/gateway/models/increment_model/versions/1",
                         "/gateway/models/toy/labels/stable", "/gateway/applications/", "/gateway/applications",
                         "/gateway/models/toy/versions/x", "/gateway/applications/a/b", "/gateway",
                         "/health/live", "/health/ready", "/", "/%", "/gateway/models/%2F"]),
    ), "path")
    if data.draw(one_in(4), "query"):
        path += "?" + data.draw(st.sampled_from(["", "x=1", "a=%ff&b", "%", "number=1", "?", "#"]), "query string")
    headers = data.draw(common_headers(), "headers")
    body = data.draw(st.one_of(st.none(), st.binary(max_size=40)), "body") if method != "HEAD" else None
    check(gateway, connection, Request(method, path, tuple(headers), body))


@fuzz_settings(60)
@given(data=st.data())
def test_header_junk_on_a_valid_body(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    headers = data.draw(common_headers(), "headers")
    extra = data.draw(st.lists(st.tuples(st.sampled_from(["Content-Type", "x-request-timeout", "x-request-id",
                                                          "Accept", "x-tensor-dtype", "Authorization",
                                                          "x-api-key", "Transfer-Encoding-Junk"]),
                                         header_text), max_size=3), "more headers")
    request = post("/gateway/applications/increment_app", b'{"number": [1, 2]}', [*headers, *extra])
    check(gateway, connection, request, outputs_of(APPLICATIONS, "increment_app", binary=True))
