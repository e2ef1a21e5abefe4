"""`create_app`: the one place that wires routes, middleware, error handlers and lifespan."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware as StarletteGZip
from starlette.middleware.gzip import GZipResponder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, AuthMiddleware
from gateway.backends.pool import ChannelPool
from gateway.dataplane import DISCOVERY_TIMEOUT_S, DataPlane
from gateway.errors import ContractViolation, GatewayError
from gateway.health_watch import HealthWatcher
from gateway.manifests import Config, load_config
from gateway.observability import (
    CIRCUIT_STATES,
    REQUEST_ID_HEADER,
    AccessLog,
    Metrics,
    ObservabilityMiddleware,
    RequestObserver,
)
from gateway.registry import Registry
from gateway.reload import Reloader
from gateway.routes import admin, health, metrics, native, tfserving
from gateway.settings import Settings
from gateway.supervisor import Supervisor

log = logging.getLogger("gateway")

GZIP_MIN_BYTES = 1024  # smaller answers are sent as they are, even when gzip is accepted
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
              415: "unsupported_media_type"}


def create_app(settings: Settings, config: Config | None = None,
               failed: Mapping[tuple[str, int], str] | None = None,
               supervisor: Supervisor | None = None) -> GatewayApp:
    """The gateway as an ASGI app serving `config` (read from `settings.config_dir` if None).

    `failed` names local models whose runtime could not start, with the reason; `supervisor`
    (from `gateway serve`) runs the local models' runtimes and is asked for new ones on reload.
    """
    config = config if config is not None else load_config(settings.config_dir)
    meters = Metrics()
    observer = RequestObserver(meters, AccessLog(meters) if settings.access_log else None)
    authenticator = Authenticator(settings.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = ChannelPool(settings.retry_attempts, settings.circuit_failures, settings.circuit_cooldown_s,
                           on_circuit_change=lambda target, state: meters.circuit_state.labels(target).set(
                               CIRCUIT_STATES[state.value]))
        app.state.settings = settings
        app.state.metrics = meters
        app.state.draining = False
        dataplane = DataPlane(Registry.build(config, pool, failed), settings.max_concurrency, meters)
        app.state.dataplane = dataplane
        # Contracts not in the manifests come from the backends' metadata (again on first use
        # for those that cannot answer yet).
        await dataplane.discover(min(settings.request_timeout_s, DISCOVERY_TIMEOUT_S))
        watcher = HealthWatcher(dataplane, settings.health_interval_s, settings.health_check_timeout_s)
        await watcher.check_now()
        watcher.start()
        app.state.health = watcher
        app.state.reloader = Reloader(settings, config, dataplane, pool, watcher, supervisor)
        try:
            yield
        finally:
            await watcher.stop()
            await app.state.reloader.close()
            await pool.close(grace=settings.drain_timeout_s)
            if observer.access_log is not None:
                observer.access_log.close()

    app = GatewayApp(
        PredictFastPath(observer, authenticator),
        routes=[*native.routes, *tfserving.routes, *admin.routes, *health.routes, *metrics.routes],
        middleware=[Middleware(UnexpectedErrors),  # outermost: a fault in any layer is answered too
                    Middleware(ObservabilityMiddleware, observer=observer),
                    Middleware(AuthMiddleware, authenticator=authenticator),
                    Middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES)],
        exception_handlers={GatewayError: gateway_error, HTTPException: http_error,
                            Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.observer = observer
    # A path with a trailing slash is a 404, not a redirect: Starlette builds its redirect's
    # Location from the client's Host header.
    app.router.redirect_slashes = False
    return app


class GatewayApp(Starlette):
    """Starlette, with the busiest route served by `fast_path` before any middleware."""

    def __init__(self, fast_path: PredictFastPath | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_path = fast_path  # None: every request through the stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.fast_path is not None:
            name = self.fast_path.application_name(scope["path"])
            if name is not None:
                scope["app"] = self
                await self.fast_path(scope, receive, send, name)
                return
        await super().__call__(scope, receive, send)


class PredictFastPath:
    """`POST /gateway/applications/{name}` (and Hydrosphere's spelling) in one coroutine: what
    the middleware stack does for every request (request id, API key, metrics, access log,
    gzip, error answers), done inline around the same handler, without Starlette's router,
    middleware layers and response objects in between (~25 % less CPU per request). The
    answers, headers, metrics and logs are the ones the stack would give; tests hold both
    paths to that."""

    def __init__(self, observer: RequestObserver, authenticator: Authenticator) -> None:
        self.observer = observer
        self.authenticator = authenticator
        # The routes it stands for, by path prefix (the route labels the request's metrics).
        self.routes = {route.path.removesuffix("{name}"): route for route in native.routes
                       if route.endpoint is native.predict_application}

    def application_name(self, path: str) -> str | None:
        """The application a path asks for, when it is this route's."""
        for prefix in self.routes:
            if path.startswith(prefix):
                name = path[len(prefix):]
                if name and "/" not in name:
                    return name
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        started = time.perf_counter()
        status, bytes_in, bytes_out = 500, 0, 0
        phase = _BEFORE_ANSWER  # as UnexpectedErrors tracks it

        async def receive_counting() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_tracking(message: Message) -> None:  # the phase moves with what is sent
            nonlocal phase, status
            if message["type"] == "http.response.start":
                phase, status = _ANSWERING, message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                phase = _ANSWERED

        try:
            request_id = self.observer.begin(scope)
            try:
                if not self.authenticator.admit(scope):
                    response = self.authenticator.refusal(scope)  # before routing, as in the stack
                else:
                    scope["path_params"] = {"name": name}
                    scope["route"] = self.routes[scope["path"][:-len(name)]]
                    request = Request(scope, receive_counting)
                    try:
                        response = await native.predict_application(request)
                    except GatewayError as error:
                        response = await gateway_error(request, error)
                    except Exception as error:  # noqa: BLE001 - answered as the app's handler would
                        response = await unexpected_error(request, error)
                bytes_out = await self._send(scope, receive, send_tracking, response, request_id)
            finally:
                self.observer.end(scope, status, bytes_in, bytes_out, started)
        except Exception as error:  # noqa: BLE001 - answered, logged or re-raised by phase
            await _answer_unexpected(scope, receive, send, error, phase)

    @staticmethod
    async def _send(scope: Scope, receive: Receive, send: Send, response: Response, request_id: bytes) -> int:
        """Send `response` as the middleware stack would; return the body bytes sent."""
        headers = [*response.raw_headers, (REQUEST_ID_HEADER, request_id)]
        body = response.body
        if accepts_gzip(scope):
            sizes = [0]

            async def send_counting(message: Message) -> None:
                if message["type"] == "http.response.body":
                    sizes[0] += len(message.get("body", b""))
                await send(message)

            response.raw_headers = headers
            await GZipResponder(response, GZIP_MIN_BYTES)(scope, receive, send_counting)
            return sizes[0]
        if len(body) >= GZIP_MIN_BYTES:
            headers.append((b"vary", b"Accept-Encoding"))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return len(body)


def accepts_gzip(scope: Scope) -> bool:
    """Whether the client said `Accept-Encoding: gzip`."""
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return b"gzip" in value
    return False


class GZipMiddleware(StarletteGZip):
    """Starlette's gzip, with a cheaper path for clients that do not accept gzip (most API
    clients): their answers pass through unwrapped, only gaining `Vary: Accept-Encoding` when
    they are large enough that an accepting client would have had them compressed (what
    Starlette's IdentityResponder does, without parsing every answer's headers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if accepts_gzip(scope):
                await super().__call__(scope, receive, send)
                return
            await self.app(scope, receive, _VarySender(send, self.minimum_size))
            return
        await self.app(scope, receive, send)


class _VarySender:
    """Holds the response start until the first body part says whether to add `Vary`."""

    __slots__ = ("minimum_size", "send", "start")

    def __init__(self, send: Send, minimum_size: int) -> None:
        self.send = send
        self.minimum_size = minimum_size
        self.start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        start = self.start
        if start is not None:
            self.start = None
            if message["type"] == "http.response.body" and (
                    len(message.get("body", b"")) >= self.minimum_size or message.get("more_body", False)):
                headers = MutableHeaders(raw=start.setdefault("headers", []))
                if "content-encoding" not in headers:
                    headers.add_vary_header("Accept-Encoding")
            await self.send(start)
        await self.send(message)


def error_response(status: int, body: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if isinstance(exc, ContractViolation):
        request.app.state.metrics.contract_errors.labels(request.scope["state"].get("application", "")).inc()
    if exc.status >= 500:
        log.warning("request %s: %s %s -> %s %s: %s [%s]", request.scope.get("state", {}).get("request_id", "-"),
                    request.method, request.url.path, exc.status, exc.code, exc.message, exc.log_detail or "")
    headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s is not None else {}
    if exc.closes_connection:
        headers["connection"] = "close"
    return error_response(exc.status, exc.to_dict(), headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, {"error": {"code": code, "message": message}}, exc.headers)


_BEFORE_ANSWER, _ANSWERING, _ANSWERED = range(3)


class UnexpectedErrors:
    """Answers an exception raised anywhere in the stack (a route, or a middleware such as
    observability, auth or gzip) with 500 `internal` and keeps the connection: it is the
    outermost layer, because Starlette's own handler for `Exception` runs in
    ServerErrorMiddleware, which re-raises after answering, and uvicorn then drops the
    connection (the client's next request on it fails too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        phase = _BEFORE_ANSWER

        async def send_tracking(message: Message) -> None:
            nonlocal phase
            if message["type"] == "http.response.start":
                phase = _ANSWERING
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                phase = _ANSWERED

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as error:  # noqa: BLE001 - answered, logged or re-raised by phase
            await _answer_unexpected(scope, receive, send, error, phase)


async def _answer_unexpected(scope: Scope, receive: Receive, send: Send, error: Exception, phase: int) -> None:
    """After `error` escaped a request at `phase`: answer 500 `internal` (with the request id)
    if nothing was sent yet, only log it once the whole answer is out; re-raise when half an
    answer is out, since only closing the connection can tell the client."""
    if phase == _ANSWERING:
        raise error
    request = Request(scope, receive)
    response = await unexpected_error(request, error)
    if phase == _ANSWERED:
        return  # logged; the connection serves the next request
    request_id = scope.get("state", {}).get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER.decode()] = request_id
    await response(scope, receive, send)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.error("request %s: unexpected error on %s %s", request_id, request.method, request.url.path,
              exc_info=exc)
    return error_response(500, {"error": {"code": "internal",
                                          "message": f"internal error (request {request_id}, see the log)"}})
