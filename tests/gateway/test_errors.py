"""The error tree and the gRPC status table."""

from __future__ import annotations

import grpc
import pytest

from gateway.errors import (
    GRPC_TO_HTTP,
    BackendUnavailable,
    ContractViolation,
    DeadlineExceeded,
    ModelError,
    from_grpc_status,
)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_grpc_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    assert GRPC_TO_HTTP[code][0] == status
    assert from_grpc_status(code, "details", "host:1").status == status


def test_every_grpc_code_but_ok_is_mapped() -> None:
    assert set(GRPC_TO_HTTP) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_error_classes_follow_the_status() -> None:
    assert isinstance(from_grpc_status(grpc.StatusCode.UNAVAILABLE, None, "h:1"), BackendUnavailable)
    assert isinstance(from_grpc_status(grpc.StatusCode.DEADLINE_EXCEEDED, None, "h:1"), DeadlineExceeded)
    error = from_grpc_status(grpc.StatusCode.INTERNAL, "ValueError: boom", "h:1")
    assert isinstance(error, ModelError)
    assert error.to_dict() == {"error": {"code": "model_error", "message": "ValueError: boom"}}


def test_json_shape_carries_the_field() -> None:
    error = ContractViolation("expected an integer", field="number[2][0]")
    assert error.status == 400
    assert error.to_dict() == {
        "error": {"code": "contract_violation", "message": "expected an integer", "field": "number[2][0]"}
    }
