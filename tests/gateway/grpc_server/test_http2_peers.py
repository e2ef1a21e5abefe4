"""The in-loop gRPC server against HTTP/2 peers that are not grpcio, for what grpcio never sends:
frames written one by one (hyperframe's frames, hpack's header blocks) to check RFC 9113's rules
(CONTINUATION, padding, PRIORITY, stream states, malformed requests, connection errors), the `h2`
package's client for flow control (a tiny window, the smallest frame size), and h2load."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe import frame as hf

from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.connection import Stream
from gateway.grpc_server.server import GrpcServer, ServerOptions
from gateway.serving.server import bound_socket

ECHO, SLOW, HELD, HEADER, SIZED = "/t.T/Echo", "/t.T/Slow", "/t.T/Held", "/t.T/Header", "/t.T/Sized"
UNWINDING = "/t.T/Unwinding"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FrameT = TypeVar("FrameT", bound=hf.Frame)
PROTOCOL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 1, 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11


class Handlers:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.gate = asyncio.Event()

    async def echo(self, raw: bytes, call: ServerCall) -> bytes:
        return raw

    async def slow(self, raw: bytes, call: ServerCall) -> bytes:
        self.started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return raw

    async def held(self, raw: bytes, call: ServerCall) -> bytes:
        await self.gate.wait()
        return raw

    async def header(self, raw: bytes, call: ServerCall) -> bytes:
        """The value of the metadata named by the request; a large trailer when asked for one."""
        values = dict(call.metadata)
        if "x-trailer-size" in values:
            call.trailing_metadata.append(("x-large", "t" * int(values["x-trailer-size"])))
        return values.get(raw.decode(), "").encode()

    async def sized(self, raw: bytes, call: ServerCall) -> bytes:
        return b"\xab" * int(raw)

    async def unwinding(self, raw: bytes, call: ServerCall) -> bytes:
        """Takes a while to end once cancelled."""
        self.started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            self.cancelled.set()
            raise
        return raw

    def table(self) -> dict[str, RpcHandler]:
        return {ECHO: RpcHandler(unary=self.echo), SLOW: RpcHandler(unary=self.slow),
                HELD: RpcHandler(unary=self.held), HEADER: RpcHandler(unary=self.header),
                SIZED: RpcHandler(unary=self.sized), UNWINDING: RpcHandler(unary=self.unwinding)}


@contextlib.asynccontextmanager
async def serving(handlers: Handlers, options: ServerOptions | None = None) -> AsyncIterator[int]:
    server = GrpcServer(handlers.table(), options or ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    try:
        yield port
    finally:
        await server.stop(0)


def request(path: str = ECHO, *extra: tuple[str, str], method: str = "POST",
            content_type: str = "application/grpc") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
            ("content-type", content_type), ("te", "trailers"), *extra]


def message(payload: bytes) -> bytes:
    return struct.pack(">BL", 0, len(payload)) + payload


@dataclass
class Answer:
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None

    @property
    def grpc_status(self) -> str | None:
        return dict(self.trailers or self.headers).get("grpc-status")


class RawClient:
    """Frames written as given; the server's frames read one by one, its header blocks decoded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()

    @classmethod
    async def connect(cls, port: int, preface: bytes = PREFACE, settings: bool = True) -> RawClient:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.writer.write(preface)
        if settings:
            client.send(hf.SettingsFrame(0))
        return client

    def send(self, *frames: hf.Frame) -> None:
        self.writer.write(b"".join(frame.serialize() for frame in frames))

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def call(self, stream_id: int, headers: list[tuple[str, str]], body: bytes | None) -> None:
        """A request: HEADERS, and the body in one DATA frame that ends the stream."""
        end = {"END_HEADERS"} | ({"END_STREAM"} if body is None else set())
        self.send(hf.HeadersFrame(stream_id, self.block(headers), flags=end))
        if body is not None:
            self.send(hf.DataFrame(stream_id, body, flags={"END_STREAM"}))

    async def frame(self) -> hf.Frame | None:
        """The next frame, None once the server closed the connection."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(9), 5)
            frame, length = hf.Frame.parse_frame_header(memoryview(header))
            frame.parse_body(memoryview(await self.reader.readexactly(length)))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        if isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
            self.send(hf.SettingsFrame(0, flags={"ACK"}))
        return frame

    async def until(self, wanted: Callable[[hf.Frame], bool]) -> hf.Frame | None:
        while (frame := await self.frame()) is not None:
            if wanted(frame):
                return frame
        return None

    async def next(self, kind: type[FrameT]) -> FrameT:
        """The server's next frame of that type."""
        frame = await self.until(lambda frame: isinstance(frame, kind))
        assert isinstance(frame, kind), f"the connection closed before a {kind.__name__}"
        return frame

    async def goaway(self) -> int | None:
        """The error code of the server's GOAWAY, None when it closed without one."""
        frame = await self.until(lambda frame: isinstance(frame, hf.GoAwayFrame))
        return None if not isinstance(frame, hf.GoAwayFrame) else int(frame.error_code)

    async def answer(self, stream_id: int) -> Answer:
        answer, block = Answer(), b""
        while True:
            frame = await self.frame()
            assert frame is not None, "the connection closed before the answer ended"
            if frame.stream_id != stream_id:
                continue
            if isinstance(frame, hf.RstStreamFrame):
                answer.reset = int(frame.error_code)
                return answer
            if isinstance(frame, hf.DataFrame):
                answer.data += frame.data
            elif isinstance(frame, (hf.HeadersFrame, hf.ContinuationFrame)):
                block += frame.data
                if "END_HEADERS" in frame.flags:
                    fields = [(str(name), str(value)) for name, value in self.decoder.decode(block)]
                    block = b""
                    if answer.headers:
                        answer.trailers = fields
                    else:
                        answer.headers = fields
            if "END_STREAM" in frame.flags and isinstance(frame, (hf.HeadersFrame, hf.DataFrame)):
                if not block:
                    return answer
            elif isinstance(frame, hf.ContinuationFrame) and "END_HEADERS" in frame.flags:
                return answer  # the END_STREAM was on the HEADERS these continued

    def close(self) -> None:
        self.writer.close()


