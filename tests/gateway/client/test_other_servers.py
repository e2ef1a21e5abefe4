"""The client against servers that are not a gateway, or answer as no gateway of ours does (a
proxy's HTML page, TF Serving's `{"error": "..."}`, a slow trickle, an hour's Retry-After): a
real uvicorn serving a small Starlette app that answers each application name its own way."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.cli import exits, main
from gateway.client import AsyncClient, Client, ConnectionLost, GatewayTimeout, UnexpectedAnswer
from gateway.errors import Overloaded, TooManyRequests
from tests.conftest import serve_app

HTML = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head><title>Error response</title></head>\n</html>\n"
AnyClient = Client | AsyncClient


def _busy(code: str, status: int, retry_after: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": "busy"}}, status, headers={"retry-after": retry_after})


async def _trickle() -> AsyncIterator[bytes]:
    yield b'{"y": ['
    for _ in range(6):
        await asyncio.sleep(0.5)
        yield b"1,"
    yield b"1]}"


def stub() -> tuple[Starlette, Counter[str]]:
    """The app, and how many times each application was posted to."""
    posts: Counter[str] = Counter()

    async def plan(request: Request) -> Response:
        name = request.path_params["name"]
        posts[f"GET {name}"] += 1
        if name == "html":
            return Response(HTML, 404, media_type="text/html")
        if name == "known":
            await asyncio.sleep(0.1)  # long enough for every concurrent first call to ask
            tensors = [{"name": "x", "dtype": "int32", "shape": [-1]}]
            return JSONResponse({"name": name, "inputs": tensors, "outputs": [{**tensors[0], "name": "y"}],
                                 "stages": [{"stage": 1}]})
        return JSONResponse({"name": name, "inputs": None, "outputs": None, "stages": []})

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        posts[name] += 1
        answers: dict[str, Any] = {
            "text": lambda: Response("hello\nworld\n", 200, media_type="text/plain"),
            "v1": lambda: JSONResponse({"error": "busy"}, 429),
            "hour": lambda: _busy("overloaded", 503, "3600"),
            "later": lambda: _busy("too_many_requests", 429, "1.5") if posts[name] == 1 else JSONResponse({"y": [1]}),
            "trickle": lambda: StreamingResponse(_trickle(), media_type="application/json"),
            "known": lambda: JSONResponse({"y": [1]}),
        }
        answer: Response = answers[name]()
        return answer

    routes = [Route("/gateway/applications/{name}", plan, methods=["GET"]),
              Route("/gateway/applications/{name}", predict, methods=["POST"])]
    return Starlette(routes=routes), posts


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Counter[str]]]:
    app, posts = stub()
    async with serve_app(app) as url:
        yield url, posts


async def call(client: AnyClient, app: str) -> Any:
    if isinstance(client, AsyncClient):
        return await client.predict(app, x=[1])
    return await asyncio.to_thread(client.predict, app, x=[1])


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> type[AnyClient]:
    return Client if request.param == "sync" else AsyncClient


async def test_a_page_that_is_not_the_gateways_is_one_line_and_its_own_exit(
        server: tuple[str, Counter[str]], kind: type[AnyClient], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = server
    client = kind(url)
    try:
        with pytest.raises(UnexpectedAnswer) as page:
            await call(client, "html")
        assert page.value.status == 404
        assert page.value.message == ('HTTP 404 not from the gateway: <!DOCTYPE HTML> <html lang="en"> '
                                      '<head><title>Error response</title></head> </html>')
        with pytest.raises(UnexpectedAnswer):
            await call(client, "text")  # a 200 that is not JSON
    finally:
        await _close(client)
    for app in ("html", "text"):
        status = await asyncio.to_thread(main, ["predict", app, "--json", '{"x": [1]}', "--url", url])
        err = capsys.readouterr().err
        assert status == exits.NOT_A_GATEWAY
        assert err.count("\n") == 1
        assert err.startswith("gateway predict: ")


async def test_an_error_without_a_code_gets_its_class_code(server: tuple[str, Counter[str]]) -> None:
    async with AsyncClient(server[0], retries=0) as client:
        with pytest.raises(TooManyRequests) as busy:
            await client.predict("v1", x=[1])
    assert (busy.value.status, busy.value.code, busy.value.message) == (429, "too_many_requests", "busy")


@pytest.mark.parametrize(("timeout", "deadline"), [(30.0, 1.0), (1.0, None)])
async def test_a_trickling_answer_is_cut_off_at_the_deadline_or_timeout(
        server: tuple[str, Counter[str]], kind: type[AnyClient], timeout: float, deadline: float | None) -> None:
    client = kind(server[0], timeout=timeout, deadline=deadline)  # a 3 s body, 0.5 s a chunk: no read times out
    try:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout) as cut:
            await call(client, "trickle")
        elapsed = time.monotonic() - started
    finally:
        await _close(client)
    assert 0.9 < elapsed < 1.8
    assert "did not end within" in cut.value.message


async def test_without_a_deadline_a_retry_after_beyond_the_timeout_is_not_waited(
        server: tuple[str, Counter[str]], kind: type[AnyClient]) -> None:
    url, posts = server
    client = kind(url, timeout=2.0, retries=3)  # the answer asks for an hour
    try:
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await call(client, "hour")
        assert time.monotonic() - started < 1.0
    finally:
        await _close(client)
    assert (refused.value.retry_after_s, posts["hour"]) == (3600.0, 1)


async def test_a_decimal_retry_after_is_honoured(server: tuple[str, Counter[str]], kind: type[AnyClient]) -> None:
    client = kind(server[0])
    try:
        started = time.monotonic()
        assert (await call(client, "later"))["y"].tolist() == [1]  # 429 with Retry-After: 1.5, then answered
        assert 1.4 < time.monotonic() - started < 3.0
    finally:
        await _close(client)


async def test_a_closed_client_says_so(server: tuple[str, Counter[str]], kind: type[AnyClient]) -> None:
    client = kind(server[0])
    await _close(client)
    with pytest.raises(RuntimeError, match="the client is closed"):
        await call(client, "text")


async def test_concurrent_first_calls_read_the_contract_once(server: tuple[str, Counter[str]]) -> None:
    url, posts = server
    async with AsyncClient(url) as client:
        answers = await asyncio.gather(*(client.predict("known", x=[n]) for n in range(20)))
    assert all(answer["y"].dtype == "int32" for answer in answers)
    assert (posts["GET known"], posts["known"]) == (1, 20)


async def test_a_connection_broken_after_the_request_was_sent_is_not_sent_again(kind: type[AnyClient]) -> None:
    posts = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal posts
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET "):
            body = b'{"inputs": null, "outputs": null, "stages": []}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        else:
            posts += 1  # read whole, then the connection closed with no answer: the gateway may have run it
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = kind(f"http://127.0.0.1:{port}", retries=5)
    try:
        with pytest.raises(ConnectionLost):
            await call(client, "any")
    finally:
        await _close(client)
        server.close()
        await server.wait_closed()
    assert posts == 1


async def _close(client: AnyClient) -> None:
    if isinstance(client, AsyncClient):
        await client.aclose()
    else:
        client.close()
