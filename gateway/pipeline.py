"""The HTTP pipeline: the pure ASGI layers every request passes through, outermost first.

    UnexpectedErrors   a fault in any layer below answered 500 `internal`, the connection kept
    Observability      request id, metrics, access log           (gateway.observability)
    Auth               API keys on client routes                 (gateway.auth)
    GZip               gzip for clients that accept it, `Vary` for those that do not
    Endpoints          the predict shortcut ahead of Starlette's router, and the one answer
                       to what routes raise, in the request's error shape (gateway.answers)

Each layer is a small class; the per-request state a layer keeps while an answer goes out is
one object with `__slots__`, not closures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware as StarletteGZip
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.answers import (
    gateway_error_response,
    http_error_response,
    route_path,
    unexpected_error_response,
)
from gateway.errors import ContractViolation, GatewayError
from gateway.observability import (
    FINISHED,
    NOT_STARTED,
    PROGRESS_KEY,
    REQUEST_ID_HEADER,
    STARTED,
    Metrics,
    labels_of,
)

GZIP_MIN_BYTES = 1024  # smaller answers are sent as they are, even when gzip is accepted

class UnexpectedErrors:
    """Answers an exception raised anywhere below (a route, or a layer such as observability,
    auth or gzip) with 500 `internal` and keeps the connection; it is the outermost layer, so
    that nothing is left for uvicorn, which would drop the connection (the client's next
    request on it fails too). How far the answer had gone out, the observability layer right
    below says (it sees every message this one would; no send wrapper of its own per request)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            if scope["type"] != "http":
                raise
            await _answer_unexpected(scope, receive, send, error, scope.get(PROGRESS_KEY, NOT_STARTED))


async def _answer_unexpected(scope: Scope, receive: Receive, send: Send, error: Exception, progress: int) -> None:
    """After `error` escaped a request with its answer at `progress`: answer 500 `internal`
    (with the request id) if nothing was sent yet, only log it once the whole answer is out;
    re-raise when half an answer is out, since only closing the connection can tell the client."""
    if progress == STARTED:
        raise error
    response = unexpected_error_response(scope, error)
    if progress == FINISHED:
        return  # logged; the connection serves the next request
    request_id = scope.get("state", {}).get("request_id")
    if request_id is not None:
        response.raw_headers.append((REQUEST_ID_HEADER, request_id.encode()))
    await response(scope, receive, send)


def accepts_gzip(scope: Scope) -> bool:
    """Whether the client said `Accept-Encoding: gzip`, with a quality above 0 (`gzip;q=0` refuses it)."""
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            if b"gzip" not in value:
                return False
            if b";" not in value:
                return True  # what clients send: `gzip, deflate, br`
            return any(_gzip_quality(coding) for coding in value.lower().split(b","))
    return False


def _sends_raw_tensors(scope: Scope) -> bool:
    """Whether the request carries raw tensor bytes (`application/octet-stream`, or the Open
    Inference Protocol's binary extension): its answer is not compressed, whatever the client
    accepts. Numeric tensors barely compress (random float32: 0.93 of their size), and gzip
    would take seconds of the event loop for a large one (100 MB: 5 s at Starlette's level 9)."""
    for name, value in scope["headers"]:
        if name == b"content-type" and value.split(b";", 1)[0].strip().lower() == b"application/octet-stream":
            return True
        if name == b"inference-header-content-length":
            return True
    return False


def _gzip_quality(coding: bytes) -> bool:
    """Whether one `Accept-Encoding` element names gzip with a quality above 0."""
    name, _, parameters = coding.partition(b";")
    if name.strip() != b"gzip":
        return False
    for parameter in parameters.split(b";"):
        key, _, quality = parameter.partition(b"=")
        if key.strip() == b"q":
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return True


class GZipMiddleware(StarletteGZip):
    """Starlette's gzip, with a cheaper path for clients that do not accept gzip (most API
    clients): their answers pass through unwrapped, only gaining `Vary: Accept-Encoding` when
    they are large enough that an accepting client would have had them compressed (what
    Starlette's IdentityResponder does, without parsing every answer's headers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if accepts_gzip(scope) and not _sends_raw_tensors(scope):
                await super().__call__(scope, receive, send)
                return
            await self.app(scope, receive, _VarySender(send, self.minimum_size))
            return
        await self.app(scope, receive, send)


class _VarySender:
    """Adds `Vary: Accept-Encoding` to an answer large enough that a client accepting gzip
    would have had it compressed: an answer whose head gives its length is judged by it and
    passed on at once; another's head is held until its first body part says."""

    __slots__ = ("minimum_size", "send", "start")

    def __init__(self, send: Send, minimum_size: int) -> None:
        self.send = send
        self.minimum_size = minimum_size
        self.start: Message | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        # Not a coroutine where nothing is held: it hands on the server's own awaitable.
        if self.start is not None:
            return self._send_held(message)
        if message["type"] == "http.response.start":
            headers = message.setdefault("headers", [])
            for name, value in headers:
                if name == b"content-length":
                    if int(value) >= self.minimum_size:
                        _add_vary(headers)
                    break
            else:
                self.start = message
                return _SENT
        return self.send(message)

    async def _send_held(self, message: Message) -> None:
        start, self.start = self.start, None
        assert start is not None
        if message["type"] == "http.response.body" and (
                len(message.get("body", b"")) >= self.minimum_size or message.get("more_body", False)):
            _add_vary(start["headers"])
        await self.send(start)
        await self.send(message)