async def test_continuation_frames_carry_one_header_block() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        block = client.block(request(HEADER, ("x-long", "v" * 3000)))
        third = len(block) // 3
        client.send(hf.HeadersFrame(1, block[:third]), hf.ContinuationFrame(1, block[third:2 * third]),
                    hf.ContinuationFrame(1, block[2 * third:], flags={"END_HEADERS"}),
                    hf.DataFrame(1, message(b"x-long"), flags={"END_STREAM"}))
        answer = await client.answer(1)
        client.close()
    assert answer.grpc_status == "0"
    assert answer.data == message(b"v" * 3000)


async def test_padded_headers_with_priority_and_padded_data() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS", "PADDED", "PRIORITY"},
                                    pad_length=7, depends_on=0, stream_weight=15),
                    hf.DataFrame(1, message(b"padded"), flags={"END_STREAM", "PADDED"}, pad_length=20))
        answer = await client.answer(1)
        client.close()
    assert (answer.grpc_status, answer.data) == ("0", message(b"padded"))


async def test_priority_frames_are_accepted_and_ignored() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.PriorityFrame(3, depends_on=0, stream_weight=200),  # an idle stream: allowed
                    hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}),
                    hf.PriorityFrame(1, depends_on=3, stream_weight=1, exclusive=True),
                    hf.DataFrame(1, message(b"p"), flags={"END_STREAM"}))
        answer = await client.answer(1)
        client.close()
    assert (answer.grpc_status, answer.data) == ("0", message(b"p"))


async def test_ping_is_answered_with_its_ack() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.PingFrame(0, opaque_data=b"12345678"))
        ack = await client.next(hf.PingFrame)
        client.close()
    assert "ACK" in ack.flags
    assert ack.opaque_data == b"12345678"


async def test_client_reset_cancels_the_handler_and_the_connection_lives_on() -> None:
    handlers = Handlers()
    async with serving(handlers) as port:
        client = await RawClient.connect(port)
        client.call(1, request(SLOW), message(b""))
        await asyncio.wait_for(handlers.started.wait(), 5)
        client.send(hf.RstStreamFrame(1, error_code=CANCEL))
        await asyncio.wait_for(handlers.cancelled.wait(), 2)
        client.call(3, request(), message(b"next"))
        answer = await client.answer(3)
        client.close()
    assert (answer.grpc_status, answer.data) == ("0", message(b"next"))


async def test_second_message_on_a_unary_call_is_internal() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, request(), message(b"one") + message(b"two"))
        answer = await client.answer(1)
        client.close()
    assert answer.grpc_status == str(grpc.StatusCode.INTERNAL.value[0])
    assert dict(answer.headers)["grpc-message"] == "more than one request message for a method that takes one"


@pytest.mark.parametrize(("headers", "status"), [
    (request(method="GET"), "405"),
    (request(content_type="application/json"), "415"),
])
async def test_requests_that_are_not_grpc_calls_get_an_http_status(headers: list[tuple[str, str]],
                                                                   status: str) -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, headers, b"{}")
        answer = await client.answer(1)
        client.close()
    assert dict(answer.headers)[":status"] == status
    assert answer.data == b""


async def test_content_length_with_a_message_split_into_small_frames_and_on_a_415() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        body = message(b"hello")
        client.send(hf.HeadersFrame(1, client.block(request(ECHO, ("content-length", str(len(body))))),
                                    flags={"END_HEADERS"}),
                    hf.DataFrame(1, body[:3]), hf.DataFrame(1, body[3:], flags={"END_STREAM"}))
        answer = await client.answer(1)
        json = [*request(content_type="application/json"), ("content-length", "2")]
        client.send(hf.HeadersFrame(3, client.block(json), flags={"END_HEADERS"}),
                    hf.DataFrame(3, b"{}", flags={"END_STREAM"}))
        rejected = await client.answer(3)
        client.call(5, request(), message(b"after"))
        after = await client.answer(5)
        client.close()
    assert (answer.grpc_status, answer.data) == ("0", body)
    assert dict(rejected.headers)[":status"] == "415"
    assert (after.grpc_status, after.data) == ("0", message(b"after"))


