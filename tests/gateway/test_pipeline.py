"""The HTTP pipeline's seams: a root path honoured by every layer (over a real uvicorn started
with one), the error shape chosen from the API surface, labels read from the request context."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import uvicorn
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware as StarletteGZip
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.answers import (
    NATIVE,
    SHAPE_KEY,
    TF_SERVING,
    error_response,
    error_shape,
    http_error_response,
    route_path,
)
from gateway.app import GatewayApp, create_app
from gateway.http_protocol import http_protocol
from gateway.manifests import Config
from gateway.observability import CONTEXT_KEY, labels_of
from gateway.pipeline import GZIP_MIN_BYTES, GZipMiddleware, _add_vary, accepts_gzip
from gateway.routes import native
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.gateway.test_observability import sample

ROOT = "/api"
KEY = {"authorization": "Bearer inc-key"}
AUTH = AuthSettings(api_keys=(ApiKey("inc", hashlib.sha256(b"inc-key").hexdigest()),))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process keeps its signals
        yield


@contextlib.asynccontextmanager
async def serve_under_root(app: GatewayApp, root_path: str, settings: Settings | None = None) -> AsyncIterator[str]:
    """`app` under a real uvicorn started with `root_path` (`--root-path`), as behind a proxy
    that strips that prefix; yield its base URL."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (else Nagle's
    # algorithm holds each answer's body ~40 ms behind its head).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                    root_path=root_path, http=http_protocol(settings or Settings())))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before starting")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def rooted(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(access_log=False, auth=AUTH), example_config)
    # Only the shortcut can serve the application route: had it missed the root path, the
    # router could not stand in for it.
    app.router.routes = [route for route in app.router.routes
                         if getattr(route, "endpoint", None) is not native.predict_application]
    async with serve_under_root(app, ROOT) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield client


async def test_a_root_path_is_honoured_by_the_shortcut_the_router_and_auth(rooted: httpx.AsyncClient) -> None:
    application = await rooted.post("/gateway/applications/increment_app", json={"number": [1]}, headers=KEY)
    assert (application.status_code, application.json()) == (200, {"number": [2]})
    model = await rooted.post("/gateway/models/increment_model", json={"number": [1]}, headers=KEY)
    assert (model.status_code, model.json()) == (200, {"number": [2]})
    tf = await rooted.post("/v1/models/increment_model:predict", json={"instances": [1]}, headers=KEY)
    assert (tf.status_code, tf.json()) == (200, {"predictions": [2]})
    # Auth sees the routes below the root path: no key, no answer.
    refused = await rooted.post("/gateway/applications/increment_app", json={"number": [1]})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    tf_refused = await rooted.post("/v1/models/increment_model:predict", json={"instances": [1]})
    assert tf_refused.status_code == 401
    assert isinstance(tf_refused.json()["error"], str)
    missing = await rooted.get("/v1/models/nope", headers=KEY)
    assert missing.status_code == 404
    assert isinstance(missing.json()["error"], str)
    text = (await rooted.get("/metrics")).text
    assert sample(text, "gateway_requests_total", route="/gateway/applications/{name}",
                  application="increment_app", model="increment_model", status="200") == 1
    assert sample(text, "gateway_requests_total", route="unmatched", status="401") == 2  # refused before routing


async def test_a_fault_on_the_tf_api_is_answered_in_its_shape(example_config: Config) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug in the gateway")

    app = create_app(Settings(access_log=False), example_config)
    app.router.routes.insert(0, Route("/v1/models/broken:predict", broken, methods=["POST"]))
    async with serve_under_root(app, "") as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.post("/v1/models/broken:predict", json={"instances": [1]})
        native_answer = await client.post("/gateway/applications/increment_app", json={"number": "x"},
                                          headers={"x-request-timeout": "soon"})
        text = (await client.get("/metrics")).text
    assert answer.status_code == 500
    request_id = answer.headers["x-request-id"]
    assert answer.json() == {"error": f"internal error (request {request_id}, see the log)"}
    # A request refused before its deadline was known is labelled with its application still.
    assert native_answer.status_code == 400
    assert sample(text, "gateway_requests_total", route="/gateway/applications/{name}",
                  application="increment_app", status="400") == 1


def scope_for(path: str, app: GatewayApp | None = None, method: str = "POST", root_path: str = "") -> dict[str, object]:
    scope: dict[str, object] = {"type": "http", "method": method, "path": root_path + path, "root_path": root_path,
                                "headers": [], "query_string": b"", "state": {}}
    if app is not None:
        scope["app"] = app
    return scope


