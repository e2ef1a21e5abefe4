"""The gateway's HTTP/1.1 connection (gateway.http_protocol) under a real uvicorn on a loopback
port, driven over raw sockets, with a small ASGI app whose requests take as long as asked:
keep-alive after a drained body, pipelining, shutdown, freed connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from gateway.cli import UvicornServer
from gateway.http_protocol import http_protocol
from gateway.settings import Settings
from tests.conftest import free_port


async def paced_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/early`: 413 without reading the body; `/sleep/<ms>`: read the body, then answer after
    that long; `/read`: read the body and answer its size."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    size = 0
    if path != "/early":
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
    if path.startswith("/sleep/"):
        await asyncio.sleep(int(path.removeprefix("/sleep/")) / 1000)
    body = b"early" if path == "/early" else b"read %d" % size
    await send({"type": "http.response.start", "status": 413 if path == "/early" else 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve_paced(settings: Settings, **config: Any) -> AsyncIterator[tuple[UvicornServer, int]]:
    """`paced_app` under the gateway's uvicorn server and protocol; yields the server and port."""
    port = free_port()
    server = UvicornServer(uvicorn.Config(paced_app, host="127.0.0.1", port=port, log_config=None,
                                          access_log=False, lifespan="on", http=http_protocol(settings),
                                          **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server, port
    finally:
        server.should_exit = True
        await task


async def read_answer(reader: asyncio.StreamReader, ending: bytes, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.readuntil(ending), timeout)


async def test_request_read_with_a_drained_body_tail_is_not_cut_by_the_idle_timer() -> None:
    async with serve_paced(Settings(), timeout_keep_alive=0.3) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 50)
        assert (await read_answer(reader, b"early")).startswith(b"HTTP/1.1 413 ")
        # The body's tail and the next request in one segment: read in one go by the server.
        started = time.monotonic()
        writer.write(b"a" * 50 + b"POST /sleep/800 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        second = await read_answer(reader, b"read 0")  # served longer than the keep-alive timeout
        assert second.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started > 0.75
        writer.close()
