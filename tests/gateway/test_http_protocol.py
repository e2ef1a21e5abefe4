"""The gateway's HTTP/1.1 connection (gateway.http_protocol) under a real uvicorn on a loopback
port, driven over raw sockets, with a small ASGI app whose requests take as long as asked:
keep-alive after a drained body, pipelining, shutdown, freed connections."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import uvloop
from starlette.requests import Request

from gateway.body import read_body_buffer
from gateway.errors import ClientClosed, PayloadTooLarge, RequestTimeout
from gateway.http_protocol import (
    JOIN_LIMIT,
    WHOLE_BODY_MIN_BYTES,
    _accept_queued,
    _CycleTransport,
    _refuse_new_handshakes,
    begin_draining,
    http_protocol,
)
from gateway.serving.server import UvicornServer
from gateway.settings import Settings
from tests.certs import make_certificates
from tests.conftest import loopback_socket
from tests.waiting import eventually


async def paced_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/early`: 413 without reading the body; `/read`: read the body and answer its size;
    `/sleep/<ms>`: the same, after that long; `/pause/<ms>`: the same, pausing that long
    between reads."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path.startswith("/buffer/"):
        await _buffer_app(scope, receive, send)
        return
    size = 0
    if path != "/early":
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
            if path.startswith("/pause/"):
                await asyncio.sleep(int(path.removeprefix("/pause/")) / 1000)
    if path.startswith("/sleep/"):
        await asyncio.sleep(int(path.removeprefix("/sleep/")) / 1000)
    if path.startswith("/late-body/"):  # the head at once, the body that long after
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(int(path.removeprefix("/late-body/")) / 1000)
        await send({"type": "http.response.body", "body": b"late"})
        return
    body = b"early" if path == "/early" else b"read %d" % size
    await send({"type": "http.response.start", "status": 413 if path == "/early" else 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _buffer_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/buffer/<max_body_bytes>`: the body read as the binary routes read it (gateway.body),
    answered with its type, size and SHA-256; 413 over the limit, 408 past the body's time."""
    settings = Settings(max_body_bytes=int(scope["path"].removeprefix("/buffer/")))
    try:
        body = await read_body_buffer(Request(scope, receive), settings)
    except (PayloadTooLarge, RequestTimeout, ClientClosed) as error:
        answer, status = error.message.encode(), error.status
    else:
        answer, status = b"%s %d %s" % (type(body).__name__.encode(), len(body),
                                        hashlib.sha256(body).hexdigest().encode()), 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@contextlib.asynccontextmanager