def test_the_error_shape_is_the_surfaces_of_the_route(example_config: Config) -> None:
    app = create_app(Settings(access_log=False), example_config)
    assert error_shape(scope_for("/v1/models/toy:predict", app)) is TF_SERVING
    assert error_shape(scope_for("/v1/models", app, "GET")) is TF_SERVING
    assert error_shape(scope_for("/v1/models\n", app, "GET")) is TF_SERVING  # Starlette's `$` matches before it
    assert error_shape(scope_for("/v1/models/toy", app, "GET", root_path=ROOT)) is TF_SERVING
    assert error_shape(scope_for("/v1/modelsx", app)) is TF_SERVING  # no route serves it: the surface of its prefix
    assert error_shape(scope_for("/v1/other", app)) is NATIVE
    assert error_shape(scope_for("/gateway/applications/x", app)) is NATIVE
    routed = scope_for("/anything")
    routed["route"] = Route("/v1/models/{rest:path}", native.predict_model)
    assert error_shape(routed) is TF_SERVING  # a matched route decides, whatever the path
    dialect = scope_for("/gateway/models/x", app)
    dialect[SHAPE_KEY] = TF_SERVING  # a route accepting several dialects names the request's
    assert error_shape(dialect) is TF_SERVING


def test_one_renderer_per_shape() -> None:
    assert NATIVE.body("contract_violation", "no", "x[1]") == orjson.dumps(
        {"error": {"code": "contract_violation", "message": "no", "field": "x[1]"}})
    assert NATIVE.body("not_found", "no") == b'{"error":{"code":"not_found","message":"no"}}'
    assert TF_SERVING.body("contract_violation", "no", "x[1]") == b'{"error":"no"}'
    unrouted = error_response(scope_for("/gateway/models/toy"), 405, "method_not_allowed", "no")
    assert "allow" not in unrouted.headers  # native: the router's Allow, if any
    routed = scope_for("/v1/models/toy", None, "PUT")
    routed["route"] = Route("/v1/models/{rest:path}", native.predict_model)
    assert error_response(routed, 405, "method_not_allowed", "no").headers["allow"] == "GET, POST"
    native_405 = http_error_response(scope_for("/gateway/models/x", None, "GET"),
                                     HTTPException(405, headers={"Allow": "POST"}))
    assert native_405.body == (b'{"error":{"code":"method_not_allowed",'
                               b'"message":"method GET is not allowed on /gateway/models/x"}}')
    assert native_405.headers["allow"] == "POST"


def test_route_path_is_below_the_root_path() -> None:
    assert route_path(scope_for("/gateway/models/x", root_path=ROOT)) == "/gateway/models/x"
    assert route_path(scope_for("/gateway/models/x")) == "/gateway/models/x"
    assert route_path({"path": "/apix/y", "root_path": ROOT}) == "/apix/y"
    assert route_path({"path": ROOT, "root_path": ROOT}) == ""


def test_labels_come_from_the_request_context() -> None:
    from gateway.dataplane import RequestContext

    scope: dict[str, object] = {}
    assert labels_of(scope) == {}
    context = RequestContext.start("id", 1.0, {"application": "a"})
    scope[CONTEXT_KEY] = context
    context.labels["model"] = "m"
    assert labels_of(scope) == {"application": "a", "model": "m"}


@pytest.mark.parametrize("headers", [
    [(b"content-type", b"application/json")],
    [(b"vary", b"Origin"), (b"content-length", b"2")],
    [(b"vary", b"Origin"), (b"x", b"1"), (b"vary", b"Cookie")],
    [(b"content-encoding", b"br"), (b"vary", b"Origin")],
])
def test_vary_is_added_as_starlette_adds_it(headers: list[tuple[bytes, bytes]]) -> None:
    ours = list(headers)
    _add_vary(ours)
    theirs = MutableHeaders(raw=list(headers))
    if "content-encoding" not in theirs:
        theirs.add_vary_header("Accept-Encoding")
    assert ours == theirs.raw


def test_vary_names_accept_encoding_once() -> None:
    headers = [(b"vary", b"Accept-Encoding, Authorization")]
    _add_vary(headers)
    assert headers == [(b"vary", b"Accept-Encoding, Authorization")]


# RFC 9110 12.5.3: a coding with q=0 is "not acceptable".
@pytest.mark.parametrize(("value", "accepted"), [
    (b"gzip, deflate, br", True),
    (b"gzip", True),
    (b"gzip;q=0", False),
    (b"gzip; q=0.0, identity", False),
    (b"br;q=1, gzip;q=0.5", True),
    (b"deflate, GZIP ; Q=0", False),
    (b"x-gzip;q=1, gzip;q=0", False),
    (b"gzip;q=nope", False),
    (b"identity", False),
    (None, False),
])
def test_gzip_is_accepted_unless_refused_by_its_quality(value: bytes | None, accepted: bool) -> None:
    headers = [] if value is None else [(b"accept-encoding", value)]
    assert accepts_gzip({"type": "http", "headers": headers}) is accepted