def _without(name: str) -> list[tuple[str, str]]:
    return [field for field in request() if field[0] != name]


MALFORMED = {  # RFC 9113 8.1.1, 8.2, 8.3.1: each a stream error of type PROTOCOL_ERROR
    "upper-case name": request(ECHO, ("X-Upper", "1")),
    "unknown pseudo-header": [(":foo", "bar"), *request()],
    "response pseudo-header": [(":status", "200"), *request()],
    "pseudo-header after a field": [*request(), (":authority", "again")],
    "connection-specific field": request(ECHO, ("connection", "keep-alive")),
    "te other than trailers": [*_without("te"), ("te", "gzip")],
    "empty :path": [(name, "" if name == ":path" else value) for name, value in request()],
    "no :method": _without(":method"),
    "no :scheme": _without(":scheme"),
    "no :path": _without(":path"),
    "two :method": [(":method", "POST"), *request()],
    "two :path": [(":path", ECHO), *request()],
    "a value with a line feed": request(ECHO, ("x-bad", "a\nb")),
    "a value with a carriage return": request(ECHO, ("x-bad", "a\rb")),
    "content-length not the body's": request(ECHO, ("content-length", "3")),
}


@pytest.mark.parametrize("headers", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_is_reset_and_the_connection_lives_on(headers: list[tuple[str, str]]) -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, headers, message(b"body"))
        reset = await client.answer(1)
        client.call(3, request(), message(b"fine"))
        answer = await client.answer(3)
        client.close()
    assert reset.reset == PROTOCOL_ERROR
    assert (answer.grpc_status, answer.data) == ("0", message(b"fine"))


async def test_request_trailers_with_a_pseudo_header_are_malformed() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}),
                    hf.DataFrame(1, message(b"x")),
                    hf.HeadersFrame(1, client.block([(":path", "/")]), flags={"END_HEADERS", "END_STREAM"}))
        answer = await client.answer(1)
        client.close()
    assert answer.reset == PROTOCOL_ERROR


async def test_request_trailers_end_the_request() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}),
                    hf.DataFrame(1, message(b"x")),
                    hf.HeadersFrame(1, client.block([("x-trailer", "1")]), flags={"END_HEADERS", "END_STREAM"}))
        answer = await client.answer(1)
        client.close()
    assert (answer.grpc_status, answer.data) == ("0", message(b"x"))


async def test_data_after_the_request_ended_is_stream_closed() -> None:
    handlers = Handlers()
    async with serving(handlers) as port:
        client = await RawClient.connect(port)
        client.call(1, request(SLOW), message(b""))
        await asyncio.wait_for(handlers.started.wait(), 5)
        client.send(hf.DataFrame(1, b"late"))
        answer = await client.answer(1)
        await asyncio.wait_for(handlers.cancelled.wait(), 2)
        client.close()
    assert answer.reset == STREAM_CLOSED


async def test_priority_on_its_own_stream_is_a_stream_error() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS", "PRIORITY"}, depends_on=1))
        answer = await client.answer(1)
        client.send(hf.PriorityFrame(3, depends_on=3))  # an idle stream: no RST_STREAM on it (RFC 9113 6.4)
        code = await client.goaway()
        client.close()
    assert (answer.reset, code) == (PROTOCOL_ERROR, PROTOCOL_ERROR)


async def test_a_malformed_priority_on_a_closed_stream_is_reset_and_on_an_idle_one_a_connection_error() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, request(), message(b"1"))
        await client.answer(1)
        client.writer.write(b"\x00\x00\x04\x02\x00\x00\x00\x00\x01" + b"\x00" * 4)  # PRIORITY of 4 bytes
        reset = await client.next(hf.RstStreamFrame)
        client.writer.write(b"\x00\x00\x04\x02\x00\x00\x00\x00\x05" + b"\x00" * 4)
        code = await client.goaway()
        client.close()
    assert (reset.stream_id, reset.error_code, code) == (1, FRAME_SIZE_ERROR, FRAME_SIZE_ERROR)


def _even_stream(client: RawClient) -> None:
    client.send(hf.HeadersFrame(2, client.block(request()), flags={"END_HEADERS", "END_STREAM"}))


def _undecodable(client: RawClient) -> None:
    client.send(hf.HeadersFrame(1, b"\x80", flags={"END_HEADERS", "END_STREAM"}))  # index 0: no such field


def _lower_stream(client: RawClient) -> None:
    client.call(5, request(), message(b""))
    client.call(3, request(), message(b""))


def _window_update_on_idle(client: RawClient) -> None:
    client.send(hf.WindowUpdateFrame(7, window_increment=100))


def _interrupted_block(client: RawClient) -> None:
    client.send(hf.HeadersFrame(1, client.block(request())), hf.PingFrame(0, opaque_data=b"\0" * 8))


