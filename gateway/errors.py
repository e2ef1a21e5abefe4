"""The gateway's one exception tree and the table from backend gRPC codes to it.

Every failure a caller can see is a `GatewayError`; foreign exceptions are translated at
the boundary where they occur, and one handler in `app.py` turns these into responses.
"""

from __future__ import annotations

import copy
from typing import Any, Self

import grpc

from modelfolder.errors import ConfigError as ConfigError  # configuration errors: modelfolder's one class
from tensorcodecs import CodecError


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

    def with_prefix(self, prefix: str) -> Self:
        """A new error of the same class, status, machine and gRPC code, field and log detail,
        its message prefixed (`stage 2 (s2:1): ...`); this one is left as it was (errors are
        raised fresh, never changed once raised)."""
        error = copy.copy(self)  # the class, and what an instance overrides (a grpc_code kept)
        error.message = prefix + self.message
        error.args = (error.message,)
        return error

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


class Conflict(GatewayError):
    """The change cannot be made in the state things are in: a read-only config directory, a
    model version an application uses."""

    status, code, grpc_code = 409, "conflict", grpc.StatusCode.FAILED_PRECONDITION


class InvalidManifest(GatewayError):
    """A manifest sent to the admin API is invalid (`file:line: field: why`, as at start-up)."""

    status, code, grpc_code = 422, "invalid_manifest", grpc.StatusCode.INVALID_ARGUMENT


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


class ApplicationContractMismatch(NotReady):
    """The contracts an application's backends describe do not fit together (a stage's variants
    differ, or a stage takes what the stage before does not give): it answers nothing until a
    rediscovery finds them fitting, rather than a wrong answer."""

    code = "application_contract_mismatch"


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


class OutputContractViolation(BackendError):
    """A model answered outputs its contract does not allow (an application's
    `validate_outputs: true`): the backend's fault, never passed on as an answer."""

    status, code, grpc_code = 502, "output_contract_violation", grpc.StatusCode.INTERNAL


# ---------------------------------------------------------------- a backend's gRPC status
# One class per status a backend can answer with (what `from_grpc_status` raises): each is a
# BackendError (a backend failure, which the circuit breaker and the health check count) and,
# where the gateway has an error of the same kind, that error too, so that `except BadRequest`
# also catches a backend's INVALID_ARGUMENT and `except NotFound` its NOT_FOUND.


class BackendInvalidArgument(BackendError, BadRequest):
    status, code, grpc_code = 400, "invalid_argument", grpc.StatusCode.INVALID_ARGUMENT


class BackendFailedPrecondition(BackendError, BadRequest):
    status, code, grpc_code = 400, "failed_precondition", grpc.StatusCode.FAILED_PRECONDITION


class BackendOutOfRange(BackendError, BadRequest):
    status, code, grpc_code = 400, "out_of_range", grpc.StatusCode.OUT_OF_RANGE


class BackendNotFound(BackendError, NotFound):
    status, code, grpc_code = 404, "not_found", grpc.StatusCode.NOT_FOUND


class BackendAlreadyExists(BackendError):
    status, code, grpc_code = 409, "already_exists", grpc.StatusCode.ALREADY_EXISTS


class BackendAborted(BackendError):
    status, code, grpc_code = 409, "aborted", grpc.StatusCode.ABORTED


class BackendUnauthenticated(BackendError):
    """The backend refused the gateway's credentials (not the client's: `Unauthenticated`)."""

    status, code, grpc_code = 401, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED


class BackendPermissionDenied(BackendError):
    status, code, grpc_code = 403, "permission_denied", grpc.StatusCode.PERMISSION_DENIED


class BackendResourceExhausted(BackendError):
    """The backend is out of a resource (no Retry-After: the backend gave no time)."""

    status, code, grpc_code = 429, "resource_exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendCancelled(BackendError):
    status, code, grpc_code = 499, "cancelled", grpc.StatusCode.CANCELLED


class BackendUnimplemented(BackendError):
    status, code, grpc_code = 501, "unimplemented", grpc.StatusCode.UNIMPLEMENTED


class BackendUnknown(ModelError):
    status, code, grpc_code = 500, "model_error", grpc.StatusCode.UNKNOWN


class BackendDataLoss(ModelError):
    status, code, grpc_code = 500, "data_loss", grpc.StatusCode.DATA_LOSS