async def test_a_request_leaves_no_garbage_cycle(example_config: Config) -> None:
    """Nothing per request refers back to the server's connection (a layer keeping an object
    that holds `send` in the scope did: a cycle per request left for the collector)."""
    requests = [("/gateway/applications/increment_app", b'{"number": [1]}'),
                ("/gateway/applications/increment_app", b'{"number": "x"}'),
                ("/gateway/applications/nope", b"{}"),
                ("/gateway/models/increment_model", b'{"number": [1]}'),
                ("/v1/models/increment_model:predict", b'{"instances": [1]}'),
                ("/v1/models/nope:predict", b"{}"),
                ("/nothing", b"{}")]
    app = create_app(Settings(access_log=False), example_config)
    async with serve_under_root(app, "") as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))

        async def exchange(path: str, body: bytes) -> None:
            writer.write(b"POST %s HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)

        try:
            for path, body in requests:  # warm: first-use caches are not garbage
                await exchange(path, body)
            gc.collect()
            gc.disable()
            try:
                for _ in range(20):
                    for path, body in requests:
                        await exchange(path, body)
                collected = gc.collect()
            finally:
                gc.enable()
        finally:
            writer.close()
    assert collected < 20 * len(requests), f"{collected} unreachable objects after {20 * len(requests)} requests"


def _answer(messages: list[Message]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in messages:
            await send(dict(message, headers=list(message["headers"])) if "headers" in message else dict(message))
    return app


async def _sent(app: ASGIApp, accept: bytes) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"accept-encoding", accept)]}
    await app(scope, receive, send)
    return sent


JSON_HEAD = [(b"content-type", b"application/json")]


@pytest.mark.parametrize("messages", [
    [{"type": "http.response.start", "status": 200, "headers": [*JSON_HEAD, (b"content-length", b"2000")]},
     {"type": "http.response.body", "body": b"1" * 2000}],
    [{"type": "http.response.start", "status": 200, "headers": [*JSON_HEAD, (b"content-length", b"10")]},
     {"type": "http.response.body", "body": b"1" * 10}],
    [{"type": "http.response.start", "status": 200, "headers": JSON_HEAD},  # streamed: no length
     {"type": "http.response.body", "body": b"1" * 10, "more_body": True},
     {"type": "http.response.body", "body": b"2" * 10}],
    [{"type": "http.response.start", "status": 200, "headers": JSON_HEAD},
     {"type": "http.response.body", "body": b"1" * 10}],
    [{"type": "http.response.start", "status": 200, "headers": JSON_HEAD},
     {"type": "http.response.body", "body": b"1" * 2000}],
], ids=["long", "short", "streamed", "short-unsized", "long-unsized"])
@pytest.mark.parametrize("accept", [b"identity", b"gzip"])
async def test_gzip_answers_as_starlettes(messages: list[Message], accept: bytes) -> None:
    ours = await _sent(GZipMiddleware(_answer(messages), minimum_size=GZIP_MIN_BYTES), accept)
    theirs = await _sent(StarletteGZip(_answer(messages), minimum_size=GZIP_MIN_BYTES), accept)
    assert ours == theirs