CONNECTION_ERRORS = {  # RFC 9113 5.1, 5.1.1, 4.3, 6.10: a GOAWAY with the error's code
    "HEADERS on an even stream": (_even_stream, PROTOCOL_ERROR),
    "a header block that does not decode": (_undecodable, COMPRESSION_ERROR),
    "a stream below the last one": (_lower_stream, PROTOCOL_ERROR),
    "WINDOW_UPDATE on an idle stream": (_window_update_on_idle, PROTOCOL_ERROR),
    "a header block interrupted": (_interrupted_block, PROTOCOL_ERROR),
}


@pytest.mark.parametrize(("write", "code"), CONNECTION_ERRORS.values(), ids=CONNECTION_ERRORS.keys())
async def test_connection_error_is_a_goaway_with_its_code(write: Callable[[RawClient], None], code: int) -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        write(client)
        assert await client.goaway() == code
        assert await client.frame() is None  # and the connection closed
        client.close()


async def test_headers_on_a_closed_stream_is_stream_closed() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, request(), message(b""))
        assert (await client.answer(1)).grpc_status == "0"
        client.call(1, request(), message(b""))
        assert await client.goaway() == STREAM_CLOSED
        client.close()


@pytest.mark.parametrize(("preface", "settings"), [
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", False),
    (PREFACE + hf.PingFrame(0, opaque_data=b"\0" * 8).serialize(), False),  # the first frame not SETTINGS
], ids=["HTTP/1.1", "no SETTINGS first"])
async def test_bad_preface_is_a_protocol_error(preface: bytes, settings: bool) -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port, preface, settings)
        assert await client.goaway() == PROTOCOL_ERROR
        client.close()


async def test_streams_over_the_concurrency_limit_are_refused() -> None:
    handlers = Handlers()
    async with serving(handlers, ServerOptions(max_concurrent_streams=2)) as port:
        client = await RawClient.connect(port)
        for stream_id in (1, 3, 5):
            client.call(stream_id, request(HELD), message(b"%d" % stream_id))
        refused = await client.answer(5)
        handlers.gate.set()
        answers = [await client.answer(1), await client.answer(3)]
        client.close()
    assert refused.reset == REFUSED_STREAM
    assert [(answer.grpc_status, answer.data) for answer in answers] == [("0", message(b"1")), ("0", message(b"3"))]


async def test_a_client_that_reads_nothing_holds_a_bounded_write_buffer_and_stop_drops_its_socket() -> None:
    server = GrpcServer(Handlers().table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)  # reads a few KiB, then stops
    client = RawClient(reader, writer)
    writer.write(PREFACE)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}),
                hf.WindowUpdateFrame(0, window_increment=2**31 - 1 - 65_535))
    client.call(1, request(SIZED), message(b"30000000"))  # a 30 MB answer the windows let go at once
    await asyncio.sleep(0.5)
    (connection,) = server.connections
    assert connection.transport is not None
    buffered = connection.transport.get_write_buffer_size()
    data, trailers = 0, dict[str, str]()  # once read, the rest of the answer follows
    while not trailers:
        frame = await client.frame()
        assert frame is not None
        if isinstance(frame, hf.DataFrame):
            data += len(frame.data)
        elif isinstance(frame, hf.HeadersFrame) and "END_STREAM" in frame.flags:
            trailers = {str(name): str(value) for name, value in client.decoder.decode(frame.data)}
    client.call(3, request(SIZED), message(b"30000000"))
    await asyncio.sleep(0.5)
    await server.stop(0)
    await asyncio.sleep(0.05)
    left = connection.transport.get_write_buffer_size()
    writer.close()
    assert buffered < 4 * 1024 * 1024
    assert (trailers.get("grpc-status"), data) == ("0", 30_000_005)
    assert left == 0


async def test_a_ping_flood_is_enhance_your_calm_and_pings_between_calls_are_not() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        answers = []
        for stream_id in (1, 3):
            client.send(*[hf.PingFrame(0, opaque_data=b"%08d" % n) for n in range(400)])
            client.call(stream_id, request(), message(b"between"))
            answers.append(await client.answer(stream_id))
        client.send(*[hf.PingFrame(0, opaque_data=b"%08d" % n) for n in range(1000)])
        code = await client.goaway()
        client.close()
    assert [(answer.grpc_status, answer.data) for answer in answers] == [("0", message(b"between"))] * 2
    assert code == ENHANCE_YOUR_CALM


