"""One HTTP/2 connection of the in-loop gRPC client (RFC 9113, grpc's PROTOCOL-HTTP2.md), h2c
with prior knowledge: the mirror of gateway.grpc_server.connection.

An asyncio protocol. A call is a `ClientStream` submitted with its header block and its
length-prefixed message; it is written in one write (HEADERS, DATA, END_STREAM) as far as the
server's windows allow, the rest on its WINDOW_UPDATEs. Calls beyond the server's
MAX_CONCURRENT_STREAMS wait in a queue. Answers are reassembled as frames arrive and end the
stream's future with the message (a memoryview of it) or an `RpcStatus`. We open large windows
(16 MiB a stream, 64 MiB the connection) and give them back as we read, so big messages flow
without round trips. PING is answered; a keepalive PING goes every `keepalive_s` while calls are
in flight (grpc servers take pings on an idle connection for abuse: GOAWAY too_many_pings), and
one not acknowledged within `keepalive_timeout_s` ends the connection. GOAWAY: streams the server never
took fail as `Unprocessed` (sent again elsewhere), the others finish, no new one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import ClassVar, cast

import grpc

from gateway.grpc_client.codes import CODES, Unprocessed, http_status_error, reset_error
from gateway.grpc_server import frames as f
from gateway.grpc_server.frames import ConnectionFault
from gateway.grpc_server.hpack import Decoder, HpackError, encode_integer
from gateway.grpc_server.status import RpcStatus, decode_message

log = logging.getLogger("gateway.backends")

STREAM_WINDOW = 16 << 20  # our SETTINGS_INITIAL_WINDOW_SIZE: a 16 MiB answer needs no WINDOW_UPDATE
CONNECTION_WINDOW = 64 << 20
MAX_FRAME = 1 << 20  # our SETTINGS_MAX_FRAME_SIZE: fewer frames for large answers
MAX_STREAM_ID = f.STREAM_MASK
MESSAGE_PREFIX = struct.Struct(">BL")  # compressed flag, length
_KEEPALIVE_PING = b"gw-alive"
_UNLIMITED = 1 << 31
_SMALL_WRITE = 1 << 16  # pieces up to this total are joined into one bytes object


class ClientStream:
    """One unary call: what it sends, and its answer as it arrives."""

    __slots__ = ("block", "body", "data", "future", "got_headers", "http_status", "id", "recv_unacked",
                 "send_window", "sent")

    def __init__(self, block: bytes, data: bytes | memoryview, future: asyncio.Future[memoryview]) -> None:
        self.block = block  # the request's header block (HPACK, no size update)
        self.data = data  # the length-prefixed message
        self.future = future
        self.id = 0  # 0 until opened
        self.sent = 0  # bytes of `data` written
        self.send_window = 0
        self.recv_unacked = 0
        self.body = bytearray()
        self.got_headers = False
        self.http_status = ""


class ClientConnection(asyncio.Protocol):
    """The client side of one HTTP/2 connection. `ready` is done once the server's first
    SETTINGS came (and acknowledged): calls may then be submitted; `lost` once the connection ended."""

    def __init__(self, keepalive_s: float = 30.0, keepalive_timeout_s: float = 10.0,
                 first_stream_id: int = 1) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.keepalive_s = keepalive_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.decoder = Decoder()
        self.streams: dict[int, ClientStream] = {}
        self.queued: deque[ClientStream] = deque()  # beyond the server's MAX_CONCURRENT_STREAMS
        self.blocked: dict[int, ClientStream] = {}  # streams whose DATA waits for a window
        self.next_id = first_stream_id
        self.max_streams = _UNLIMITED
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_MAX_FRAME
        self.send_window = f.DEFAULT_WINDOW
        self.table_size_update: int | None = None  # the next header block starts with it
        self.recv_window = CONNECTION_WINDOW
        self.recv_unacked = 0
        self.buffer = bytearray()
        self.continuation: tuple[int, int, bytearray] | None = None
        self.out: list[bytes | memoryview] = []
        self.receiving = False  # inside data_received: frames go to `out`, written once at its end
        self.going_away = False  # a GOAWAY came or we sent one: no new streams
        self.closed = False
        self.reason = "the connection to the backend ended"
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        """Whether a new call may start here."""
        return not (self.going_away or self.closed) and self.next_id <= MAX_STREAM_ID

    @property
    def busy(self) -> bool:
        return bool(self.streams or self.queued)

    # -- the connection's life ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.write(f.PREFACE + f.settings_frame({
            f.ENABLE_PUSH: 0, f.INITIAL_WINDOW_SIZE: STREAM_WINDOW, f.MAX_FRAME_SIZE: MAX_FRAME})
            + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self.keepalive_timer, self.ping_timer):
            if timer is not None:
                timer.cancel()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.reason))
        streams, self.streams, self.blocked = list(self.streams.values()), {}, {}
        for stream in streams:
            _fail(stream, RpcStatus(grpc.StatusCode.UNAVAILABLE, self.reason))
        self._fail_queued()
        if not self.lost.done():
            self.lost.set_result(None)

    def shutdown(self) -> None:
        """No new calls; the connection closes once the ones running ended (a GOAWAY says so)."""
        if self.closed or self.transport is None:
            return
        if not self.going_away:
            self.going_away = True
            self._emit([f.goaway(0, f.NO_ERROR)])
        self._fail_queued()
        if not self.streams:
            self.transport.close()

    def abort(self, reason: str) -> None:
        """End the connection now: its calls fail UNAVAILABLE with `reason`."""
        self.reason = reason
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _fail_queued(self) -> None:
        queued, self.queued = list(self.queued), deque()
        for stream in queued:
            _fail(stream, Unprocessed("the connection went away before the call was sent"))

    def _keepalive(self) -> None:
        if self.closed:
            return
        if not self.busy:  # idle: no ping (a server counts pings without calls
            self.keepalive_timer = self.loop.call_later(self.keepalive_s, self._keepalive)  # as abuse)
            return
        self._emit([f.frame(f.PING, 0, 0, _KEEPALIVE_PING)])
        self.ping_timer = self.loop.call_later(self.keepalive_timeout_s, self.abort,
                                               "the backend did not answer a keepalive ping")

    # -- calls -----------------------------------------------------------------------------

    def submit(self, stream: ClientStream) -> None:
        """Start `stream` now, or once the server allows one more (raises `Unprocessed` when no
        new call may start here)."""
        if not self.usable:
            raise Unprocessed("the connection takes no new calls")
        if len(self.streams) >= self.max_streams:
            self.queued.append(stream)
        else:
            self._open(stream)

    def cancel(self, stream: ClientStream) -> None:
        """The caller gave up on `stream` (deadline, cancellation): reset it if it was opened."""
        if stream.id == 0:
            with contextlib.suppress(ValueError):  # already taken off the queue
                self.queued.remove(stream)
            return
        if self.streams.pop(stream.id, None) is not None:
            self.blocked.pop(stream.id, None)
            self._emit([f.rst_stream(stream.id, f.CANCEL)])
            self._stream_ended()

    def expire(self, stream: ClientStream) -> None:
        """`stream`'s deadline passed."""
        self.cancel(stream)
        _fail(stream, RpcStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _open(self, stream: ClientStream) -> None:
        stream_id = self.next_id
        self.next_id += 2
        stream.id = stream_id
        stream.send_window = self.peer_initial_window
        self.streams[stream_id] = stream
        block = stream.block
        if self.table_size_update is not None:
            block = encode_integer(self.table_size_update, 5, 0x20) + block
            self.table_size_update = None
        out: list[bytes | memoryview] = [f.header_frames(stream_id, 0, block, self.peer_max_frame)]
        self._pack_data(stream, out)
        self._emit(out)

    def _pack_data(self, stream: ClientStream, out: list[bytes | memoryview]) -> None:
        """As much of `stream`'s DATA as the windows allow, into `out`."""
        data = stream.data
        size = len(data)
        position = stream.sent
        max_frame = self.peer_max_frame
        while position < size:
            room = min(stream.send_window, self.send_window, max_frame, size - position)
            if room <= 0:
                break
            end = position + room
            out.append(f.frame_header(f.DATA, f.END_STREAM if end == size else 0, stream.id, room))
            out.append(data if room == size else memoryview(data)[position:end])
            stream.send_window -= room
            self.send_window -= room
            position = end
        stream.sent = position
        if position < size:
            self.blocked[stream.id] = stream
        else:
            self.blocked.pop(stream.id, None)

    def _flush_blocked(self) -> None:
        out: list[bytes | memoryview] = []
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                break
            self._pack_data(stream, out)
        if out:
            self._emit(out)

    def _emit(self, pieces: list[bytes | memoryview]) -> None:
        if self.receiving:
            self.out.extend(pieces)
        elif self.transport is not None and not self.closed:
            _write(self.transport, pieces)

    def _stream_ended(self) -> None:
        queued = self.queued
        while queued and len(self.streams) < self.max_streams and self.usable:
            self._open(queued.popleft())
        if self.going_away and not self.streams and self.transport is not None:
            self._fail_queued()
            if self.receiving:
                self.loop.call_soon(self.transport.close)  # after what `out` holds is written
            else:
                self.transport.close()

    # -- frames in --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self.buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        self.receiving = True
        try:
            position = self._frames(view)
        except ConnectionFault as fault:
            self.receiving = False
            self._fault(fault)
            return
        finally:
            self.receiving = False
        if view is buffer:
            del buffer[:position]
        elif position < len(view):
            buffer += view[position:]
        if self.out and self.transport is not None and not self.closed:
            out, self.out = self.out, []
            _write(self.transport, out)

    def _fault(self, fault: ConnectionFault) -> None:
        log.warning("gRPC connection to a backend failed: %s", fault)
        self.out = []
        if self.transport is not None and not self.closed:
            self.transport.write(f.goaway(0, fault.code))
            self.abort(f"the backend broke the HTTP/2 protocol: {fault}")

    def _frames(self, view: bytes | bytearray) -> int:
        position = 0
        size = len(view)
        unpack = f.HEADER.unpack_from
        while size - position >= f.HEADER_SIZE:
            high, low, kind, flags, stream_id = unpack(view, position)
            length = high << 8 | low
            if length > MAX_FRAME:
                raise ConnectionFault(f.FRAME_SIZE_ERROR, f"a frame of {length} bytes (the limit is {MAX_FRAME})")
            end = position + f.HEADER_SIZE + length
            if end > size:
                break
            payload = view[position + f.HEADER_SIZE:end]
            position = end
            stream_id &= f.STREAM_MASK
            if self.continuation is not None and kind != f.CONTINUATION:
                raise ConnectionFault(f.PROTOCOL_ERROR, "a header block interrupted before its end")
            handle = self._HANDLERS.get(kind)
            if handle is not None:
                handle(self, stream_id, flags, payload)
            if self.closed:
                break
        return position

    def _data(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        length = len(payload)
        self.recv_window -= length
        if self.recv_window < 0:
            raise ConnectionFault(f.FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self.recv_unacked += length  # every DATA byte is read at once: the window opens as it comes
        if self.recv_unacked >= CONNECTION_WINDOW >> 1:
            self.out.append(f.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # a stream we reset: its late frames are dropped
        if flags & f.PADDED:
            payload = _unpad(payload)
        if not stream.got_headers:
            self._stream_error(stream, RpcStatus(grpc.StatusCode.INTERNAL, "DATA before the response headers"))
            return
        stream.body += payload
        if flags & f.END_STREAM:
            self._finish(stream, None)
            return
        stream.recv_unacked += length
        if stream.recv_unacked >= STREAM_WINDOW >> 1:
            self.out.append(f.window_update(stream_id, stream.recv_unacked))
            stream.recv_unacked = 0

    def _headers(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            payload = payload[5:]
        if flags & f.END_HEADERS:
            self._header_block(stream_id, flags, payload)
        else:
            self.continuation = (stream_id, flags, bytearray(payload))

    def _continuation(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if self.continuation is None or self.continuation[0] != stream_id:
            raise ConnectionFault(f.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block = self.continuation[2]
        block += payload
        if flags & f.END_HEADERS:
            first_flags = self.continuation[1]
            self.continuation = None
            self._header_block(stream_id, first_flags, block)

    def _header_block(self, stream_id: int, flags: int, block: bytes | bytearray) -> None:
        try:
            headers = self.decoder.decode(block)  # always: the dynamic table stays in step
        except HpackError as error:
            raise ConnectionFault(f.COMPRESSION_ERROR, f"a header block that does not decode: {error}") from None
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not stream.got_headers:
            stream.got_headers = True
            stream.http_status = next((value for name, value in headers if name == ":status"), "")
            if flags & f.END_STREAM:
                self._finish(stream, headers)  # trailers-only
            elif stream.http_status != "200":
                self._stream_error(stream, http_status_error(stream.http_status))
        elif flags & f.END_STREAM:
            self._finish(stream, headers)
        else:
            self._stream_error(stream, RpcStatus(grpc.StatusCode.INTERNAL, "trailers without END_STREAM"))

    def _finish(self, stream: ClientStream, trailers: list[tuple[str, str]] | None) -> None:
        """The server ended `stream`: its answer, or its error."""
        del self.streams[stream.id]
        if stream.id in self.blocked:  # answered before the request was all sent: stop sending (RFC 9113 8.1)
            del self.blocked[stream.id]
            self.out.append(f.rst_stream(stream.id, f.NO_ERROR))
        self._stream_ended()
        future = stream.future
        if future.done():
            return
        if stream.http_status != "200":
            future.set_exception(http_status_error(stream.http_status))
            return
        status = message = None
        for name, value in trailers or ():
            if name == "grpc-status":
                status = value
            elif name == "grpc-message":
                message = value
        if status is None:
            future.set_exception(RpcStatus(grpc.StatusCode.UNKNOWN if trailers is not None
                                           else grpc.StatusCode.INTERNAL, "the call ended without a grpc-status"))
            return
        if status != "0":
            code = CODES.get(int(status)) if status.isdigit() else None
            future.set_exception(RpcStatus(code or grpc.StatusCode.UNKNOWN,
                                           decode_message(message) if message else ""))
            return
        body = stream.body
        if len(body) < 5:
            future.set_exception(RpcStatus(grpc.StatusCode.INTERNAL, "the call ended without a response message"))
            return
        compressed, length = MESSAGE_PREFIX.unpack_from(body)
        if compressed:
            future.set_exception(RpcStatus(grpc.StatusCode.INTERNAL,
                                           "a compressed response message, although the call accepts identity only"))
        elif length != len(body) - 5:
            future.set_exception(RpcStatus(grpc.StatusCode.INTERNAL,
                                           f"a response message of {len(body) - 5} bytes, declared {length}"))
        else:
            future.set_result(memoryview(body)[5:])

    def _stream_error(self, stream: ClientStream, error: RpcStatus) -> None:
        self.streams.pop(stream.id, None)
        self.blocked.pop(stream.id, None)
        self.out.append(f.rst_stream(stream.id, f.CANCEL))
        self._stream_ended()
        _fail(stream, error)

    def _rst_stream(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if len(payload) != 4:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "an RST_STREAM frame's length is not 4")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        self.blocked.pop(stream_id, None)
        self._stream_ended()
        _fail(stream, reset_error(f.read_u32(payload)))

    def _settings(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if flags & f.ACK:
            return
        for key, value in f.parse_settings(payload):
            if key == f.MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionFault(f.FLOW_CONTROL_ERROR, f"SETTINGS_INITIAL_WINDOW_SIZE {value}")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.LARGEST_MAX_FRAME:
                    raise ConnectionFault(f.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
            elif key == f.HEADER_TABLE_SIZE and value < 4096:
                self.table_size_update = 0  # we never index: an empty table fits any size
        self.out.append(f.frame(f.SETTINGS, f.ACK, 0))
        self._flush_blocked()
        self._stream_ended()
        if not self.ready.done():
            self.ready.set_result(None)
            if self.keepalive_s > 0:
                self.keepalive_timer = self.loop.call_later(self.keepalive_s, self._keepalive)

    def _ping(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if len(payload) != 8:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a PING frame's length is not 8")
        if not flags & f.ACK:
            self.out.append(f.frame(f.PING, f.ACK, 0, payload))
        elif payload == _KEEPALIVE_PING and self.ping_timer is not None:
            self.ping_timer.cancel()
            self.ping_timer = None
            self.keepalive_timer = self.loop.call_later(self.keepalive_s, self._keepalive)

    def _goaway(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if len(payload) < 8:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a GOAWAY frame shorter than 8 bytes")
        last_stream_id = f.read_u32(payload) & f.STREAM_MASK
        self.going_away = True
        for stream_id_ in [sid for sid in self.streams if sid > last_stream_id]:
            stream = self.streams.pop(stream_id_)
            self.blocked.pop(stream_id_, None)
            _fail(stream, Unprocessed("the server went away before it took the call"))
        self._fail_queued()
        self._stream_ended()
        if not self.streams and self.transport is not None:
            self.loop.call_soon(self.transport.close)

    def _window_update(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if len(payload) != 4:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame's length is not 4")
        increment = f.read_u32(payload) & f.STREAM_MASK
        if stream_id == 0:
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise ConnectionFault(f.FLOW_CONTROL_ERROR, "the connection's window beyond 2^31-1")
            self._flush_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.send_window += increment
        if stream_id in self.blocked:
            out: list[bytes | memoryview] = []
            self._pack_data(stream, out)
            self.out.extend(out)

    def _ignore(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        pass

    def _push_promise(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        raise ConnectionFault(f.PROTOCOL_ERROR, "PUSH_PROMISE although SETTINGS_ENABLE_PUSH is 0")

    _HANDLERS: ClassVar[dict[int, Callable[[ClientConnection, int, int, bytes | bytearray], None]]] = {
        f.DATA: _data, f.HEADERS: _headers, f.CONTINUATION: _continuation, f.RST_STREAM: _rst_stream,
        f.SETTINGS: _settings, f.PING: _ping, f.GOAWAY: _goaway, f.WINDOW_UPDATE: _window_update,
        f.PRIORITY: _ignore, f.PUSH_PROMISE: _push_promise,
    }


def _fail(stream: ClientStream, error: RpcStatus) -> None:
    if not stream.future.done():
        stream.future.set_exception(error)


def _write(transport: asyncio.Transport, pieces: list[bytes | memoryview]) -> None:
    if len(pieces) == 1:
        transport.write(pieces[0])
    elif sum(len(piece) for piece in pieces) <= _SMALL_WRITE:
        transport.write(b"".join(pieces))
    else:
        transport.writelines(pieces)


def _unpad(payload: bytes | bytearray) -> bytes | bytearray:
    if not payload:
        raise ConnectionFault(f.PROTOCOL_ERROR, "a padded frame without its pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionFault(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - pad]