_PLAIN_CALL = Response.__call__  # an answer whose body is its `body`, sent by the shortcut itself


class _Sent:
    """An awaitable that is done already (a message held, nothing to wait for)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_SENT = _Sent()


def _add_vary(headers: list[tuple[bytes, bytes]]) -> None:
    """`Vary: Accept-Encoding` on an answer not encoded already, as Starlette's
    `MutableHeaders.add_vary_header` adds it (joined to the `Vary` values there are, in one), unless
    it is there already."""
    for name, _ in headers:
        if name == b"content-encoding" or name == b"vary":
            break
    else:  # the usual answer: neither
        headers.append((b"vary", b"Accept-Encoding"))
        return
    if any(name == b"content-encoding" or (name == b"vary" and b"accept-encoding" in value.lower())
           for name, value in headers):
        return
    varies = [value for name, value in headers if name == b"vary"]
    first = next(index for index, (name, _) in enumerate(headers) if name == b"vary")
    headers[first] = (b"vary", b", ".join([*varies, b"Accept-Encoding"]))
    headers[first + 1:] = [header for header in headers[first + 1:] if header[0] != b"vary"]


class _Started:
    """Whether the answer's head has gone out."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    def __call__(self, message: Message) -> Awaitable[None]:  # hands on the server's awaitable
        if message["type"] == "http.response.start":
            self.started = True
        return self.send(message)


class Endpoints:
    """The innermost layer: the routes, and the one answer to what they raise.

    The busiest routes, `POST /gateway/applications/{name}` (and Hydrosphere's spelling) and
    `POST /v2/models/{name}/infer`, go straight to their endpoint: matched by the prefix and
    suffix around `{name}` on the path below the root path, without
    Starlette's router (a regular expression per route tried) and its per-request wrappers,
    the endpoint's Response sent as its two messages. Every other request goes to `router`,
    which serves that route the same way when `shortcut` is empty.

    What an endpoint or the router raises is answered in the request's error shape
    (gateway.answers): a GatewayError with its status, Starlette's HTTPException (the router's
    404 and 405), anything else 500 `internal`, logged with its traceback; a request refused
    by a contract is counted. An error after the answer began goes on up (UnexpectedErrors).
    """

    __slots__ = ("metrics", "router", "shortcut")

    def __init__(self, router: ASGIApp, metrics: Metrics, shortcut: Iterable[Route] = ()) -> None:
        self.router = router
        self.metrics = metrics
        # The route each path's prefix and suffix around `{name}` stand for (the route labels the
        # request's metrics).
        self.shortcut: tuple[tuple[str, str, Route], ...] = tuple(
            (route.path.partition("{name}")[0], route.path.partition("{name}")[2], route) for route in shortcut)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        if scope["method"] == "POST" and self.shortcut:
            path = route_path(scope) if scope.get("root_path") else scope["path"]
            for prefix, suffix, route in self.shortcut:
                if path.startswith(prefix) and path.endswith(suffix):
                    name = path[len(prefix):len(path) - len(suffix)]
                    if name and "/" not in name:
                        scope["route"] = route
                        scope["path_params"] = {"name": name}
                        try:
                            response: Response = await route.endpoint(Request(scope, receive))
                        except Exception as error:  # noqa: BLE001 - answered as the router's routes are
                            response = self.answer(scope, error)
                        if type(response).__call__ is not _PLAIN_CALL:  # sent in parts (a v2 binary answer)
                            await response(scope, receive, send)
                            return
                        await send({"type": "http.response.start", "status": response.status_code,
                                    "headers": response.raw_headers})
                        await send({"type": "http.response.body", "body": response.body})
                        return
        watched = _Started(send)
        try:
            await self.router(scope, receive, watched)
        except Exception as error:  # every error is answered here unless the answer began
            if watched.started:
                raise
            await self.answer(scope, error)(scope, receive, send)

    def answer(self, scope: Scope, error: Exception) -> Response:
        """The answer to `error`, raised while serving the request."""
        if isinstance(error, GatewayError):
            if isinstance(error, ContractViolation):
                self.metrics.contract_errors.labels(labels_of(scope).get("application", "")).inc()
            return gateway_error_response(scope, error)
        if isinstance(error, HTTPException):
            return http_error_response(scope, error)
        return unexpected_error_response(scope, error)
