"""What can go wrong in a call, each mapped to the gRPC status the caller gets."""

from __future__ import annotations

import grpc


class RuntimeCallError(Exception):
    """Base: a failed call, with its gRPC status. Picklable (crosses worker processes)."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(RuntimeCallError):
    """The request does not carry what the contract needs (the caller's mistake)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotServedError(RuntimeCallError):
    """The request names a model, version or signature this runtime does not serve."""

    code = grpc.StatusCode.NOT_FOUND


class OutputError(RuntimeCallError):
    """The function returned something its output contract does not allow."""


class UserCodeError(RuntimeCallError):
    """The model's own code raised; the message is `Type: message`."""


class SignatureNotFoundError(RuntimeCallError):
    """The request names a signature the model does not have (TF Serving's Predict answer)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnsupportedError(RuntimeCallError):
    """A call the runtime does not serve for this model."""

    code = grpc.StatusCode.UNIMPLEMENTED
