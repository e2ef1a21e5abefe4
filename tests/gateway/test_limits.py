"""Limits on input and load: body size, gzip, content type, element count, deadlines,
concurrency. Real uvicorn, real runtimes."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import until_in_flight

SLOW = "import time\nimport numpy as np\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("limits")
    write_model(root, "echo", "echo", "def predict(x):\n    return x\n",
                inputs="x: {shape: [-1], type: float32}", outputs="y: {shape: [-1], type: float32}")
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "echo", "echo")
    write_app(root, "slow", "slow")
    write_app(root, "narrow", "slow", "max_concurrency: 1")
    write_app(root, "hurried", "slow", "timeout_s: 0.2")
    with runtimes_for(load_config(root)) as bound:
        yield bound


SETTINGS = Settings(max_body_bytes=20_000, max_inflated_bytes=100_000, max_elements=3_000,
                    max_concurrency=4, max_request_timeout_s=0.5)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(SETTINGS, config), SETTINGS) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


def floats(count: int) -> bytes:
    return b'{"x": [' + b",".join([b"1.5"] * count) + b"]}"


async def test_body_over_the_limit_is_413_from_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/echo", content=floats(10_000),
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"x": ['
        for _ in range(5_000):
            yield b"1.5,"
        yield b"1.5]}"

    response = await client.post("/gateway/applications/echo", content=chunks())
    assert response.status_code == 413


BIG = 72_000_000  # sent in full before the answer is read, as urllib and http.client do


def post_all_then_read(url: str, body: bytes, chunked: bool = False) -> tuple[int, bytes]:
    """POST `body` with `Connection: close` (urllib's way), reading only once it is all sent."""
    if not chunked:
        request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", "/" + url.split("/", 3)[3], body=iter([body[i:i + (1 << 20)] for i in
                                                                          range(0, len(body), 1 << 20)]),
                           headers={"connection": "close"}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_413_reaches_a_client_that_sends_the_whole_body_first(client: httpx.AsyncClient,
                                                                     chunked: bool) -> None:
    body = b'{"x": [' + b"1," * (BIG // 2) + b"1]}"
    base = str(client.base_url).rstrip("/")
    url = f"{base}/gateway/applications/echo"
    status, answer = await asyncio.to_thread(post_all_then_read, url, body, chunked)
    assert status == 413  # not a connection reset
    assert b"payload_too_large" in answer
    # Other answers given before the body was read close as cleanly (here 404).
    status, _ = await asyncio.to_thread(post_all_then_read, f"{base}/gateway/applications/none",
                                        body[:5_000_000])
    assert status == 404


async def test_kept_alive_connection_serves_on_after_a_413_sent_before_its_body(
        client: httpx.AsyncClient) -> None:
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n")
    writer.write(b" " * 3_000_000)  # answered 413 at once; the rest is read and discarded
    await writer.drain()
    assert (await reader.readuntil(b"}}")).startswith(b"HTTP/1.1 413 ")
    writer.write(b'POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{"x": [1.5]}')
    second = await asyncio.wait_for(reader.readuntil(b'{"y":[1.5]}'), 5)
    assert second.startswith(b"HTTP/1.1 200 ")  # the same connection, the body above skipped
    writer.close()


async def test_413_to_a_client_awaiting_100_continue_closes_at_once(client: httpx.AsyncClient) -> None:
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)  # no 100 Continue: the body is not wanted
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert time.monotonic() - started < 2  # not kept open for the body timeout (30 s)
    writer.close()


async def test_trailing_slash_is_404_not_a_redirect_built_from_host(client: httpx.AsyncClient) -> None:
    # /v1 answers TF Serving's 400 Malformed request for a path its patterns do not match.
    for path, status in (("/gateway/applications/echo/", 404), ("/health/ready/", 404), ("/v1/models/echo/", 400)):
        response = await client.post(path, json={"x": [1]}, headers={"host": "evil.example"})
        assert response.status_code == status, path
        assert "location" not in response.headers


async def test_gzip_request_and_answer(client: httpx.AsyncClient) -> None:
    body = floats(2_000)
    response = await client.post("/gateway/applications/echo", content=gzip.compress(body),
                                 headers={"content-encoding": "gzip", "accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == {"y": [1.5] * 2_000}  # httpx inflates it


async def test_gzip_bomb_is_413(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b'{"x": [' + b" " * 1_000_000 + b"1]}")
    assert len(bomb) < SETTINGS.max_body_bytes
    response = await client.post("/gateway/applications/echo", content=bomb,
                                 headers={"content-encoding": "gzip"})
    assert response.status_code == 413
    assert "inflates beyond" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"not gzip", {"content-encoding": "gzip"}, 400),
        (gzip.compress(b'{"x": [1]}', mtime=0)[:-6], {"content-encoding": "gzip"}, 400),
        (b'{"x": [1]}', {"content-encoding": "br"}, 415),
        (b'{"x": [1]}', {"content-type": "text/plain"}, 415),
    ],
)
async def test_bad_encodings(client: httpx.AsyncClient, body: bytes, headers: dict[str, str],
                             status: int) -> None:
    response = await client.post("/gateway/applications/echo", content=body, headers=headers)
    assert response.status_code == status


async def test_element_count_cap(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/echo", content=floats(3_001))
    assert response.status_code == 400
    assert "limit is 3000" in response.json()["error"]["message"]


async def test_deep_nesting_is_400(client: httpx.AsyncClient) -> None:
    deep = b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = await client.post("/gateway/applications/echo", content=deep)
    assert response.status_code == 400


async def test_client_deadline_is_504_in_time(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post("/gateway/applications/slow", json={"x": [2000]},
                                 headers={"x-request-timeout": "150"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 1.0


async def test_client_deadline_is_capped(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post("/gateway/applications/slow", json={"x": [2000]},
                                 headers={"x-request-timeout": "60000"})
    assert response.status_code == 504
    assert time.monotonic() - started < 1.5  # max_request_timeout_s = 0.5


async def test_application_deadline(client: httpx.AsyncClient) -> None:
    response = await client.post("/gateway/applications/hurried", json={"x": [1000]})
    assert response.status_code == 504


@pytest.mark.parametrize("value", ["soon", "-5", "0", "inf"])
async def test_bad_timeout_header(client: httpx.AsyncClient, value: str) -> None:
    response = await client.post("/gateway/applications/slow", json={"x": [1]},
                                 headers={"x-request-timeout": value})
    assert response.status_code == 400
    assert "x-request-timeout" in response.json()["error"]["message"]


async def test_application_concurrency_limit_is_429(client: httpx.AsyncClient) -> None:
    first = asyncio.create_task(client.post("/gateway/applications/narrow", json={"x": [300]}))
    await until_in_flight(str(client.base_url).rstrip("/"), 1)
    second = await client.post("/gateway/applications/narrow", json={"x": [1]})
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert (await first).status_code == 200


async def test_gateway_concurrency_limit_is_503(client: httpx.AsyncClient) -> None:
    busy = [asyncio.create_task(client.post("/gateway/applications/slow", json={"x": [300]}))
            for _ in range(4)]
    await until_in_flight(str(client.base_url).rstrip("/"), 4)
    over = await client.post("/gateway/applications/echo", json={"x": [1]})
    assert over.status_code == 503
    assert over.json()["error"]["code"] == "overloaded"
    assert over.headers["retry-after"] == "1"
    assert [r.status_code for r in await asyncio.gather(*busy)] == [200] * 4


