"""Header and body read timeouts (gateway.http_protocol, gateway.body) against a real uvicorn
with the gateway's protocol and a real runtime: stalled headers, stalled bodies, slowloris."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.http_protocol import http_protocol
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import in_flight, until_in_flight

# max_concurrency 4: 100 stalled bodies must not take the slots of requests being predicted
SETTINGS = Settings(header_timeout_s=0.5, body_timeout_s=0.5, max_body_bytes=20_000, max_concurrency=4)
# For tests that must see a stalled request in flight before its deadline: 0.5 s is a window a
# loaded machine misses (a /metrics poll can take longer than that), 2.5 s is one it does not.
WIDE = Settings(header_timeout_s=2.5, body_timeout_s=2.5, max_body_bytes=20_000, max_concurrency=4)
STALLED = 200  # slowloris connections held open at once


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    root = tmp_path_factory.mktemp("timeouts")
    write_model(root, "echo", "echo", "def predict(x):\n    return x\n")
    write_app(root, "echo", "echo")
    with runtimes_for(load_config(root)) as bound:
        yield bound


@pytest.fixture
async def url(config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(SETTINGS, config), SETTINGS) as url:
        yield url


@pytest.fixture
async def wide_url(config: Config) -> AsyncIterator[str]:
    """A gateway with the WIDE timeouts."""
    async with serve_app(create_app(WIDE, config), WIDE) as url:
        yield url


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def test_timeouts_are_settings(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\nlimits: {header_timeout_s: 3, body_timeout_s: 4}\n")
    settings = Settings.load(tmp_path, load_config(tmp_path).gateway.values,
                             env={"GATEWAY_BODY_TIMEOUT_S": "7.5"})
    assert (settings.header_timeout_s, settings.body_timeout_s) == (3.0, 7.5)
    protocol = http_protocol(settings)
    assert (protocol.header_timeout_s, protocol.body_timeout_s) == (3.0, 7.5)
    assert (Settings().header_timeout_s, Settings().body_timeout_s) == (10.0, 30.0)


async def test_stalled_headers_get_408_and_are_never_in_flight(url: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    reader, writer = await connect(url)
    started = time.monotonic()
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Type: app")
    answering = asyncio.create_task(read_until_closed(reader))
    while not answering.done():  # not in flight at any time until answered
        assert await in_flight(url) == 0
        await asyncio.sleep(0.02)
    answer = answering.result()
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer
    request_id = re.search(rb"\r\nx-request-id: (\w+)\r\n", answer)
    assert request_id is not None
    assert f"request {request_id.group(1).decode()}: request headers not received within 0.5 s" in caplog.text
    assert answer.endswith(b'{"error":{"code":"request_timeout","message":'
                           b'"request headers not received within 0.5 s"}}')
    assert 0.45 < elapsed < 2.0
    writer.close()


async def test_a_silent_connection_is_closed_after_the_header_timeout(url: str) -> None:
    reader, writer = await connect(url)
    started = time.monotonic()
    assert await read_until_closed(reader) == b""  # nothing begun: closed without an answer
    assert 0.45 < time.monotonic() - started < 2.0
    writer.close()


async def test_kept_alive_connection_times_each_requests_headers(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(4):  # 4 requests over more than twice the header timeout, one connection
            response = await client.post("/gateway/applications/echo", json={"x": [1]})
            assert response.status_code == 200
            await asyncio.sleep(0.3)
    reader, writer = await connect(url)
    writer.write(b'POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"x": [1]}')
    first = await reader.readuntil(b'{"y":[1]}')
    assert first.startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(0.3)
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHo")  # the next request stalls
    assert (await read_until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_stalled_body_is_408_and_leaves_the_in_flight_count(wide_url: str) -> None:
    url, deadline = wide_url, WIDE.body_timeout_s
    reader, writer = await connect(url)
    started = time.monotonic()
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                 b'{"x": [1, ')
    await until_in_flight(url, 1, timeout=deadline - 0.1)  # before its 408
    answer = await read_until_closed(reader)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer
    assert b'"code":"request_timeout"' in answer
    assert deadline - 0.05 < elapsed < deadline + 1.5
    assert await in_flight(url) == 0
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{url}/metrics")).text
    assert re.search(r'gateway_requests_total{application="echo".*status="408"', metrics)
    writer.close()


async def test_client_gone_mid_body_leaves_the_count_as_499(wide_url: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    url, deadline = wide_url, WIDE.body_timeout_s
    started = time.monotonic()
    _, writer = await connect(url)
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await until_in_flight(url, 1, timeout=deadline - 0.1)  # before its 408
    writer.close()
    await until_in_flight(url, 0, timeout=max(0.1, deadline - 0.1 - (time.monotonic() - started)))  # still before
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{url}/metrics")).text
    assert re.search(r'gateway_requests_total{application="echo".*status="499"', metrics)
    assert "unexpected error" not in caplog.text  # not a 500 with a traceback


async def test_body_trickled_past_the_deadline_is_408(url: str) -> None:
    reader, writer = await connect(url)
    started = time.monotonic()
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    answer = b""
    while not answer and time.monotonic() - started < 5:  # a byte every 0.1 s until answered
        writer.write(b" ")
        with contextlib.suppress(TimeoutError):
            answer = await asyncio.wait_for(reader.read(65536), 0.1)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 1.5  # one deadline for the whole body, not between bytes
    writer.close()


async def test_answered_request_whose_body_stalls_is_closed_at_the_body_deadline(url: str) -> None:
    reader, writer = await connect(url)
    started = time.monotonic()
    writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{")
    answer = await read_until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 413 ")  # at once, then the rest of the body awaited
    assert 0.45 < time.monotonic() - started < 2.0
    writer.close()


async def test_slowloris_does_not_stop_other_clients(wide_url: str) -> None:
    url, deadline = wide_url, WIDE.body_timeout_s  # the header timeout too
    stalled = [await connect(url) for _ in range(STALLED)]
    started = time.monotonic()
    for number, (_, writer) in enumerate(stalled):
        writer.write(b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\n" if number % 2 else
                     b"POST /gateway/applications/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{")
    await until_in_flight(url, STALLED // 2, timeout=deadline - 0.1)  # before their 408s
    async with httpx.AsyncClient(base_url=url) as client:
        latencies = []
        for _ in range(5):
            before = time.monotonic()
            response = await client.post("/gateway/applications/echo", json={"x": [7]})
            latencies.append(time.monotonic() - before)
            assert response.json() == {"y": [7]}
    assert await in_flight(url) == STALLED // 2  # the stalled bodies only, never stalled headers
    answers = await asyncio.gather(*(read_until_closed(reader) for reader, _ in stalled))
    closed_after = time.monotonic() - started
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert closed_after < deadline + 2.5
    assert await in_flight(url) == 0
    print(f"\nslowloris: {STALLED} stalled connections; other client's requests answered in "
          f"{max(latencies) * 1000:.1f} ms at most; all stalled ones got 408 and were closed "
          f"{closed_after:.2f} s after (timeouts {deadline:g} s)")
    for _, writer in stalled:
        writer.close()
