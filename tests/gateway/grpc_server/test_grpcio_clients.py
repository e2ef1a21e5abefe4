"""The in-loop gRPC server against real grpcio clients (grpc.aio, and the sync channel in a
thread): statuses and their messages, metadata both ways, deadlines and cancellations reaching
the handler, concurrency on one channel, 10 MB messages both ways under the client's default
windows, the receive limit, gzip, server streaming with a slow reader, TLS, the server's stop
with its grace, and the connection's maximum age."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.server import GrpcServer, ServerOptions, tls_context
from gateway.grpc_server.status import RpcStatus
from gateway.serving.server import bound_socket
from tests.certs import make_certificates

ECHO, SLOW, FAIL, META = "/test.Echo/Echo", "/test.Echo/Slow", "/test.Echo/Fail", "/test.Echo/Meta"
STREAM = "/test.Echo/Stream"


class Handlers:
    """A test service whose handlers record what they saw: cancellations, metadata, peers."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.metadata: list[tuple[str, str]] = []
        self.peers: set[str] = set()
        self.produced = 0

    async def echo(self, raw: bytes, call: ServerCall) -> bytes:
        self.peers.add(call.peer)
        return raw

    async def slow(self, raw: bytes, call: ServerCall) -> bytes:
        self.started.set()
        try:
            await asyncio.sleep(float(raw.decode()))
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return raw

    async def fail(self, raw: bytes, call: ServerCall) -> bytes:
        raise RpcStatus(grpc.StatusCode.FAILED_PRECONDITION, raw.decode("utf-8"))

    async def meta(self, raw: bytes, call: ServerCall) -> bytes:
        self.metadata = call.metadata
        call.trailing_metadata.append(("x-answer", "forty-two"))
        call.trailing_metadata.append(("x-answer-bin", base64.b64encode(b"\x00\x01\xfe\xff").decode()))
        return raw

    async def stream(self, raw: bytes, call: ServerCall) -> AsyncIterator[bytes]:
        count, size = (int(part) for part in raw.decode().split())
        for index in range(count):
            self.produced += 1
            yield index.to_bytes(4, "big") * (size // 4)

    def table(self) -> dict[str, RpcHandler]:
        return {ECHO: RpcHandler(unary=self.echo), SLOW: RpcHandler(unary=self.slow),
                FAIL: RpcHandler(unary=self.fail), META: RpcHandler(unary=self.meta),
                STREAM: RpcHandler(stream=self.stream)}


@contextlib.asynccontextmanager
async def serving(handlers: Handlers, options: ServerOptions | None = None,
                  tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[GrpcServer, int]]:
    server = GrpcServer(handlers.table(), options or ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False), tls)
    try:
        yield server, port
    finally:
        await server.stop(0)