async def test_settings_flush_answers_only_when_the_initial_window_grew() -> None:
    server = GrpcServer(Handlers().table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    client = await RawClient.connect(port, settings=False)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0}))
    stream_ids = range(1, 101, 2)
    for stream_id in stream_ids:
        client.call(stream_id, request(SIZED), message(b"100"))  # answers wait for a stream window
    client.send(hf.PingFrame(0, opaque_data=b"answered"))
    await client.next(hf.PingFrame)
    (connection,) = server.connections
    flushed: list[int] = []
    flush = connection._flush

    def counted(stream: Stream) -> None:
        flushed.append(stream.id)
        flush(stream)

    connection._flush = counted  # type: ignore[method-assign]
    client.send(*[hf.SettingsFrame(0) for _ in range(100)], hf.PingFrame(0, opaque_data=b"settings"))
    await client.next(hf.PingFrame)
    unchanged = len(flushed)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 65_535}))
    answers = [await client.answer(stream_id) for stream_id in stream_ids]
    client.close()
    await server.stop(0)
    assert unchanged == 0
    assert sorted(flushed) == list(stream_ids)
    assert all((answer.grpc_status, answer.data) == ("0", message(b"\xab" * 100)) for answer in answers)


async def test_request_bytes_held_by_a_connection_stay_within_its_budget_and_window() -> None:
    # budget = max(4 x window, 2 x (message limit + 16 KiB)) = 1 MiB, then the 256 KiB window
    options = ServerOptions(connection_window=256 * 1024, max_receive_message_length=64 * 1024)
    server = GrpcServer(Handlers().table(), options)
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    client = await RawClient.connect(port, settings=False)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}),
                hf.WindowUpdateFrame(0, window_increment=2**31 - 1 - 65_535))  # the answers all go at once
    window, held, chunk = 256 * 1024, 0, b"\0" * 16 * 1024
    refused: set[int] = set()
    statuses: dict[int, str] = {}

    def read(frame: hf.Frame) -> int:
        if isinstance(frame, hf.WindowUpdateFrame) and frame.stream_id == 0:
            return int(frame.window_increment)
        if isinstance(frame, hf.RstStreamFrame) and frame.error_code == REFUSED_STREAM:
            refused.add(frame.stream_id)
        elif isinstance(frame, (hf.HeadersFrame, hf.ContinuationFrame)):
            fields = dict((str(name), str(value)) for name, value in client.decoder.decode(frame.data))
            if "grpc-status" in fields:
                statuses[frame.stream_id] = fields["grpc-status"]
        return 0

    async def send(stream_id: int, piece: bytes, end: bool = False) -> None:
        nonlocal window, held
        while window < len(piece):
            frame = await client.frame()
            assert frame is not None, "the server stalled the connection"
            window += read(frame)
        client.send(hf.DataFrame(stream_id, piece, flags={"END_STREAM"} if end else set()))
        window -= len(piece)
        await client.writer.drain()
        await asyncio.sleep(0)
        (connection,) = server.connections
        held = max(held, connection.buffered)

    stream_ids = range(1, 61, 2)
    for stream_id in stream_ids:  # 30 requests of 60 KiB, 48 KiB of each sent: 1.4 MiB held
        client.send(hf.HeadersFrame(stream_id, client.block(request()), flags={"END_HEADERS"}))
        for piece in (message(b"\0" * 60 * 1024)[:16 * 1024], chunk, chunk):
            await send(stream_id, piece)
    for stream_id in stream_ids:
        if stream_id not in refused:
            await send(stream_id, chunk[:12 * 1024 + 5], end=True)
    while len(statuses) + len(refused) < len(stream_ids) and (frame := await client.frame()) is not None:
        read(frame)
    client.close()
    await server.stop(0)
    assert held <= 1024 * 1024 + 256 * 1024
    assert refused != set()  # no handler ran: the client may retry them
    assert statuses == dict.fromkeys(set(stream_ids) - refused, "0")


async def test_a_request_that_does_not_end_is_ended_after_the_request_timeout() -> None:
    async with serving(Handlers(), ServerOptions(request_timeout_s=0.2)) as port:
        client = await RawClient.connect(port)
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}),
                    hf.DataFrame(1, message(b"never ended")))
        client.send(hf.HeadersFrame(3, client.block(request(content_type="application/json")), flags={"END_HEADERS"}))
        timed_out = await client.answer(1)
        reset = await client.answer(3)
        client.close()
    assert timed_out.grpc_status == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert reset.reset == CANCEL


async def ended(client: RawClient, stream_ids: set[int]) -> dict[int, tuple[float, dict[str, str], bytes]]:
    """Each stream's end: the loop time, its trailers, its DATA."""
    loop, ends, data = asyncio.get_running_loop(), dict[int, tuple[float, dict[str, str], bytes]](), dict[int, bytes]()
    while set(ends) != stream_ids:
        frame = await client.frame()
        assert frame is not None
        if isinstance(frame, hf.DataFrame):
            data[frame.stream_id] = data.get(frame.stream_id, b"") + frame.data
        elif isinstance(frame, hf.HeadersFrame) and "END_STREAM" in frame.flags:
            fields = {str(name): str(value) for name, value in client.decoder.decode(frame.data)}
            ends[frame.stream_id] = (loop.time(), fields, data.get(frame.stream_id, b""))
    return ends


