"""The client's exceptions: the gateway's own error tree (gateway/errors.py), chosen by the
answer's machine `code`, plus what only a client sees (no answer at all, or one that is not the
gateway's).

    answer                                          raised
    an error answer {"error": {"code": C, ...}}     the class of gateway.errors whose `code` is C (the
                                                    one nearest the root of the tree when several share
                                                    it: `not_found` is NotFound, not BackendNotFound)
    an error answer with a code the tree lacks      the class nearest the root with the answer's status,
                                                    else GatewayError
    no connection (refused, unknown host, or not    GatewayUnreachable (a BackendUnavailable: to the
    made within the connect timeout)                client the gateway is the backend it cannot reach)
    the connection broke once the request was sent  ConnectionLost (a GatewayUnreachable)
    no whole answer within `timeout` or deadline    GatewayTimeout (a DeadlineExceeded)
    an answer that is not the gateway's             UnexpectedAnswer (a BackendError; the CLI exits 9)

Every instance carries `status` (None when nothing was answered), `code`, `message`, `field`,
`request_id` (the answer's `x-request-id`) and `retry_after_s` (the answer's Retry-After, seconds).
A call on a closed client raises RuntimeError, not one of these: it is a mistake in the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway import errors as tree
from gateway.errors import BackendError, BackendUnavailable, DeadlineExceeded, GatewayError


class GatewayUnreachable(BackendUnavailable):
    """The gateway could not be reached: the connection was refused or reset, the host unknown."""

    status, code = 503, "gateway_unreachable"


class ConnectionLost(GatewayUnreachable):
    """The connection broke after the request was sent: the gateway may have run it (not retried)."""

    code = "connection_lost"


class GatewayTimeout(DeadlineExceeded):
    """The gateway did not answer within the client's timeout or total deadline."""

    status, code = 504, "gateway_timeout"


class UnexpectedAnswer(BackendError):
    """The server answered something the gateway does not (not JSON, not its error shape): a proxy
    in between, or another service on that address."""

    status, code = 502, "unexpected_answer"


def _subclasses(root: type[GatewayError]) -> Iterator[type[GatewayError]]:
    """The tree below `root`, breadth first (nearer the root first, then in definition order)."""
    level = [root]
    while level:
        yield from level
        level = [child for parent in level for child in parent.__subclasses__() if child.__module__ == tree.__name__]


def _first_by(attribute: str) -> dict[Any, type[GatewayError]]:
    table: dict[Any, type[GatewayError]] = {}
    for error in _subclasses(GatewayError):
        table.setdefault(getattr(error, attribute), error)
    return table


# The answer's machine code -> the gateway's class; derived from the tree, never listed by hand.
ERRORS_BY_CODE: dict[str, type[GatewayError]] = _first_by("code")
ERRORS_BY_STATUS: dict[int, type[GatewayError]] = _first_by("status")


def error_for(status: int | None, code: str, message: str, *, field: str | None = None,
              request_id: str | None = None, retry_after_s: float | None = None,
              kind: type[GatewayError] | None = None) -> GatewayError:
    """A new error of the class the tree has for `code` (else `status`; `kind` forces one), with
    what the answer said."""
    if kind is None:
        kind = ERRORS_BY_CODE.get(code) or (ERRORS_BY_STATUS.get(status) if status is not None else None) \
            or GatewayError
    error = kind(message, field=field)
    error.status = status  # type: ignore[assignment]  # None: nothing was answered
    error.code = code or kind.code  # TF Serving's `{"error": "..."}` (the /v1 routes) names no code
    error.request_id = request_id  # type: ignore[attr-defined]
    error.retry_after_s = retry_after_s  # type: ignore[assignment]
    return error


def describe(error: GatewayError) -> str:
    """One line for a person: `404 not_found: no application 'x' (request 1a2b)`."""
    status = f"{error.status} " if error.status is not None else ""
    field = f" [field {error.field}]" if error.field else ""
    request_id = getattr(error, "request_id", None)
    request = f" (request {request_id})" if request_id else ""
    return f"{status}{error.code}: {error.message}{field}{request}"