# Backend gRPC status -> the error raised for it. One table, used by every route.
BACKEND_ERRORS: dict[grpc.StatusCode, type[BackendError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: BackendInvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: BackendFailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: BackendOutOfRange,
    grpc.StatusCode.NOT_FOUND: BackendNotFound,
    grpc.StatusCode.ALREADY_EXISTS: BackendAlreadyExists,
    grpc.StatusCode.ABORTED: BackendAborted,
    grpc.StatusCode.UNAUTHENTICATED: BackendUnauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: BackendPermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BackendResourceExhausted,
    grpc.StatusCode.CANCELLED: BackendCancelled,
    grpc.StatusCode.UNIMPLEMENTED: BackendUnimplemented,
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: ModelError,
    grpc.StatusCode.UNKNOWN: BackendUnknown,
    grpc.StatusCode.DATA_LOSS: BackendDataLoss,
}

# Backend gRPC status -> (HTTP status, machine code), read from the table above.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    code: (error.status, error.code) for code, error in BACKEND_ERRORS.items()}


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of a number on the wire (UNKNOWN for one gRPC does not define)."""
    return _STATUS_CODES.get(number, grpc.StatusCode.UNKNOWN)


def from_grpc_status(code: grpc.StatusCode, details: str | None, target: str,
                     model: str | None = None) -> BackendError:
    """The error of `BACKEND_ERRORS` for a backend's gRPC status (a new instance). The message
    names `model` (the model the call was for) and keeps the backend's own words, except for
    UNAVAILABLE, whose details are the transport's (addresses): those, and `target`, go to
    `log_detail`."""
    backend = f"the backend of model {model}" if model else "the backend"
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"{backend} is unavailable"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{backend} missed the deadline: {details or code.name}"
    else:
        message = details or code.name
    log_detail = f"backend {target}: {code.name}: {details or ''}"
    error_class = BACKEND_ERRORS.get(code)
    if error_class is None:  # a code outside the table (OK): a BackendError that keeps it
        error = BackendError(message, log_detail=log_detail)
        error.grpc_code = code
        return error
    return error_class(message, log_detail=log_detail)


# ---------------------------------------------------------------- codec errors


class CodecErrors:
    """What the codecs' `CodecError` becomes at one decode step: the one translation of codec
    errors into the gateway's tree. A step names its kind once, in a constant built at import
    (or once per backend), and translates where it decodes (a step whose field is known only per
    request builds its translation in the `except`, which runs only when a decode fails):

        _CONTRACT_VIOLATION = codec_errors(ContractViolation)
        try:
            inputs = decode_inputs(...)
        except CodecError as error:
            raise _CONTRACT_VIOLATION.translate(error) from None

    (a try costs nothing until a decode fails; a context manager would cost ~0.25 µs per step,
    several per request on the predict path)."""

    __slots__ = ("field", "kind", "log_detail", "prefix")

    def __init__(self, kind: type[GatewayError], *, field: str | None = None, prefix: str | None = None,
                 log_detail: str | None = None) -> None:
        self.kind = kind
        self.field = field
        self.prefix = prefix
        self.log_detail = log_detail

    def translate(self, error: CodecError) -> GatewayError:
        """A new gateway error for `error`: a client's keeps the codec's message and field (or
        `field`); one about a backend's answer (`prefix` set) says what the backend answered,
        the field in its text, and keeps the backend's address for the log."""
        if self.prefix is None:
            return self.kind(error.message, field=self.field or error.field)
        return self.kind(f"{self.prefix}{error}", log_detail=self.log_detail)


def codec_errors(kind: type[GatewayError], field: str | None = None) -> CodecErrors:
    """Decoding a client's input: a `CodecError` becomes `kind` (InvalidJSON, ContractViolation,
    BadRequest...) with the codec's message and field, or `field` when the codec does not know
    which input it read (a header's value)."""
    return CodecErrors(kind, field=field)


def answer_errors(model: str, target: str, what: str, kind: type[BackendError] = BackendError) -> CodecErrors:
    """Decoding a backend's answer: a `CodecError` is the backend's failure, not the client's:
    `kind` (a BackendError, 502) saying "the backend of model {model} answered {what}: ...",
    with `backend {target}` for the log. Build it once per backend."""
    return CodecErrors(kind, prefix=f"the backend of model {model} answered {what}: ",
                       log_detail=f"backend {target}")
