"""The gateway's end of the local wire (protos.local_wire): calls to an embedded runtime over
its Unix socket.

One call per connection at a time; idle connections are kept (up to MAX_IDLE) and reused, and
a new one is opened whenever every kept one is busy (the call scheduler in front bounds how many
run; the runtime runs at most its thread count at once).
A caller that stops waiting (deadline, disconnect) closes its connection: the runtime drops
the answer, and the next call opens a fresh one. A kept connection that fails before any answer
byte (a runtime restarted since) is replaced once: the request may then have run twice, as with
gRPC's retry of UNAVAILABLE. Failures come back as the gateway errors
of the matching gRPC status, so the circuit breaker and the error responses see no difference
from a gRPC backend.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.errors import BackendError, GatewayError, from_grpc_status, grpc_code
from protos.local_wire import (
    ALIGN,
    HEADER,
    METHOD_NUMBERS,
    SHARED_BUSY,
    SHARED_REFUSED,
    SMALL_FRAME,
    Attachments,
    WireError,
    frame_buffer,
    split_attachment,
)
from protos.services import Method
from protos.shared_memory import forget_region, region_of

log = logging.getLogger("gateway.backends")
RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
SCRATCH_BYTES = 1 << 16
MAX_IDLE = 16  # connections kept for the next calls (each holds a runtime thread)
MAX_FRAME_BYTES = 1 << 36  # an answer announcing more is a broken wire, not something to allocate


class LocalCallError(Exception):
    """A local call failed with a gRPC status (the runtime's, or UNAVAILABLE / DEADLINE_EXCEEDED
    for a connection that broke or an answer that came too late)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_gateway_error(self, target: str, model: str | None = None) -> GatewayError:
        return from_grpc_status(self.code, self.message, target, model)


class LocalUnreachable(LocalCallError):
    """Nothing listens on the socket (no such file, or refused): the request was not sent."""


class Frame(NamedTuple):
    """An answer frame: status code, attachment table, message, attachment (views of one
    buffer the frame was read into)."""

    code: int
    table: bytes
    message: memoryview
    attachment: memoryview


