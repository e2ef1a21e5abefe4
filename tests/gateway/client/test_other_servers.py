"""The client against servers that are not a gateway, or answer as no gateway of ours does (a
proxy's HTML page, TF Serving's `{"error": "..."}`, a slow trickle, an hour's Retry-After): a
real uvicorn serving a small Starlette app that answers each application name its own way."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.cli import exits, main
from gateway.client import AsyncClient, Client, UnexpectedAnswer
from gateway.errors import TooManyRequests
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
        if request.path_params["name"] == "html":
            return Response(HTML, 404, media_type="text/html")
        return JSONResponse({"name": request.path_params["name"], "inputs": None, "outputs": None, "stages": []})

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        posts[name] += 1
        answers: dict[str, Any] = {
            "text": lambda: Response("hello\nworld\n", 200, media_type="text/plain"),
            "v1": lambda: JSONResponse({"error": "busy"}, 429),
            "hour": lambda: _busy("overloaded", 503, "3600"),
            "later": lambda: _busy("too_many_requests", 429, "1.5") if posts[name] == 1 else JSONResponse({"y": [1]}),
            "trickle": lambda: StreamingResponse(_trickle(), media_type="application/json"),
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


async def _close(client: AnyClient) -> None:
    if isinstance(client, AsyncClient):
        await client.aclose()
    else:
        client.close()
