"""The exit status of the commands that call a running gateway (`predict`, `list`), one per
kind of failure, chosen from the client's exception (gateway.client.errors) in one table."""

from __future__ import annotations

from gateway.client import GatewayTimeout, GatewayUnreachable, UnexpectedAnswer
from gateway.errors import GatewayError, NotFound, PermissionDenied, Unauthenticated

OK = 0
USAGE = 2  # a bad option, input that is not a JSON object, a file that cannot be read
REFUSED = 3  # the gateway refused the request (4xx): bad input, contract violation, too large
NOT_FOUND = 4  # no such application, model, version or label
DENIED = 5  # no or unknown API key (401), a key not allowed this application (403)
BUSY = 6  # overloaded, at the concurrency limit or not ready (429 / 503), still after the retries
FAILED = 7  # the model or its backend failed (5xx: model_error, backend_error, deadline_exceeded)
UNREACHABLE = 8  # no answer: the connection was refused or broke, or the timeout passed
NOT_A_GATEWAY = 9  # an answer, but not a gateway's (not its JSON): a wrong --url, a proxy's page

# First match wins: the client's own classes subclass the gateway's 503 and 504 ones.
_BY_CLASS: tuple[tuple[type[GatewayError], int], ...] = (
    (UnexpectedAnswer, NOT_A_GATEWAY),
    (GatewayUnreachable, UNREACHABLE),
    (GatewayTimeout, UNREACHABLE),
    (NotFound, NOT_FOUND),
    (Unauthenticated, DENIED),
    (PermissionDenied, DENIED),
)

EPILOG = """exit status: 0 answered, 2 bad usage or unreadable input, 3 the gateway refused the request
(4xx: bad input, contract violation), 4 not found, 5 unauthenticated or forbidden, 6 overloaded or
not ready after the retries (429, 503), 7 the model or its backend failed (5xx), 8 the gateway could
not be reached or did not answer in time, 9 the answer was not a gateway's (a wrong --url, a proxy)"""


def exit_status(error: GatewayError) -> int:
    """The exit status for a failed call."""
    for kind, status in _BY_CLASS:
        if isinstance(error, kind):
            return status
    if error.status in (429, 503):
        return BUSY
    if error.status is not None and error.status >= 500:
        return FAILED
    return REFUSED