def unary(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(path, None, None)  # no serializers: bytes both ways


def streaming(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    return channel.unary_stream(path, None, None)


async def test_unary_call_answers_with_the_handlers_bytes_and_the_callers_peer() -> None:
    handlers = Handlers()
    async with serving(handlers) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = unary(channel, ECHO)(b"hello", timeout=5)
        assert await call == b"hello"
        assert await call.code() == grpc.StatusCode.OK
    (peer,) = handlers.peers
    assert peer.startswith("ipv4:127.0.0.1:")


async def test_sync_channel_in_a_thread() -> None:
    def calls(port: int) -> tuple[bytes, bytes]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            empty = channel.unary_unary(ECHO, None, None)(b"", timeout=5)
            return empty, channel.unary_unary(ECHO, None, None)(b"\x00" * 1000, timeout=5)

    async with serving(Handlers()) as (_, port):
        assert await asyncio.to_thread(calls, port) == (b"", b"\x00" * 1000)


async def test_non_ascii_status_message_round_trips_percent_encoded() -> None:
    message = "température 100% ✓ 日本語\ttab"
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unary(channel, FAIL)(message.encode(), timeout=5)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == message


async def test_unknown_method_is_unimplemented() -> None:
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unary(channel, "/test.Echo/Nope")(b"", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert failure.value.details() == "Method not found: /test.Echo/Nope"


async def test_metadata_in_text_and_binary_and_trailing_metadata_out() -> None:
    handlers = Handlers()
    binary = bytes(range(256))
    async with serving(handlers) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = unary(channel, META)(b"x", timeout=5, metadata=(("x-text", "a value"), ("x-blob-bin", binary),
                                                               ("x-blanks", " around ")))
        assert await call == b"x"
        trailing = await call.trailing_metadata()
    received = dict(handlers.metadata)
    assert received["x-text"] == "a value"
    assert received["x-blanks"] == " around "  # grpc's ASCII-Value allows them, as grpc's own server does
    sent = received["x-blob-bin"]
    assert base64.b64decode(sent + "=" * (-len(sent) % 4)) == binary
    assert tuple(trailing) == (("x-answer", "forty-two"), ("x-answer-bin", b"\x00\x01\xfe\xff"))


async def test_deadline_shorter_than_the_handler_cancels_it() -> None:
    handlers = Handlers()
    async with serving(handlers) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unary(channel, SLOW)(b"5", timeout=0.3)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(handlers.cancelled.wait(), 2)
        assert time.monotonic() - started < 2


async def test_client_cancel_cancels_the_handler() -> None:
    handlers = Handlers()
    async with serving(handlers) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = unary(channel, SLOW)(b"5", timeout=10)
        await asyncio.wait_for(handlers.started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(handlers.cancelled.wait(), 2)
        assert await call.code() == grpc.StatusCode.CANCELLED
        assert await unary(channel, ECHO)(b"after", timeout=5) == b"after"  # the connection lives on


async def test_a_deadline_storm_of_1000_calls_leaves_the_channel_and_its_other_calls_alone() -> None:
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await unary(channel, ECHO)(b"warm", timeout=5) == b"warm"
        survivor = asyncio.ensure_future(unary(channel, SLOW)(b"0.6", timeout=5))

        async def expiring() -> grpc.StatusCode:
            try:
                await unary(channel, SLOW)(b"5", timeout=0.3)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*[expiring() for _ in range(1000)])  # cancelled by the client together
        assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert await survivor == b"0.6"
        assert await unary(channel, ECHO)(b"after", timeout=5) == b"after"


async def test_concurrent_requests_past_the_connections_request_budget_are_refused_retryably() -> None:
    # budget max(4 x 128 KiB, 2 x (256 KiB + 16 KiB)) = 544 KiB: 16 requests of 200 KB sent together do not fit;
    # the newest are refused REFUSED_STREAM (no handler ran: UNAVAILABLE to grpcio) and succeed when sent again
    options = ServerOptions(connection_window=128 * 1024, max_receive_message_length=256 * 1024)
    payloads = [bytes([index]) * 200_000 for index in range(16)]
    async with serving(Handlers(), options) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        outcomes = await asyncio.gather(*[unary(channel, ECHO)(payload, timeout=10) for payload in payloads],
                                        return_exceptions=True)
        pairs = list(zip(payloads, outcomes, strict=True))
        refused = [payload for payload, outcome in pairs if not isinstance(outcome, bytes)]
        assert refused
        assert {outcome.code() for _, outcome in pairs if isinstance(outcome, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.UNAVAILABLE}
        assert all(outcome == payload for payload, outcome in pairs if isinstance(outcome, bytes))
        assert [await unary(channel, ECHO)(payload, timeout=10) for payload in refused] == refused


async def test_64_concurrent_calls_on_one_channel() -> None:
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        slow = unary(channel, SLOW)
        answers = await asyncio.gather(*(slow(f"0.{index:03d}".encode(), timeout=10) for index in range(64)))
    assert answers == [f"0.{index:03d}".encode() for index in range(64)]


async def test_10_mb_messages_both_ways_with_the_clients_default_windows() -> None:
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    options = ServerOptions(max_receive_message_length=16 * 1024 * 1024)
    channel_options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    async with serving(Handlers(), options) as (_, port), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options) as channel:
        answers = await asyncio.gather(*(unary(channel, ECHO)(big, timeout=20) for _ in range(2)))
    assert answers == [big, big]


async def test_message_over_the_receive_limit_is_resource_exhausted() -> None:
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unary(channel, ECHO)(b"\x01" * (5 * 1024 * 1024), timeout=10)
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failure.value.details() == "Received message larger than max (5242880 vs. 4194304)"
        assert await unary(channel, ECHO)(b"small", timeout=5) == b"small"


async def test_gzip_compressed_request() -> None:
    payload = b"compressible " * 10_000
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await unary(channel, ECHO)(payload, timeout=5, compression=grpc.Compression.Gzip) == payload
    # Compressed once decompressed: what the limit applies to.
    async with serving(Handlers(), ServerOptions(max_receive_message_length=1000)) as (_, port), \
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await unary(channel, ECHO)(payload, timeout=5, compression=grpc.Compression.Gzip)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_server_streaming_messages_then_status() -> None:
    async with serving(Handlers()) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = streaming(channel, STREAM)(b"5 8", timeout=5)
        answers = [answer async for answer in call]
        assert await call.code() == grpc.StatusCode.OK
    assert answers == [index.to_bytes(4, "big") * 2 for index in range(5)]


async def test_server_streaming_to_a_slow_reader_is_paced_by_flow_control() -> None:
    handlers = Handlers()
    count, size = 400, 64 * 1024  # 25 MiB: far past any window of the client's
    async with serving(handlers) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = streaming(channel, STREAM)(f"{count} {size}".encode(), timeout=20)
        stream = call.__aiter__()
        first = await stream.__anext__()
        await asyncio.sleep(0.5)
        assert handlers.produced < count  # the handler waits for the reader
        rest = [answer async for answer in stream]
        assert await call.code() == grpc.StatusCode.OK
    answers = [first, *rest]
    assert [answer[:4] for answer in answers] == [index.to_bytes(4, "big") for index in range(count)]
    assert {len(answer) for answer in answers} == {size}


async def test_sync_server_streaming_in_a_thread() -> None:
    def read(port: int) -> list[bytes]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return list(channel.unary_stream(STREAM, None, None)(b"3 0", timeout=5))

    async with serving(Handlers()) as (_, port):
        assert await asyncio.to_thread(read, port) == [b"", b"", b""]  # empty messages too


async def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls = tls_context(str(certs.server_cert), str(certs.server_key))
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    async with serving(Handlers(), tls=tls) as (_, port), \
            grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        assert await unary(channel, ECHO)(b"secret", timeout=5) == b"secret"
        stream = streaming(channel, STREAM)(b"3 4", timeout=5)
        assert [answer async for answer in stream] == [index.to_bytes(4, "big") for index in range(3)]


async def test_stop_lets_calls_finish_within_the_grace_and_ends_the_rest() -> None:
    handlers = Handlers()
    server = GrpcServer(handlers.table(), ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        slow = unary(channel, SLOW)
        within = asyncio.ensure_future(slow(b"0.3", timeout=10))
        past = asyncio.ensure_future(slow(b"30", timeout=60))
        await asyncio.wait_for(handlers.started.wait(), 5)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        stopping = asyncio.ensure_future(server.stop(1.0))
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # a new connection is refused
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as late:
                await unary(late, ECHO)(b"late", timeout=1)
        assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert await within == b"0.3"
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await past
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        await stopping
        assert handlers.cancelled.is_set()
        assert 0.9 < time.monotonic() - started < 3


async def test_max_connection_age_moves_the_channel_without_a_failed_call() -> None:
    handlers = Handlers()
    options = ServerOptions(max_connection_age_s=0.3, max_connection_age_grace_s=5)
    async with serving(handlers, options) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = unary(channel, ECHO)
        deadline = time.monotonic() + 1.5
        calls = 0
        while time.monotonic() < deadline:
            answers = await asyncio.gather(*(echo(b"%d" % index, timeout=5) for index in range(8)))
            assert answers == [b"%d" % index for index in range(8)]
            calls += 8
    assert calls > 80
    assert len(handlers.peers) >= 3  # a new connection after each GOAWAY
