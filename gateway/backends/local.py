"""The gateway's end of the local wire (protos.local_wire): calls to an embedded runtime over
its Unix socket.

One call per connection at a time; idle connections are kept and reused, and a new one is
opened whenever every kept one is busy (the call scheduler in front bounds how many run).
A caller that stops waiting (deadline, disconnect) closes its connection: the runtime drops
the answer, and the next call opens a fresh one. Failures come back as the gateway errors
of the matching gRPC status, so the circuit breaker and the error responses see no difference
from a gRPC backend.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar, cast

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.errors import BackendError, GatewayError, from_grpc_status
from protos.local_wire import HEADER, METHOD_NUMBERS, SMALL_FRAME
from protos.services import Method

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class LocalCallError(Exception):
    """A local call failed with a gRPC status (the runtime's, or UNAVAILABLE / DEADLINE_EXCEEDED
    for a connection that broke or an answer that came too late)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_gateway_error(self, target: str) -> GatewayError:
        return from_grpc_status(self.code, self.message, target)


class _Connection(asyncio.Protocol):
    """One Unix socket connection: writes a request frame, collects the answer frame."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._need = HEADER.size  # bytes that complete the frame being read (header first)
        self._code: int | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, number: int, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        assert self._answer is None
        self._answer = answer = asyncio.get_running_loop().create_future()
        header = HEADER.pack(number, len(payload))
        if len(payload) <= SMALL_FRAME:
            self.transport.write(header + payload)
        else:
            self.transport.writelines((header, payload))
        return answer

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= self._need:
            if self._code is None:
                self._code, length = HEADER.unpack_from(buffer)
                del buffer[:HEADER.size]
                self._need = length
                continue
            payload = bytes(buffer[:self._need])
            del buffer[:self._need]
            code, self._code, self._need = self._code, None, HEADER.size
            answer, self._answer = self._answer, None
            if answer is None or answer.done():
                self.close()  # an answer nobody asked for: the connection is out of step
                return
            answer.set_result((code, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(LocalCallError(grpc.StatusCode.UNAVAILABLE,
                                                "the runtime closed the connection mid-call"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LocalChannel:
    """Calls to the runtime listening on the Unix socket `path`."""

    def __init__(self, path: str, target: str) -> None:
        self.path = path
        self.target = target
        self._idle: list[_Connection] = []
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """Connections kept open for the next call."""
        return sum(not connection.closed for connection in self._idle)

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float) -> ResponseT:
        """One call; raises LocalCallError with the status it failed with."""
        connection = await self._connection(timeout)
        loop = asyncio.get_running_loop()
        answer = connection.send(METHOD_NUMBERS[method.path], request.SerializeToString())
        expiry = loop.call_later(timeout, _expire, answer)
        try:
            code, payload = await answer
        except BaseException:
            connection.close()  # the runtime's answer, if it comes, would be out of step
            raise
        finally:
            expiry.cancel()
        if self._closed:
            connection.close()
        elif not connection.closed:
            self._idle.append(connection)
        if code:
            raise LocalCallError(STATUS_CODES.get(code, grpc.StatusCode.UNKNOWN), payload.decode(errors="replace"))
        try:
            return method.response.FromString(payload)
        except DecodeError as error:
            raise BackendError(f"backend {self.target} answered a malformed message: {error}") from None

    async def _connection(self, timeout: float) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        if self._closed:
            raise LocalCallError(grpc.StatusCode.UNAVAILABLE, "the channel is closed")
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_unix_connection(_Connection, self.path), timeout)
        except TimeoutError:
            raise LocalCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "connecting took too long") from None
        except OSError as error:
            raise LocalCallError(grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.path}: "
                                 f"{error.strerror or error}") from None
        return connection

    def close(self) -> None:
        """Close the idle connections; calls still running close theirs when they end."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _expire(answer: asyncio.Future[tuple[int, bytes]]) -> None:
    if not answer.done():
        answer.set_exception(LocalCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
