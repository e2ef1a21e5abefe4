"""A channel of the in-loop client: unary calls to one plaintext backend address, over one
HTTP/2 connection at a time (gateway.grpc_client.connection).

It connects on the first call, and again after a connection ended (at once after one that
worked, else after `ReconnectBackoff`'s wait, during which calls fail UNAVAILABLE at once, as
grpcio's channels do). Each call has a deadline timer (DEADLINE_EXCEEDED, the stream reset) and
a cancelled caller resets its stream too. UNAVAILABLE is retried as `RetryPolicy` says while the
deadline allows; a call the server never took (refused, above a GOAWAY's last stream, stream
ids used up) is sent again on another connection without counting as a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from gateway.grpc_client.backoff import ReconnectBackoff, RetryPolicy
from gateway.grpc_client.codes import Unprocessed
from gateway.grpc_client.connection import MESSAGE_PREFIX, ClientConnection, ClientStream
from gateway.grpc_client.target import Address, parse_target
from gateway.grpc_server.hpack import encode, encode_uncached
from gateway.grpc_server.status import RpcStatus

log = logging.getLogger("gateway.backends")

CONNECT_TIMEOUT_S = 20.0  # grpc's minimum connect timeout
_UNPROCESSED_RESENDS = 8  # a call sent again this often without being taken fails UNAVAILABLE


class InloopChannel:
    """Unary gRPC calls to `target` (`host:port`, `ipv4:`, `ipv6:`; plaintext). `retry_attempts`:
    calls in all per request when the backend is UNAVAILABLE (at most 5). `retries` counts the
    calls sent again because of an UNAVAILABLE."""

    def __init__(self, target: str, retry_attempts: int = 3, *, keepalive_s: float = 30.0,
                 keepalive_timeout_s: float = 10.0, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        address = parse_target(target)
        if address is None:
            raise ValueError(f"the in-loop client cannot reach {target!r}: a plaintext host:port, ipv4: or ipv6: only")
        self.target = target
        self.address: Address = address
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry = RetryPolicy(retry_attempts)
        self.retries = 0
        self.first_stream_id = 1  # where a new connection's stream ids start (tests start near the end)
        self._connection: ClientConnection | None = None
        self._connections: set[ClientConnection] = set()  # every one not closed yet, for `close`
        self._connecting: asyncio.Future[ClientConnection] | None = None
        self._backoff = ReconnectBackoff()
        self._retry_at = 0.0  # no connection attempt before this (event-loop time)
        self._last_failure = ""
        self._blocks: dict[str, bytes] = {}  # the fixed part of each method's request headers
        self._closed = False

    async def unary(self, path: str, message: bytes, timeout: float,
                    metadata: Sequence[tuple[str, str]] = ()) -> memoryview:
        """Call `path` with the serialized `message`; the serialized answer. Raises `RpcStatus`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        fixed = self._blocks.get(path)
        if fixed is None:
            fixed = self._blocks[path] = encode([
                (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", self.address.authority),
                ("content-type", "application/grpc"), ("te", "trailers")])
        data = MESSAGE_PREFIX.pack(0, len(message)) + message if len(message) < 1 << 16 else _prefixed(message)
        attempt = 1
        resends = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RpcStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            block = fixed + encode_uncached([("grpc-timeout", _timeout(remaining)), *metadata])
            try:
                answer = await self._attempt(block, data, deadline)
            except Unprocessed:
                resends += 1
                if resends > _UNPROCESSED_RESENDS:
                    raise RpcStatus(grpc.StatusCode.UNAVAILABLE, "the backend took none of the call's tries") from None
                continue
            except RpcStatus as error:
                if error.code is not grpc.StatusCode.UNAVAILABLE:
                    raise
                retry = self.retry
                retry.failed()
                if attempt >= retry.attempts or retry.throttled():
                    raise
                wait = retry.wait(attempt)
                if loop.time() + wait >= deadline:
                    raise
                self.retries += 1
                attempt += 1
                await asyncio.sleep(wait)
                continue
            self.retry.succeeded()
            return answer

    async def _attempt(self, block: bytes, data: bytes | memoryview, deadline: float) -> memoryview:
        connection = self._connection
        if connection is None or not connection.usable:
            connection = await self._connect(deadline)
        loop = connection.loop
        stream = ClientStream(block, data, loop.create_future())
        connection.submit(stream)
        timer = loop.call_at(deadline, connection.expire, stream)
        try:
            return await stream.future
        except asyncio.CancelledError:
            connection.cancel(stream)
            raise
        finally:
            timer.cancel()

    async def _connect(self, deadline: float) -> ClientConnection:
        """The connection calls go over now, opened if needed (one attempt shared by every caller)."""
        if self._closed:
            raise RpcStatus(grpc.StatusCode.UNAVAILABLE, "the channel is closed")
        loop = asyncio.get_running_loop()
        connecting = self._connecting
        if connecting is None:
            connection = self._connection
            if connection is not None and connection.usable:
                return connection
            if loop.time() < self._retry_at:
                raise RpcStatus(grpc.StatusCode.UNAVAILABLE, self._last_failure)
            connecting = self._connecting = loop.create_future()
            task = loop.create_task(self._open(connecting))
            task.add_done_callback(_retrieve)
        try:
            return await asyncio.wait_for(asyncio.shield(connecting), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            raise RpcStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None

    async def _open(self, connecting: asyncio.Future[ClientConnection]) -> None:
        loop = asyncio.get_running_loop()
        host, port, _ = self.address
        first_stream_id = self.first_stream_id
        self.first_stream_id = 1
        connection: ClientConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: ClientConnection(self.keepalive_s, self.keepalive_timeout_s, first_stream_id), host, port)
                await connection.ready
        except (OSError, TimeoutError) as error:
            if connection is not None:
                connection.abort("the backend did not start HTTP/2")
            self._last_failure = f"connecting to {self.target} failed: {error or type(error).__name__}"
            self._retry_at = loop.time() + self._backoff.failed()
            connecting.set_exception(RpcStatus(grpc.StatusCode.UNAVAILABLE, self._last_failure))
            connecting.exception()  # a failure nobody waits for any more is not logged as unretrieved
            return
        finally:
            self._connecting = None
        self._backoff.succeeded()
        self._connection = connection
        self._connections.add(connection)
        connection.lost.add_done_callback(lambda _: self._connections.discard(connection))
        if self._closed:
            connection.shutdown()
        connecting.set_result(connection)

    async def close(self, grace: float | None = None) -> None:
        """Take no more calls; the running ones get `grace` seconds (None: as long as they take)
        before their connections are cut."""
        self._closed = True
        connections = list(self._connections)
        for connection in connections:
            connection.shutdown()
        if not connections:
            return
        _, pending = await asyncio.wait([connection.lost for connection in connections], timeout=grace)
        for connection in connections:
            if not connection.lost.done():
                connection.abort("the channel was closed")
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(pending, timeout=1.0)


def _prefixed(message: bytes) -> memoryview:
    """A large message behind its gRPC prefix, copied once."""
    data = bytearray(MESSAGE_PREFIX.size + len(message))
    MESSAGE_PREFIX.pack_into(data, 0, 0, len(message))
    data[MESSAGE_PREFIX.size:] = message
    return memoryview(data)


def _timeout(seconds: float) -> str:
    """`seconds` as a grpc-timeout value (at most 8 digits)."""
    micros = int(seconds * 1e6)
    if micros < 100_000_000:
        return f"{max(micros, 1)}u"
    millis = int(seconds * 1e3)
    if millis < 100_000_000:
        return f"{millis}m"
    return f"{min(int(seconds), 99_999_999)}S"


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("opening a backend connection failed", exc_info=task.exception())