async def test_the_request_timeout_ends_only_a_stalled_upload_and_a_longer_client_deadline_governs() -> None:
    async with serving(Handlers(), ServerOptions(request_timeout_s=0.3)) as port:
        client = await RawClient.connect(port)
        body = message(b"m" * 600)
        start = asyncio.get_running_loop().time()
        client.send(hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}),  # slow but steady
                    hf.HeadersFrame(3, client.block(request(ECHO, ("grpc-timeout", "700m"))), flags={"END_HEADERS"}),
                    hf.HeadersFrame(5, client.block(request()), flags={"END_HEADERS"}),  # stalls
                    hf.DataFrame(3, body[:100]), hf.DataFrame(5, body[:100]))

        async def steady() -> None:
            for offset in range(0, 500, 100):
                client.send(hf.DataFrame(1, body[offset:offset + 100]))
                await asyncio.sleep(0.1)
            client.send(hf.DataFrame(1, body[500:], flags={"END_STREAM"}))

        sender = asyncio.create_task(steady())
        ends = await ended(client, {1, 3, 5})
        await sender
        client.close()
    deadline_exceeded = str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert (ends[1][1]["grpc-status"], ends[1][2]) == ("0", body)
    assert (ends[3][1]["grpc-status"], ends[3][1]["grpc-message"]) == (deadline_exceeded, "Deadline Exceeded")
    assert ends[5][1]["grpc-status"] == deadline_exceeded
    assert "no progress" in ends[5][1]["grpc-message"]
    assert 0.3 <= ends[5][0] - start < 0.6
    assert 0.7 <= ends[3][0] - start < 1.0


async def test_the_request_timeout_stops_while_the_server_does_not_read() -> None:
    server = GrpcServer(Handlers().table(), ServerOptions(request_timeout_s=0.2))
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
    client = RawClient(reader, writer)
    writer.write(PREFACE)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}),
                hf.WindowUpdateFrame(0, window_increment=2**31 - 1 - 65_535),
                hf.HeadersFrame(1, client.block(request()), flags={"END_HEADERS"}), hf.DataFrame(1, message(b"up")[:3]))
    client.call(3, request(SIZED), message(b"6000000"))  # an answer the client does not read for a while
    await asyncio.sleep(0.5)
    (connection,) = server.connections
    assert connection.write_paused
    client.send(hf.DataFrame(1, message(b"up")[3:], flags={"END_STREAM"}))  # read once the server reads again
    ends = await ended(client, {1, 3})
    client.close()
    await server.stop(0)
    assert (ends[1][1]["grpc-status"], ends[1][2]) == ("0", message(b"up"))
    assert (ends[3][1]["grpc-status"], len(ends[3][2])) == ("0", 6_000_005)


async def test_a_header_block_over_64_kib_ends_the_connection_also_in_one_frame() -> None:
    async with serving(Handlers(), ServerOptions(max_frame_size=1 << 20)) as port:
        client = await RawClient.connect(port)
        block = client.block(request()) + client.block([("x-big", "v" * 100_000)])
        client.send(hf.HeadersFrame(1, block, flags={"END_HEADERS", "END_STREAM"}))
        code = await client.goaway()
        client.close()
    assert code == ENHANCE_YOUR_CALM


async def test_a_reset_stream_counts_against_the_limit_until_its_handler_ended() -> None:
    handlers = Handlers()
    async with serving(handlers, ServerOptions(max_concurrent_streams=2)) as port:
        client = await RawClient.connect(port)
        client.call(1, request(UNWINDING), message(b""))
        await asyncio.wait_for(handlers.started.wait(), 5)
        client.send(hf.RstStreamFrame(1, error_code=CANCEL))
        client.call(3, request(HELD), message(b"3"))
        client.call(5, request(HELD), message(b"5"))
        refused = await client.answer(5)
        await asyncio.wait_for(handlers.cancelled.wait(), 2)
        await asyncio.sleep(0.01)
        client.call(7, request(), message(b"7"))
        taken = await client.answer(7)
        client.close()
    assert refused.reset == REFUSED_STREAM
    assert (taken.grpc_status, taken.data) == ("0", message(b"7"))


async def test_rapid_resets_are_enhance_your_calm() -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        for stream_id in range(1, 4401, 2):  # 2200 calls, each reset once sent: past 2 x 1024 early resets
            client.call(stream_id, request(SLOW), message(b""))
            client.send(hf.RstStreamFrame(stream_id, error_code=CANCEL))
            if stream_id % 64 == 1:
                await client.writer.drain()
                await asyncio.sleep(0)  # across reads: the handlers start
        code = await client.goaway()
        client.close()
    assert code == ENHANCE_YOUR_CALM


