"""The gateway's one exception tree and the table from backend gRPC codes to it.

Every failure a caller can see is a `GatewayError`; foreign exceptions are translated at
the boundary where they occur, and one handler in `app.py` turns these into responses.
"""

from __future__ import annotations

from typing import Any

import grpc

from modelfolder.errors import ConfigError as ConfigError  # configuration errors: modelfolder's one class


class GatewayError(Exception):
    """Base of every error the gateway reports; carries what a response needs."""

    status: int = 500
    code: str = "internal"
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retry_after_s: int | None = None  # sent as Retry-After when set
    closes_connection: bool = False  # answered with Connection: close

    def __init__(self, message: str, *, field: str | None = None, log_detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # For the log only (with the request id): backend addresses, socket and file paths,
        # which the answer never carries.
        self.log_detail = log_detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON error shape: `{"error": {"code", "message", "field"?}}`."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class BadRequest(GatewayError):
    status, code, grpc_code = 400, "bad_request", grpc.StatusCode.INVALID_ARGUMENT


class InvalidJSON(BadRequest):
    code = "invalid_json"


class ContractViolation(BadRequest):
    """The request does not match the application's input contract."""

    code = "contract_violation"


class NotFound(GatewayError):
    status, code, grpc_code = 404, "not_found", grpc.StatusCode.NOT_FOUND


class MethodNotAllowed(GatewayError):
    status, code, grpc_code = 405, "method_not_allowed", grpc.StatusCode.UNIMPLEMENTED


class RequestTimeout(GatewayError):
    """The client did not send its request body within `limits.body_timeout_s`."""

    status, code, grpc_code = 408, "request_timeout", grpc.StatusCode.DEADLINE_EXCEEDED
    closes_connection = True  # the rest of a stalled body is not awaited


class ClientClosed(GatewayError):
    """The client closed the connection before sending its whole body (nobody reads the answer)."""

    status, code, grpc_code = 499, "client_closed_request", grpc.StatusCode.CANCELLED


class UnsupportedMediaType(GatewayError):
    status, code, grpc_code = 415, "unsupported_media_type", grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(GatewayError):
    status, code, grpc_code = 413, "payload_too_large", grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(GatewayError):
    status, code, grpc_code = 401, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    status, code, grpc_code = 403, "permission_denied", grpc.StatusCode.PERMISSION_DENIED


class TooManyRequests(GatewayError):
    """An application is at its concurrency limit."""

    status, code, grpc_code = 429, "too_many_requests", grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after_s = 1


class Overloaded(GatewayError):
    """The gateway as a whole is at its concurrency limit, or is shutting down."""

    status, code, grpc_code = 503, "overloaded", grpc.StatusCode.UNAVAILABLE
    retry_after_s = 1


class NotReady(GatewayError):
    status, code, grpc_code = 503, "not_ready", grpc.StatusCode.UNAVAILABLE


class BackendError(GatewayError):
    """A backend answered with an error or could not be reached."""

    status, code, grpc_code = 502, "backend_error", grpc.StatusCode.INTERNAL


class BackendUnavailable(BackendError):
    status, code, grpc_code = 503, "backend_unavailable", grpc.StatusCode.UNAVAILABLE
    retry_after_s = 1


class DeadlineExceeded(BackendError):
    status, code, grpc_code = 504, "deadline_exceeded", grpc.StatusCode.DEADLINE_EXCEEDED


class ModelError(BackendError):
    """The model's own code failed (an exception in user code, a broken output)."""

    status, code, grpc_code = 500, "model_error", grpc.StatusCode.INTERNAL


# Backend gRPC status -> (HTTP status, machine code). One table, used by every route.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "failed_precondition"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "out_of_range"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.ABORTED: (409, "aborted"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "resource_exhausted"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "unimplemented"),
    grpc.StatusCode.UNAVAILABLE: (503, "backend_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    grpc.StatusCode.INTERNAL: (500, "model_error"),
    grpc.StatusCode.UNKNOWN: (500, "model_error"),
    grpc.StatusCode.DATA_LOSS: (500, "data_loss"),
}


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of a number on the wire (UNKNOWN for one gRPC does not define)."""
    return _STATUS_CODES.get(number, grpc.StatusCode.UNKNOWN)


def from_grpc_status(code: grpc.StatusCode, details: str | None, target: str,
                     model: str | None = None) -> GatewayError:
    """The gateway error for a backend's gRPC status, via `GRPC_TO_HTTP`. The message names
    `model` (the model the call was for) and keeps the backend's own words, except for
    UNAVAILABLE, whose details are the transport's (addresses): those, and `target`, go to
    `log_detail`."""
    status, machine_code = GRPC_TO_HTTP.get(code, (502, "backend_error"))
    backend = f"the backend of model {model}" if model else "the backend"
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"{backend} is unavailable"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{backend} missed the deadline: {details or code.name}"
    else:
        message = details or code.name
    error_class = {503: BackendUnavailable, 504: DeadlineExceeded, 500: ModelError}.get(status, BackendError)
    error = error_class(message, log_detail=f"backend {target}: {code.name}: {details or ''}")
    error.status, error.code, error.grpc_code = status, machine_code, code
    return error
