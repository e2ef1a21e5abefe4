"""The binary path: `application/octet-stream` bodies with `x-tensor-dtype`, `x-tensor-shape`
and `x-tensor-name`, on every application (one input or several) and on a model route."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import Connection, FuzzGateway
from tests.fuzz.oracle import check
from tests.fuzz.routes import APPLICATIONS, MODELS, fuzz_settings, outputs_of, post, served_name
from tests.fuzz.strategies import binary_request, common_headers, valid_binary_request

# The applications a raw tensor can feed: one input, numeric.
ONE_NUMERIC_INPUT = ["increment_app", "toy_app", "matrix_app"]
BINARY_TYPES = [b"application/octet-stream", b"Application/Octet-Stream", b"application/octet-stream; charset=x",
                b" application/octet-stream "]


@fuzz_settings(250)
@given(data=st.data())
def test_binary_application_route(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    valid = data.draw(st.booleans(), "valid")
    name: str | None
    if valid:
        segment = name = data.draw(st.sampled_from(ONE_NUMERIC_INPUT), "application")
        (input_name, field), = APPLICATIONS[name][0].items()
        body, tensor_headers = data.draw(valid_binary_request(field, input_name), "tensor")
    else:
        segment, name = data.draw(served_name(APPLICATIONS), "application")
        body, tensor_headers = data.draw(binary_request(), "tensor")
    headers = data.draw(common_headers(st.sampled_from(BINARY_TYPES), benign=True if valid else None), "headers")
    headers = [(key, value) for key, value in headers if not key.startswith("x-tensor-")]
    check(gateway, connection, post(f"/gateway/applications/{segment}", body, [*headers, *tensor_headers]),
          outputs_of(APPLICATIONS, name, binary=True))


@fuzz_settings(40)
@given(data=st.data())
def test_binary_body_on_a_model_route(gateway: FuzzGateway, connection: Connection, data: st.DataObject) -> None:
    segment, name = data.draw(served_name(MODELS), "model")
    body, tensor_headers = data.draw(binary_request(), "tensor")
    headers = [("Content-Type", data.draw(st.sampled_from(BINARY_TYPES), "content type")), *tensor_headers]
    check(gateway, connection, post(f"/gateway/models/{segment}", body, headers),
          outputs_of(MODELS, name, binary=True))