async def test_a_graceful_close_reads_the_clients_frames_so_its_answers_are_not_lost() -> None:
    handlers = Handlers()
    server = GrpcServer(handlers.table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    client = await RawClient.connect(port)
    client.call(1, request(HELD), message(b"held"))
    await client.until(lambda frame: isinstance(frame, hf.SettingsFrame) and "ACK" in frame.flags)
    server.begin_stop()
    await client.until(lambda frame: isinstance(frame, hf.PingFrame))
    client.send(hf.PingFrame(0, opaque_data=b"shutdown", flags={"ACK"}))

    async def window_updates() -> None:  # what a client sends as it reads, arriving after the close
        with contextlib.suppress(ConnectionError):
            while True:
                client.send(hf.WindowUpdateFrame(0, window_increment=1))
                await asyncio.sleep(0.002)

    sender = asyncio.create_task(window_updates())
    await asyncio.sleep(0.05)
    handlers.gate.set()
    await asyncio.sleep(0.3)  # the answer is written and the server closed its side, unread
    sender.cancel()
    answer = await client.answer(1)
    end = await client.until(lambda frame: False)
    client.close()
    await server.stop(0)
    assert (answer.grpc_status, answer.data) == ("0", message(b"held"))
    assert end is None


async def test_a_graceful_stop_lets_a_slow_reader_drain_a_finished_answer_and_its_trailers() -> None:
    server = GrpcServer(Handlers().table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
    client = RawClient(reader, writer)
    writer.write(PREFACE)
    client.send(hf.SettingsFrame(0, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1}),
                hf.WindowUpdateFrame(0, window_increment=2**31 - 1 - 65_535))
    await client.until(lambda frame: isinstance(frame, hf.SettingsFrame) and "ACK" in frame.flags)
    (connection,) = server.connections
    assert connection.transport is not None  # a WAN's bounded bytes in flight: the answer waits in our buffer
    connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    client.call(1, request(SIZED), message(b"1000000"))
    await asyncio.sleep(0.05)
    assert connection.transport.get_write_buffer_size() > 500_000
    stopping = asyncio.create_task(server.stop(5.0))
    data, trailers = 0, dict[str, str]()
    while not trailers:  # at about 1 MB/s
        frame = await client.frame()
        assert frame is not None, "the answer was cut"
        if isinstance(frame, hf.DataFrame) and frame.stream_id == 1:
            data += len(frame.data)
            await asyncio.sleep(len(frame.data) / 1e6)
        elif isinstance(frame, hf.HeadersFrame) and "END_STREAM" in frame.flags:
            trailers = {str(name): str(value) for name, value in client.decoder.decode(frame.data)}
    client.close()
    await asyncio.wait_for(stopping, 2)
    assert (trailers.get("grpc-status"), data) == ("0", 1_000_005)


async def test_connection_ages_are_jittered_by_10_percent() -> None:
    server = GrpcServer(Handlers().table(), ServerOptions(max_connection_age_s=100))
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    opened = asyncio.get_running_loop().time()
    clients = [await RawClient.connect(port) for _ in range(20)]
    await asyncio.sleep(0.05)
    ages = [connection.timers[1].when() - opened for connection in server.connections]
    for client in clients:
        client.close()
    await server.stop(0)
    assert len(ages) == 20
    assert all(89.9 <= age <= 110.2 for age in ages)
    assert max(ages) - min(ages) > 1


async def test_an_idle_connection_gets_a_goaway_after_max_connection_idle() -> None:
    async with serving(Handlers(), ServerOptions(max_connection_idle_s=0.2)) as port:
        client = await RawClient.connect(port)
        client.call(1, request(), message(b"1"))
        answer = await client.answer(1)
        answered = asyncio.get_running_loop().time()
        goaway = await client.next(hf.GoAwayFrame)
        idle = asyncio.get_running_loop().time() - answered
        client.close()
    assert answer.grpc_status == "0"
    assert (goaway.error_code, goaway.last_stream_id) == (0, 2**31 - 1)
    assert 0.15 < idle < 1


def _gzip(payload: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=31)
    return compressor.compress(payload) + compressor.flush()


@pytest.mark.parametrize(("flag", "compressed", "details"), [
    (1, _gzip(b"a request" * 100)[:-6], "the message does not decompress: truncated"),
    (1, _gzip(b"a request") + b"more", "the message does not decompress: bytes after its end"),
    (2, b"a request", "a message with the reserved compressed flag 2"),
], ids=["truncated", "bytes-after-the-end", "reserved-flag"])
async def test_truncated_or_trailing_compressed_messages_and_reserved_flags_are_internal(
        flag: int, compressed: bytes, details: str) -> None:
    async with serving(Handlers()) as port:
        client = await RawClient.connect(port)
        client.call(1, request(ECHO, ("grpc-encoding", "gzip")), struct.pack(">BL", flag, len(compressed)) + compressed)
        answer = await client.answer(1)
        client.close()
    assert answer.grpc_status == str(grpc.StatusCode.INTERNAL.value[0])
    assert dict(answer.headers)["grpc-message"] == details


async def test_a_refused_hook_that_raises_does_not_end_the_call_or_the_connection() -> None:
    def refused(call: ServerCall, code: grpc.StatusCode, message: str, received: int) -> None:
        raise RuntimeError("observer bug")

    server = GrpcServer(Handlers().table(), ServerOptions(), refused)
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    client = await RawClient.connect(port)
    client.call(1, request("/t.T/Missing"), message(b""))
    missing = await client.answer(1)
    client.call(3, request(), message(b"after"))
    after = await client.answer(3)
    client.close()
    await server.stop(0)
    assert missing.grpc_status == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert (after.grpc_status, after.data) == ("0", message(b"after"))


async def test_metadata_over_the_header_list_limit_is_resource_exhausted_and_the_connection_lives_on() -> None:
    async with serving(Handlers(), ServerOptions(max_header_list_size=1024)) as port:
        client = await RawClient.connect(port)  # hpack's encoder indexes: the second block refers to the first
        client.call(1, request(ECHO, ("x-big", "v" * 2000)), message(b""))
        too_large = await client.answer(1)
        client.call(3, request(), message(b"after"))
        answer = await client.answer(3)
        client.close()
    assert too_large.grpc_status == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert (answer.grpc_status, answer.data) == ("0", message(b"after"))


async def test_graceful_goaway_names_all_streams_first_then_the_last_one_after_the_ping() -> None:
    handlers = Handlers()
    server = GrpcServer(handlers.table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    client = await RawClient.connect(port)
    client.call(1, request(HELD), message(b"held"))
    await client.until(lambda frame: isinstance(frame, hf.SettingsFrame))
    stopping = asyncio.ensure_future(server.stop(5))
    first = await client.next(hf.GoAwayFrame)
    ping = await client.next(hf.PingFrame)
    assert (first.last_stream_id, first.error_code) == (2**31 - 1, 0)
    client.call(3, request(), message(b"late"))  # opened before the client saw the GOAWAY: still taken
    late = await client.answer(3)
    client.send(hf.PingFrame(0, flags={"ACK"}, opaque_data=ping.opaque_data))
    final = await client.next(hf.GoAwayFrame)
    assert (final.last_stream_id, final.error_code) == (3, 0)
    handlers.gate.set()
    held = await client.answer(1)
    await stopping
    client.close()
    assert (late.grpc_status, held.grpc_status, held.data) == ("0", "0", message(b"held"))


class H2Client:
    """The h2 package's client connection over an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 settings: dict[h2.settings.SettingCodes, int]) -> None:
        self.reader, self.writer = reader, writer
        self.connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.connection.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.connection.initiate_connection()
        self.flush()

    @classmethod
    async def connect(cls, port: int, settings: dict[h2.settings.SettingCodes, int]) -> H2Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port), settings)

    def flush(self) -> None:
        self.writer.write(self.connection.data_to_send())

    async def call(self, headers: list[tuple[str, str]], body: bytes) -> tuple[Answer, list[int]]:
        """One call; its answer and the size of each DATA frame of it (each acknowledged as it came)."""
        stream_id = self.connection.get_next_available_stream_id()
        self.connection.send_headers(stream_id, headers)
        self.connection.send_data(stream_id, body, end_stream=True)
        self.flush()
        answer, sizes = Answer(), []
        while True:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "the connection closed before the answer ended"
            for event in self.connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = [(name.decode(), value.decode()) for name, value in event.headers]
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = [(name.decode(), value.decode()) for name, value in event.headers]
                elif isinstance(event, h2.events.DataReceived):
                    answer.data += event.data
                    sizes.append(len(event.data))
                    self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.flush()
                    return answer, sizes
            self.flush()

    def close(self) -> None:
        self.writer.close()


async def test_tiny_client_window_gets_a_1_mb_answer_through_window_updates() -> None:
    async with serving(Handlers()) as port:
        client = await H2Client.connect(port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
        answer, sizes = await client.call(request(SIZED), message(b"%d" % 2**20))
        client.close()
    assert answer.grpc_status == "0"
    assert answer.data == message(b"\xab" * 2**20)
    assert max(sizes) <= 100
    assert len(sizes) > 2**20 // 100


async def test_frames_and_header_blocks_kept_within_the_clients_max_frame_size() -> None:
    async with serving(Handlers()) as port:  # the server's own limit is 64 KiB; the client's 16 KiB
        client = await H2Client.connect(port, {h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384,
                                               h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20})
        answer, sizes = await client.call(request(SIZED), message(b"200000"))
        assert answer.data == message(b"\xab" * 200_000)
        assert max(sizes) <= 16384
        # Trailers of 40 KB go out as HEADERS and CONTINUATION frames (h2 rejects a frame over its limit).
        answer, _ = await client.call(request(HEADER, ("x-trailer-size", "40000")), message(b"x-trailer-size"))
        client.close()
    assert answer.grpc_status == "0"
    assert dict(answer.trailers)["x-large"] == "t" * 40000


async def test_h2load_burst_without_errors(tmp_path: Path) -> None:
    body = tmp_path / "body"
    body.write_bytes(message(b"h2load"))
    async with serving(Handlers()) as port:
        process = await asyncio.create_subprocess_exec(
            "h2load", "-n2000", "-c8", "-m8", "-t1", "-d", str(body), "-H", "content-type: application/grpc",
            "-H", "te: trailers", f"http://127.0.0.1:{port}{ECHO}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    report = out.decode()
    assert process.returncode == 0, report
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored", report)
    assert re.search(r"status codes: 2000 2xx", report), report