class LocalConnection(asyncio.BufferedProtocol):
    """One Unix socket connection: writes a request frame, reads the answer frame. The
    header is read through a scratch buffer, the rest of the frame straight into one buffer
    of its size."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.heard_from = False  # whether any byte of the awaited answer came
        self._scratch = memoryview(bytearray(SCRATCH_BYTES))
        self._head = bytearray()  # the frame's first bytes, until its header is complete
        self._lengths: tuple[int, int, int, int] | None = None  # the header, once read
        self._rest: bytearray | memoryview | None = None  # table, message and attachment, once the header is read
        self._start = 0  # where the table starts in `_rest`: the attachment then starts ALIGN-aligned
        self._filled = 0
        self._answer: asyncio.Future[Frame] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, number: int, table: bytes, message: bytes, buffers: list[memoryview]) -> asyncio.Future[Frame]:
        """Write a request frame; the future resolves with the answer frame."""
        assert self.transport is not None
        answer = self.expect()
        header = HEADER.pack(number, len(table), len(message), sum(buffer.nbytes for buffer in buffers))
        if len(message) <= SMALL_FRAME and not buffers:
            self.transport.write(header + table + message)
        else:
            self.transport.writelines([header, table, message, *buffers])  # the buffers are not copied
        return answer

    def expect(self) -> asyncio.Future[Frame]:
        """The future of the next answer frame."""
        assert self._answer is None
        self._answer = answer = asyncio.get_running_loop().create_future()
        self.heard_from = False
        return answer

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._rest is not None:
            return memoryview(self._rest)[self._start + self._filled:]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        self.heard_from = True
        if self._answer is None:
            self._fail("the runtime sent bytes nobody asked for")
            return
        if self._rest is not None:
            self._filled += nbytes
        else:
            self._head += self._scratch[:nbytes]
            if len(self._head) < HEADER.size:
                return
            self._lengths = HEADER.unpack_from(self._head)
            _, table_length, message_length, attachment_length = self._lengths
            extra = len(self._head) - HEADER.size
            size = table_length + message_length + attachment_length
            if extra > size or size > MAX_FRAME_BYTES:
                self._fail("the runtime sent more than its frame announced" if extra > size
                           else f"the runtime announced a frame of {size} bytes")
                return
            self._start = -(table_length + message_length) % ALIGN
            self._rest = frame_buffer(self._start + size)
            self._rest[self._start:self._start + extra] = self._head[HEADER.size:]
            self._head.clear()
            self._filled = extra
        if self._start + self._filled == len(self._rest):
            self._complete()

    def _complete(self) -> None:
        assert self._lengths is not None
        assert self._rest is not None
        code, table_length, message_length, _ = self._lengths
        rest = memoryview(self._rest)[self._start:]
        frame = Frame(code, bytes(rest[:table_length]), rest[table_length:table_length + message_length],
                      rest[table_length + message_length:])
        self._lengths, self._rest, self._start, self._filled = None, None, 0, 0
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            self.close()  # an answer nobody waits for: the connection is out of step
            return
        answer.set_result(frame)

    def _fail(self, reason: str) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(WireError(reason))
        self.close()

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
        self.shares_memory = True  # until the runtime refuses a tensor in shared memory
        self._idle: list[LocalConnection] = []
        self._closed = False

    @property
    def idle_connections(self) -> int:
        """Connections kept open for the next call."""
        return sum(not connection.closed for connection in self._idle)

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   attachments: Attachments | None = None) -> ResponseT:
        """One call, with the large tensors of `attachments.sent` beside the request and those of
        the answer put in `attachments.received`; raises LocalCallError with the status it
        failed with (LocalUnreachable when the socket is gone), BackendError for an answer
        that breaks the wire. A kept connection found broken before any answer came (the
        runtime restarted meanwhile) is replaced once, within the deadline. Tensors in shared
        memory (protos.shared_memory) are named, not sent, until the runtime refuses one: the
        call is then sent again with them inline, and so is every later call (only this one when
        the runtime could not map it just now)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        number, message = METHOD_NUMBERS[method.path], request.SerializeToString()
        share = self.shares_memory
        retried = False
        while True:
            table, buffers = attachments.frame(share) if attachments and attachments.sent else (b"", [])
            connection, kept = await self._connection(deadline - loop.time())
            try:
                frame = await self._exchange(connection, (number, table, message, buffers), deadline)
            except LocalCallError as error:
                if kept and not retried and error.code is grpc.StatusCode.UNAVAILABLE and not connection.heard_from:
                    retried = True  # most likely a kept connection to a runtime that restarted since;
                    continue  # (the request may have run: at least once, as gRPC's retry of UNAVAILABLE)
                _forget_shared(attachments, share)
                raise
            except WireError as error:
                raise BackendError(f"the backend broke the local wire: {error}",
                                   log_detail=f"backend {self.target} ({self.path})") from None
            except BaseException:  # cancelled: the runtime may be reading the shared tensors still
                _forget_shared(attachments, share)
                raise
            if frame.code in (SHARED_REFUSED, SHARED_BUSY) and share:
                reason = bytes(frame.message).decode(errors="replace")
                if frame.code == SHARED_REFUSED:
                    log.warning("backend %s: the runtime cannot map the gateway's shared memory (%s); large "
                                "tensors go on the socket", self.target, reason)
                    self.shares_memory = False
                share = False  # this call, again, inline
                continue
            break
        if frame.code:
            raise LocalCallError(grpc_code(frame.code), bytes(frame.message).decode(errors="replace"))
        try:
            response = method.response.FromString(cast(bytes, frame.message))  # any buffer parses
            if frame.table or frame.attachment:
                if attachments is None:
                    raise WireError("tensors came beside an answer that expects none")
                attachments.received = split_attachment(frame.table, frame.attachment)
        except (DecodeError, WireError) as error:
            raise BackendError(f"the backend answered a malformed message: {error}",
                               log_detail=f"backend {self.target} ({self.path})") from None
        return response

    async def _exchange(self, connection: LocalConnection, payload: tuple[int, bytes, bytes, list[memoryview]],
                        deadline: float) -> Frame:
        """Send one request on `connection` and wait for its answer until `deadline`; the
        connection is kept for the next call only when the exchange completed."""
        loop = asyncio.get_running_loop()
        expiry: asyncio.TimerHandle | None = None
        try:
            answer = connection.send(*payload)
            expiry = loop.call_at(deadline, _expire, answer)
            frame = await answer
        except BaseException:
            connection.close()  # the runtime's answer, if it comes, would be out of step
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
        self._idle = [kept for kept in self._idle if not kept.closed]
        if self._closed or len(self._idle) >= MAX_IDLE:
            connection.close()  # after a burst, keep no more than the usual calls need
        elif not connection.closed:
            self._idle.append(connection)
        return frame

    async def _connection(self, timeout: float) -> tuple[LocalConnection, bool]:
        """An idle connection (and True), else a new one (and False)."""
        if timeout <= 0:
            raise LocalCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection, True
        if self._closed:
            raise LocalCallError(grpc.StatusCode.UNAVAILABLE, "the channel is closed")
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_unix_connection(LocalConnection, self.path), timeout)
        except TimeoutError:
            raise LocalCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "connecting took too long") from None
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise LocalUnreachable(grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.path}: "
                                   f"{error.strerror or error}") from None
        except OSError as error:
            raise LocalCallError(grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.path}: "
                                 f"{error.strerror or error}") from None
        return connection, False

    def close(self) -> None:
        """Close the idle connections; calls still running close theirs when they end."""
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _forget_shared(attachments: Attachments | None, shared: bool) -> None:
    """A call given up before its answer: its shared tensors' regions are never reused, since the
    runtime may still be reading them (they go once nothing here refers to them)."""
    if attachments is None or not shared:
        return
    for _, _, array in attachments.sent:
        if (region := region_of(array)) is not None:
            forget_region(region)


def _expire(answer: asyncio.Future[Frame]) -> None:
    if not answer.done():
        answer.set_exception(LocalCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