async def serve_paced(settings: Settings, server_class: type[UvicornServer] = UvicornServer,
                      **config: Any) -> AsyncIterator[tuple[UvicornServer, int]]:
    """`paced_app` under the gateway's uvicorn server and protocol; yields the server and port."""
    sock = loopback_socket()
    port = sock.getsockname()[1]
    server = server_class(uvicorn.Config(paced_app, host="127.0.0.1", port=port, log_config=None,
                                          access_log=False, lifespan="on", http=http_protocol(settings),
                                          **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
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


async def test_a_pipelined_request_has_its_body_deadline_from_its_turn() -> None:
    async with serve_paced(Settings(body_timeout_s=0.5)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The second request waits 0.8 s for its turn, with half its body; the rest comes later.
        writer.write(b"POST /sleep/800 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        assert (await read_answer(reader, b"read 0")).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.2)
        writer.write(b"world")
        second = await read_answer(reader, b"read 10")  # not a 408: the wait for its turn is not counted
        assert second.startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_headers_late_behind_a_request_in_flight_do_not_answer_in_its_place() -> None:
    async with serve_paced(Settings(header_timeout_s=0.3)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A whole request the app takes 0.8 s over, then part of the next one's headers.
        writer.write(b"POST /sleep/800 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"GET /read HTTP/1.1\r\nHost: x\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        assert answer.startswith(b"HTTP/1.1 200 "), answer  # its own answer, not a 408 in its place
        assert answer.endswith(b"read 0")
        assert b"connection: close" in answer.lower()
        writer.close()


async def test_at_shutdown_a_fresh_connection_still_gets_its_first_request_served() -> None:
    async with serve_paced(Settings()) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        deadline = time.monotonic() + 5
        while not server.server_state.connections:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        server.should_exit = True
        await asyncio.sleep(1.0)  # a busy client: its request comes a second after it connected
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"connection: close" in answer.lower()
        writer.close()


async def test_time_the_server_is_not_reading_is_not_counted_against_the_body() -> None:
    async with serve_paced(Settings(body_timeout_s=0.5)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        size = 2_000_000  # the app pauses 0.15 s between reads: reading stops at 64 KiB unread
        started = time.monotonic()
        writer.write(b"POST /pause/150 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"a" * size)
        answer = await read_answer(reader, b"read %d" % size, timeout=20)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started > 0.7  # longer than the body timeout: the app took its time
        writer.close()


async def test_a_body_stalled_by_the_client_is_408_however_the_app_reads() -> None:
    async with serve_paced(Settings(body_timeout_s=0.5)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"POST /pause/100 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 70_000)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 500 ")  # the app does not handle RequestTimeout
        assert 0.45 < time.monotonic() - started < 2.0
        writer.close()


class QueuedAtShutdown(UvicornServer):
    """Clients connect (and wait in the listening socket's queue) just as the shutdown begins."""

    clients = 2
    queued: list[socket.socket]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.queued = [socket.create_connection(("127.0.0.1", self.config.port)) for _ in range(self.clients)]
        await super().shutdown(sockets)


async def test_a_silent_tls_client_queued_at_shutdown_does_not_hold_it_up(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path)
    settings = Settings(header_timeout_s=1)  # the queued connections' handshakes get as long
    client_tls = ssl.create_default_context(cafile=str(certificates.ca))
    async with serve_paced(settings, server_class=QueuedAtShutdown, ssl_certfile=str(certificates.server_cert),
                           ssl_keyfile=str(certificates.server_key)) as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert (await read_answer(reader, b"read 2")).startswith(b"HTTP/1.1 200 ")
        server.should_exit = True

        async def queued() -> bool:
            return hasattr(server, "queued")
        await eventually(queued, what="clients queued at the shutdown")
        assert isinstance(server, QueuedAtShutdown)
        started = time.monotonic()
        silent, talking = server.queued  # the first sends nothing, not even its TLS hello
        reader, writer = await asyncio.open_connection(sock=talking, ssl=client_tls, server_hostname="127.0.0.1")
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        answer = await asyncio.wait_for(reader.read(), 5)  # served, then closed
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" in answer
        assert answer.endswith(b"read 5")
        writer.close()
    stopped_s = time.monotonic() - started  # the server has stopped
    assert silent.recv(1) == b""  # closed once its handshake timed out (not reset)
    silent.close()
    assert stopped_s < 2.5, stopped_s  # the handshake timeout (1 s) and the drain, not 60 s
    print(f"\nTLS, a silent client queued at shutdown: stopped {stopped_s:.2f} s after (handshake timeout 1 s)")


class ErringQueue:
    """A listening socket's accept() as the kernel may answer it at shutdown (the errors cannot
    be provoked on loopback): a connection, or an error, until the queue is empty."""

    def __init__(self, *outcomes: OSError | None) -> None:
        self.outcomes = list(outcomes)
        self.accepted: list[socket.socket] = []

    def accept(self) -> tuple[socket.socket, Any]:
        outcome = self.outcomes.pop(0) if self.outcomes else BlockingIOError(errno.EAGAIN, "empty")
        if outcome is not None:
            raise outcome
        connection = socket.socket()
        self.accepted.append(connection)
        return connection, None


@pytest.mark.parametrize(("outcomes", "accepted"), [
    ((None, ConnectionAbortedError(errno.ECONNABORTED, "aborted"), None), 2),
    ((OSError(errno.EPROTO, "protocol error"), None), 1),
    ((None, OSError(errno.EMFILE, "too many open files"), None), 1),
    ((OSError(errno.ENFILE, "file table full"), None), 0),
], ids=["aborted-skipped", "eproto-skipped", "emfile-stops", "enfile-stops"])
def test_accepting_the_queue_skips_clients_gone_and_stops_when_out_of_files(
        outcomes: tuple[OSError | None, ...], accepted: int, caplog: pytest.LogCaptureFixture) -> None:
    queue = ErringQueue(*outcomes)
    pending: list[socket.socket] = []
    _accept_queued(queue, pending)  # type: ignore[arg-type]
    assert pending == queue.accepted
    assert len(pending) == accepted
    assert ("could not accept" in caplog.text) == any(
        isinstance(outcome, OSError) and outcome.errno in (errno.EMFILE, errno.ENFILE) for outcome in outcomes)
    for connection in pending:
        connection.close()


async def test_closed_connections_are_freed_without_the_cycle_collector() -> None:
    settings = Settings(body_timeout_s=5)
    async with serve_paced(settings) as (server, port):
        protocol_class = server.config.http_protocol_class
        gc.collect()
        gc.disable()  # what is left now is only freed by the collector: a reference cycle
        try:
            for first, rest in ((b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", b""),
                                (b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello", b"world"),
                                (b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello", b"world")):
                for _ in range(20):  # whole, answered before its body, body in two parts
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(first)
                    await asyncio.sleep(0.005)
                    writer.write(rest)
                    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 ")
                    writer.close()
                    await writer.wait_closed()
            async def closed() -> bool:
                return not server.server_state.connections
            await eventually(closed, what="every connection closed")

            def protocols_left() -> int:
                return sum(1 for thing in gc.get_objects() if type(thing) is protocol_class)

            async def freed() -> bool:  # the last connection_lost callbacks may still be queued
                return protocols_left() == 0
            with contextlib.suppress(AssertionError):  # not freed by then: the count below says how many
                await eventually(freed, timeout=1, what="every protocol freed")
            left = protocols_left()
        finally:
            gc.enable()
    assert left == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket filters are Linux's")
def test_a_listener_refusing_handshakes_keeps_its_connections() -> None:
    # At shutdown the listener drops new SYNs before its queue is drained and it closes: a client
    # then retries and is refused (never sent) instead of being reset after sending a request.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        queued = socket.create_connection(address)
        _refuse_new_handshakes(listener)
        late = socket.socket()
        late.settimeout(0.3)
        with pytest.raises(TimeoutError):
            late.connect(address)  # its SYN is dropped, not answered
        accepted, _ = listener.accept()  # a connection queued before is still served
        queued.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        for sock in (queued, late, accepted):
            sock.close()


async def test_draining_closes_each_connection_after_its_last_request_read() -> None:
    """The shutdown grace (`begin_draining`): a request in flight is answered with `Connection:
    close`, unless a request pipelined behind it arrives, which is then answered too and carries the
    close; requests pipelined before the grace are all answered, the last one closing."""
    async with serve_paced(Settings()) as (server, port):
        in_flight = await asyncio.open_connection("127.0.0.1", port)
        in_flight[1].write(b"POST /sleep/400 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        alone = await asyncio.open_connection("127.0.0.1", port)
        alone[1].write(b"POST /sleep/400 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        pipelined = await asyncio.open_connection("127.0.0.1", port)
        pipelined[1].write(b"POST /sleep/400 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                           b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        await asyncio.sleep(0.1)
        begin_draining(server)
        in_flight[1].write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")  # behind it, in the grace
        answers = [await asyncio.wait_for(reader.read(), 5) for reader, _ in (in_flight, alone, pipelined)]
        for _, writer in (in_flight, alone, pipelined):
            writer.close()
    first, second = answers[0].split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ")
    assert b"connection: close" not in first.lower()  # gave the connection to the one behind it
    assert second.startswith(b"200 ")
    assert second.lower().endswith(b"connection: close\r\n\r\nread 1")
    assert answers[1].startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in answers[1].lower()
    assert answers[2].count(b"HTTP/1.1 200 ") == 2
    assert answers[2].lower().endswith(b"connection: close\r\n\r\nread 2")


class _RecordingTransport(asyncio.Transport):
    """A transport that keeps what is written, one entry per write call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[bytes]] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append([bytes(data)])

    def writelines(self, lines: Any) -> None:
        self.writes.append([bytes(line) for line in lines])

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Protocol:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.closes = 0

    def close_after_response(self) -> None:
        self.closes += 1


async def test_an_answers_head_leaves_with_its_body_in_one_write() -> None:
    raw = _RecordingTransport()
    protocol = _Protocol(asyncio.get_running_loop())
    transport = _CycleTransport(raw, protocol)  # type: ignore[arg-type]
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    transport.write(head)
    assert raw.writes == []
    assert transport.holding
    transport.write(b"body")
    assert raw.writes == [[head + b"body"]]
    large = b"x" * (JOIN_LIMIT + 1)
    transport.write(head)
    transport.write(large)
    assert raw.writes[1] == [head, large]  # beside, not copied into one
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer goes at once
    assert raw.writes[2] == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    await asyncio.sleep(0)
    assert len(raw.writes) == 3  # nothing held, nothing written later


async def test_a_held_head_is_written_at_the_end_of_the_turn_or_before_a_close() -> None:
    raw = _RecordingTransport()
    protocol = _Protocol(asyncio.get_running_loop())
    transport = _CycleTransport(raw, protocol)  # type: ignore[arg-type]
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    transport.write(head)
    await asyncio.sleep(0)
    assert raw.writes == [[head]]
    assert not transport.holding
    transport.write(b"4\r\nbody\r\n")  # a body written after its head went out is not held
    assert raw.writes[1] == [b"4\r\nbody\r\n"]
    transport.write(head)
    transport.close()  # a head-only answer that closes the connection is written first
    assert raw.writes[2] == [head]
    assert protocol.closes == 1


async def test_a_head_whose_body_comes_later_reaches_the_client_before_it() -> None:
    async with serve_paced(Settings()) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /late-body/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        head = await read_answer(reader, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert time.monotonic() - started < 1.2
        assert await read_answer(reader, b"late") == b"late"
        writer.close()


def _tensor_request(size: int, limit: int, content_type: bytes = b"application/octet-stream",
                    extra: bytes = b"") -> bytes:
    return (b"POST /buffer/%d HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (limit, content_type, size, extra))


def _expected(kind: bytes, body: bytes) -> bytes:
    return b"%s %d %s" % (kind, len(body), hashlib.sha256(body).hexdigest().encode())


async def test_a_large_raw_tensor_is_read_into_one_buffer_and_other_bodies_as_before() -> None:
    limit = 8 * WHOLE_BODY_MIN_BYTES
    body = bytes(range(256)) * (3 * WHOLE_BODY_MIN_BYTES // 256 + 7)  # not a multiple of any read
    async with serve_paced(Settings(max_body_bytes=limit)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for kind, content_type, extra in ((b"memoryview", b"application/octet-stream", b""),
                                          (b"memoryview", b"Application/Octet-Stream; x=1", b""),
                                          (b"bytes", b"application/json", b""),  # not a raw tensor
                                          (b"memoryview", b"application/json",  # the OIP's extension
                                           b"Inference-Header-Content-Length: 2\r\n")):
            writer.write(_tensor_request(len(body), limit, content_type, extra))
            for start in range(0, len(body), 700_001):  # in parts, as a slow client sends it
                writer.write(body[start:start + 700_001])
                await writer.drain()
                await asyncio.sleep(0.01)
            answer = await read_answer(reader, _expected(kind, body), timeout=20)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        # A small raw tensor, and a large one that came with its headers: the chunked path.
        small = body[:1000]
        writer.write(_tensor_request(len(small), limit) + small)
        assert (await read_answer(reader, _expected(b"bytes", small))).startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_a_raw_tensor_over_the_limit_is_413_before_any_buffer_and_a_stalled_one_408() -> None:
    limit = 2 * WHOLE_BODY_MIN_BYTES
    async with serve_paced(Settings(max_body_bytes=limit, body_timeout_s=0.5)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_tensor_request(limit + 1, limit) + b"a" * 300_000)
        assert (await read_answer(reader, b"bytes")).startswith(b"HTTP/1.1 413 ")
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(_tensor_request(limit, limit) + b"a" * 300_000)  # then nothing more
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert 0.45 < time.monotonic() - started < 2.0
        writer.close()


async def test_a_client_gone_mid_tensor_frees_its_buffer_and_the_server_goes_on() -> None:
    limit = 4 * WHOLE_BODY_MIN_BYTES
    async with serve_paced(Settings(max_body_bytes=limit)) as (_, port):
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_tensor_request(limit, limit) + b"a" * 1_500_000)
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"b" * (2 * WHOLE_BODY_MIN_BYTES)
        writer.write(_tensor_request(len(body), limit))
        await asyncio.sleep(0.02)
        writer.write(body)
        assert (await read_answer(reader, _expected(b"memoryview", body), timeout=20)).startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_a_large_tensor_queued_behind_another_request_is_still_read_into_one_buffer() -> None:
    """The request before it completing must not take the queued one's buffer offer with it."""
    size = 2 * WHOLE_BODY_MIN_BYTES
    async with serve_paced(Settings()) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /sleep/300 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                     b"POST /buffer/%d HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % (1 << 30, size) + b"a" * 1000)
        await writer.drain()
        assert (await read_answer(reader, b"read 0")).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.2)
        writer.write(b"a" * (size - 1000))
        await read_answer(reader, b"\r\n\r\n")
        body = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
    assert body == b"memoryview %d %s" % (size, hashlib.sha256(b"a" * size).hexdigest().encode())


@pytest.mark.parametrize("tls", [False, True])  # TLS: the body into its buffer through the parser
async def test_a_large_tensor_pipelined_with_the_next_request_leaves_it_to_the_parser(tmp_path: Path,
                                                                                     tls: bool) -> None:
    await _large_tensor_pipelined(tmp_path, tls)


def test_a_large_tensor_pipelined_with_the_next_request_under_uvloop(tmp_path: Path) -> None:
    uvloop.run(_large_tensor_pipelined(tmp_path, tls=False))  # the gateway's loop: its own buffered reads


async def _large_tensor_pipelined(tmp_path: Path, tls: bool) -> None:
    limit = 4 * WHOLE_BODY_MIN_BYTES
    body = bytes(range(251)) * (2 * WHOLE_BODY_MIN_BYTES // 251)
    config: dict[str, Any] = {}
    client_tls = None
    if tls:
        certificates = make_certificates(tmp_path)
        config = {"ssl_certfile": str(certificates.server_cert), "ssl_keyfile": str(certificates.server_key)}
        client_tls = ssl.create_default_context(cafile=str(certificates.ca))
    async with serve_paced(Settings(max_body_bytes=limit), **config) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
        writer.write(_tensor_request(len(body), limit) + body[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)  # the headers read on their own: the rest is read past the parser
        # The body's rest and two more requests in one write: the second a tensor too.
        writer.write(body[1000:] + _tensor_request(len(body), limit) + body
                     + b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert (await read_answer(reader, _expected(b"memoryview", body), timeout=20)).startswith(b"HTTP/1.1 200 ")
        second = await read_answer(reader, b"read 5", timeout=20)
        assert _expected(b"bytes", body) in second or _expected(b"memoryview", body) in second
        writer.close()


async def test_a_large_tensor_an_app_reads_through_receive_comes_whole_that_way() -> None:
    """An app that does not ask for the one buffer (an upload of an archive, typed as raw bytes)
    gets every byte through `receive`, as uvicorn gives it; and one answered before reading keeps
    its connection for the next request."""
    size = 3 * WHOLE_BODY_MIN_BYTES
    async with serve_paced(Settings(max_body_bytes=4 * WHOLE_BODY_MIN_BYTES)) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for path, answer in ((b"/read", b"read %d" % size), (b"/early", b"early")):
            writer.write(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % (path, size))
            for start in range(0, size, 500_000):
                writer.write(b"z" * min(500_000, size - start))
                await writer.drain()
            assert (await read_answer(reader, answer, timeout=20)).startswith(b"HTTP/1.1 ")
        writer.write(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert (await read_answer(reader, b"read 5")).startswith(b"HTTP/1.1 200 ")
        writer.close()