async def _raw(url: str, request: bytes) -> tuple[bytes, bytes]:
    """`request` sent as it is on a new connection: the answer's head and all that follows
    until the server closes (or 5 s)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        rest = await asyncio.wait_for(reader.read(65536), 5)
        return head, rest
    finally:
        writer.close()


def _header_values(head: bytes, name: bytes) -> list[bytes]:
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
            if line.split(b":", 1)[0].strip().lower() == name]


async def test_a_router_405_on_the_tf_api_has_one_allow_and_tfs_body(example_config: Config) -> None:
    app = create_app(Settings(access_log=False), example_config)
    async with serve_under_root(app, "") as url:
        head, body = await _raw(url, b"TRACE /v1/models/increment_model HTTP/1.1\r\nhost: gateway\r\n"
                                     b"connection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert _header_values(head, b"allow") == [b"GET, POST"]  # TF's route answers these, once
    assert orjson.loads(body) == {"error": "method TRACE is not allowed on /v1/models/increment_model"}


async def test_auth_refusals_on_unmatched_tf_paths_are_tf_shaped(example_config: Config) -> None:
    app = create_app(Settings(access_log=False, auth=AUTH), example_config)
    async with serve_under_root(app, "") as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        unmatched = await client.get("/v1/modelsx")
        routed = await client.get("/v1/models/increment_model")
        native_refused = await client.post("/gateway/models/nope", json={})
    assert (unmatched.status_code, routed.status_code, native_refused.status_code) == (401, 401, 401)
    assert isinstance(unmatched.json()["error"], str)
    assert unmatched.json() == routed.json()
    assert native_refused.json()["error"]["code"] == "unauthenticated"


async def test_a_failed_last_send_is_half_an_answer(example_config: Config, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The server's last send failing leaves the answer incomplete: the error goes on up to
    uvicorn (which closes the connection), not logged as if the answer had gone out."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    original = RequestResponseCycle.send
    failed: list[bool] = []

    async def fails_on_the_last_body(self: RequestResponseCycle, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body") and not failed:
            failed.append(True)
            raise RuntimeError("the transport broke")
        await original(self, message)  # type: ignore[arg-type]  # uvicorn types its messages narrower

    monkeypatch.setattr(RequestResponseCycle, "send", fails_on_the_last_body)
    app = create_app(Settings(access_log=False), example_config)
    async with serve_under_root(app, "") as url:
        head, body = await _raw(url, b'POST /gateway/applications/increment_app HTTP/1.1\r\nhost: gateway\r\n'
                                     b'content-type: application/json\r\ncontent-length: 15\r\n\r\n{"number": [1]}')
    assert failed == [True]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b""  # closed: half an answer
    assert any(record.name == "uvicorn.error" and record.exc_info is not None
               and str(record.exc_info[1]) == "the transport broke" for record in caplog.records)
    assert not any("unexpected error" in record.getMessage() for record in caplog.records
                   if record.name == "gateway")


def test_what_only_starlettes_error_layers_would_honour_is_refused() -> None:
    from starlette.middleware import Middleware
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.middleware.exceptions import ExceptionMiddleware

    from gateway.observability import Metrics

    with pytest.raises(TypeError, match="exception_handlers"):
        GatewayApp(Metrics(), exception_handlers={404: lambda request, error: Response()})
    with pytest.raises(ValueError, match="debug"):
        GatewayApp(Metrics(), debug=True)
    with pytest.raises(TypeError, match="max_body_size"):
        GatewayApp(Metrics(), max_body_size=1024)
    with pytest.raises(TypeError, match="ServerErrorMiddleware"):
        GatewayApp(Metrics(), middleware=[Middleware(ServerErrorMiddleware)])
    app = GatewayApp(Metrics(), exception_handlers={}, debug=False)  # the defaults, said aloud
    with pytest.raises(TypeError, match="exception handlers"):
        app.add_exception_handler(404, lambda request, error: Response())
    with pytest.raises(TypeError, match="ExceptionMiddleware"):
        app.add_middleware(ExceptionMiddleware)
    app.add_middleware(StarletteGZip)  # any other layer is welcome
    assert [middleware.cls for middleware in app.user_middleware] == [StarletteGZip]  # type: ignore[comparison-overlap]


async def test_a_tf_5xx_is_logged_by_the_gateway_with_its_code_and_counts_its_bytes(
        example_config: Config, caplog: pytest.LogCaptureFixture) -> None:
    import io

    from gateway.errors import Overloaded
    from gateway.observability import AccessLog, Metrics

    async def overloaded(request: Request) -> Response:
        raise Overloaded("too many requests in flight")

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug in the gateway")

    stream = io.StringIO()
    app = create_app(Settings(access_log=False), example_config)
    app.state.observer.access_log = AccessLog(Metrics(), stream, interval_s=0.01)
    app.router.routes[:0] = [Route("/v1/models/overloaded:predict", overloaded, methods=["POST"]),
                             Route("/v1/models/broken:predict", broken, methods=["POST"])]
    caplog.set_level("WARNING", "gateway")
    async with serve_under_root(app, "") as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        busy = await client.post("/v1/models/overloaded:predict", json={"instances": [1]})
        fault = await client.post("/v1/models/broken:predict", json={"instances": [1]})
        text = (await client.get("/metrics")).text
    assert (busy.status_code, busy.json()) == (503, {"error": "too many requests in flight"})
    assert any(record.name == "gateway" and record.levelname == "WARNING" and "503 overloaded" in record.getMessage()
               for record in caplog.records)
    assert fault.status_code == 500
    assert sample(text, "gateway_response_bytes_total", route="/v1/models/broken:predict") == len(fault.content)
    # the lifespan closed the access log (written out) as the server stopped
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    entry = next(line for line in lines if line["path"] == "/v1/models/broken:predict")
    assert (entry["status"], entry["bytes_out"]) == (500, len(fault.content))


async def test_a_tf_408_closes_the_connection(example_config: Config) -> None:
    settings = Settings(access_log=False, body_timeout_s=0.2)
    app = create_app(settings, example_config)
    async with serve_under_root(app, "", settings) as url:
        head, body = await _raw(url, b"POST /v1/models/increment_model:predict HTTP/1.1\r\nhost: gateway\r\n"
                                     b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert _header_values(head, b"connection") == [b"close"]
    assert isinstance(orjson.loads(body)["error"], str)
