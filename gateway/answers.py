"""Error answers: which shape an error takes, chosen in one place from the API surface the
request is on, and the one renderer of each shape.

    native       {"error": {"code": "...", "message": "...", "field": "..."}}   (field when known)
    TF Serving   {"error": "..."}                                               (its REST API, /v1/models)
    v2 (OIP)     {"error": "field: ..."}                                        (KServe v2 REST, /v2)

Every place that answers an error uses `error_response`: route errors, auth refusals, 404/405,
body limits, unexpected faults (gateway.pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import orjson
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope

from gateway.errors import GatewayError

log = logging.getLogger("gateway")

SHAPE_KEY = "gateway.error_shape"  # where a route that accepts several dialects names the request's
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media_type"}


class Renderer(Protocol):
    """Renders an error body from its machine code, message and field."""

    def __call__(self, code: str, message: str, field: str | None = None) -> bytes: ...


def native_body(code: str, message: str, field: str | None = None) -> bytes:
    """The native error body: `{"error": {"code", "message", "field"?}}`."""
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"error": error})


def tf_serving_body(code: str, message: str, field: str | None = None) -> bytes:
    """TF Serving's error body: `{"error": "message"}` (no machine code, no field)."""
    return orjson.dumps({"error": message})


def message_body(code: str, message: str, field: str | None = None) -> bytes:
    """`{"error": "field: message"}`: one message, which names the field when one is known (the
    Open Inference Protocol's shape has no field of its own)."""
    return orjson.dumps({"error": f"{field}: {message}" if field else message})


class ErrorShape:
    """One shape of error answers: its body's renderer, and the `Allow` its 405s name (when
    its API says which methods it takes)."""

    __slots__ = ("allow", "body", "name")

    def __init__(self, name: str, body: Renderer, allow: str | None = None) -> None:
        self.name = name
        self.body = body
        self.allow = allow

    def __repr__(self) -> str:
        return f"ErrorShape({self.name})"


NATIVE = ErrorShape("native", native_body)
TF_SERVING = ErrorShape("tensorflow-serving", tf_serving_body, allow="GET, POST")
# The Open Inference Protocol's REST errors: one message (its spec, Triton, MLServer).
OPEN_INFERENCE = ErrorShape("open-inference-protocol", message_body)

# The API surfaces whose errors are not native, by the path of the routes that serve them.
SURFACES: tuple[tuple[str, ErrorShape], ...] = (("/v1/models", TF_SERVING), ("/v2", OPEN_INFERENCE))


def route_path(scope: Scope) -> str:
    """The request's path below the app's `root_path` (what routes match), as Starlette's router
    computes it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root):]
    return path


def error_shape(scope: Scope) -> ErrorShape:
    """The shape of the request's error answers: the dialect its route named (`SHAPE_KEY`, for
    a route that accepts several), else the API surface of the route that serves it; before
    routing (auth refusals) or when no route matches, the surface whose prefix its path has
    (native when none)."""
    shape: ErrorShape | None = scope.get(SHAPE_KEY)
    if shape is not None:
        return shape
    route = scope.get("route")
    # A route's path starts with the text it matches: the prefix of the request's path tells
    # the surface without walking the routes' patterns (a refusal flood must stay cheap).
    path = getattr(route, "path", None) if route is not None else route_path(scope)
    if path is not None:
        for prefix, surface_shape in SURFACES:
            if path.startswith(prefix):
                return surface_shape
    return NATIVE


def error_response(scope: Scope, status: int, code: str, message: str, field: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    """An error answer in the request's shape."""
    shape = error_shape(scope)
    if status == 405 and shape.allow is not None:  # the surface's own Allow, in place of the router's
        headers = {**{name: value for name, value in (headers or {}).items() if name.lower() != "allow"},
                   "allow": shape.allow}
    return Response(shape.body(code, message, field), status, headers, "application/json")


def request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", "-"))


def url_path(scope: Scope) -> str:
    """The path as error messages and logs name it (Starlette's `request.url.path`)."""
    return URL(scope=scope).path


def gateway_error_response(scope: Scope, error: GatewayError,
                           headers: Mapping[str, str] | None = None) -> Response:
    """The answer to a GatewayError (logged with its detail when it is the gateway's or a
    backend's fault, 5xx)."""
    if error.status >= 500:
        log.warning("request %s: %s %s -> %s %s: %s [%s]", request_id(scope), scope["method"],
                    url_path(scope), error.status, error.code, error.message, error.log_detail or "")
    extra = dict(headers or {})
    if error.retry_after_s is not None:
        extra["retry-after"] = str(error.retry_after_s)
    if error.closes_connection:
        extra["connection"] = "close"
    return error_response(scope, error.status, error.code, error.message, error.field, extra)


def http_error_response(scope: Scope, error: HTTPException) -> Response:
    """The answer to Starlette's HTTPException (the router's 404 and 405)."""
    status = error.status_code
    message = error.detail
    if status == 404:
        message = f"no route for {scope['method']} {url_path(scope)}"
    elif status == 405:
        message = f"method {scope['method']} is not allowed on {url_path(scope)}"
    return error_response(scope, status, _HTTP_CODES.get(status, "http_error"), message, headers=error.headers)


def unexpected_error_response(scope: Scope, error: BaseException) -> Response:
    """500 `internal` for a fault in the gateway itself, logged with its traceback under the
    request id the answer names."""
    request = request_id(scope)
    log.error("request %s: unexpected error on %s %s", request, scope.get("method"), url_path(scope),
              exc_info=error)
    return error_response(scope, 500, "internal", f"internal error (request {request}, see the log)")
