"""One HTTP/2 connection of the gRPC server (RFC 9113, grpc's PROTOCOL-HTTP2.md).

An asyncio protocol: frames are parsed as bytes arrive, a call is dispatched as a task once its
request has ended (unary and server-streaming methods), and its answer is written in as few
writes as flow control allows (headers, message and trailers in one for a small answer). Flow
control both ways, PING, SETTINGS, GOAWAY (a graceful `shutdown` in two steps, also when the
connection reaches its maximum age) and RST_STREAM (a call reset by its client is cancelled) as
the RFC says. A malformed request (RFC 9113 8.1.1: pseudo-headers, field names and values,
connection-specific fields, TE, content-length) is reset with PROTOCOL_ERROR; a request that is
not a gRPC call is answered 405 or 415 once it ended; a connection error ends the connection
with GOAWAY and the RFC's error code. Limits against abusive clients: write back-pressure (a
full transport buffer stops reading and answering), PING/SETTINGS/RST_STREAM floods and rapid
resets (GOAWAY ENHANCE_YOUR_CALM), request bytes held per connection, a request timeout, 64 KiB
header blocks; a closing connection lingers (FIN, input dropped) before its socket is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import struct
import zlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, cast

import grpc

from gateway.grpc_server import frames as f
from gateway.grpc_server.call import RESERVED_HEADERS, RpcHandler, ServerCall
from gateway.grpc_server.frames import ConnectionFault
from gateway.grpc_server.hpack import Decoder, HeaderListTooLarge, HpackError, encode, encode_uncached
from gateway.grpc_server.status import RpcStatus, code_number, encode_message, parse_timeout

if TYPE_CHECKING:
    from gateway.grpc_server.server import GrpcServer

log = logging.getLogger("gateway.grpc")
_MESSAGE_PREFIX = struct.Struct(">BL")  # compressed flag, length
_RESPONSE_HEADERS = encode([(":status", "200"), ("content-type", "application/grpc"),
                            ("grpc-accept-encoding", "identity,deflate,gzip")])
_OK_TRAILER = encode([("grpc-status", "0")])
_DECOMPRESS_WBITS = {"gzip": 31, "deflate": 15}
_MAX_HEADER_BLOCK = 64 * 1024  # a header block beyond this ends the connection (4x grpc's 16 KiB metadata limit)
_SELF_DEPENDENT = 0x100  # beside a HEADERS frame's flags: its priority names its own stream (a stream error)
_SHUTDOWN_PING = b"shutdown"  # the PING after the first GOAWAY of a graceful shutdown (RFC 9113 6.8)
_SHUTDOWN_PING_WAIT_S = 1.0  # the final GOAWAY goes this long after the first one at the latest
_CALLS_CANCELLED_WAIT_S = 1.0  # handlers cancelled at the end of a grace get this long to end before the close
_REMEMBERED = 1024  # stream ids remembered as reset by the server or skipped by the client
_WRITE_BUFFER_HIGH = 1 << 20  # the transport's buffer past this pauses reading and answers' DATA
_LINGER_S = 1.0  # a closing connection reads and drops the client's frames this long at most, then drops the socket
_DRAIN_POLL_S = 0.05  # a closing connection's write buffer is checked this often until it is empty
# Control frames the client makes the server answer or work for (PING, SETTINGS, RST_STREAM) while the
# server sends no answer: past this many in an interval, GOAWAY ENHANCE_YOUR_CALM (grpc's ping strikes,
# RFC 9113 10.5). grpcio sends a keepalive PING every few seconds at most; its BDP PINGs follow DATA.
_MAX_STRIKES = 500
_STRIKE_INTERVAL_S = 1.0
# Early resets (CVE-2023-44487) may reach this many times max_concurrent_streams: a client cancelling
# every call it has in flight at once (a deadline storm) stays well under it.
_RESET_STRIKES_PER_STREAM = 2
# RFC 9113 8.2.1/8.2.2: a name with these octets, a value with NUL, CR or LF, a connection-specific
# field and a TE other than "trailers" make a request malformed. Blanks around a value are let
# through: grpc's ASCII-Value (PROTOCOL-HTTP2.md) allows them, grpcio sends them, grpc's server takes them.
_BAD_NAME = re.compile(r"[\x00-\x20A-Z\x7f-\xff:]|^$")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_REQUEST_PSEUDO = frozenset({":method", ":scheme", ":path", ":authority"})
_valid_fields: set[tuple[str, str]] = set()  # fields already checked (most repeat on every call)


def _field_valid(field: tuple[str, str]) -> bool:
    """Whether a field may be in a request (pseudo-header names are checked by the caller)."""
    if field in _valid_fields:
        return True
    name, value = field
    if name[:1] == ":":
        valid = name in _REQUEST_PSEUDO and _BAD_VALUE.search(value) is None
    else:
        valid = (_BAD_NAME.search(name) is None and _BAD_VALUE.search(value) is None
                 and name not in _CONNECTION_SPECIFIC and (name != "te" or value == "trailers"))
    if valid and len(_valid_fields) < 4096:
        _valid_fields.add(field)
    return valid


class Stream:
    """One call's stream: its request as it arrives, its answer's state and flow control."""

    __slots__ = ("body", "buffered", "call", "content_length", "deadline_timer", "drained", "encoding", "handler",
                 "http_status", "id", "local_closed", "opened", "pending", "pending_size", "read", "recv_unacked",
                 "recv_window", "remote_closed", "reset", "send_window", "sent_headers", "task", "timed_out",
                 "trailers", "unreturned")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.body = bytearray()
        self.buffered = 0  # DATA bytes (with padding) held in `body`
        self.unreturned = 0  # of those, the ones the connection's window opens by only once they are used
        self.opened = 0.0  # event-loop time the stream opened or last had DATA while its request has not ended
        self.read = 0  # the connection's read (`data_received`) its HEADERS came in
        self.call: ServerCall | None = None
        self.handler: RpcHandler | None = None
        self.encoding: str | None = None
        self.content_length: int | None = None  # as the request declared it, checked against its DATA
        self.http_status: str | None = None  # not a gRPC call: answered with this once the request ended
        self.task: asyncio.Task[None] | None = None
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.timed_out = False
        self.sent_headers = False
        self.pending: deque[memoryview] = deque()  # answer bytes waiting for flow control
        self.pending_size = 0
        self.trailers: bytes | None = None  # written once `pending` is empty
        self.drained: asyncio.Future[None] | None = None  # a streaming handler waiting for `pending`


class Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        options = server.options
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.decoder = Decoder(options.header_table_size)
        self.max_block = max(_MAX_HEADER_BLOCK, 4 * options.max_header_list_size)
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.buffer = bytearray()
        self.handshake = 0  # 0: the preface is awaited, 1: the client's first SETTINGS, 2: done
        self.continuation: tuple[int, int, bytearray] | None = None  # stream, HEADERS flags, block so far
        self.send_window = f.DEFAULT_WINDOW
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_frame = f.DEFAULT_MAX_FRAME
        # Request bytes held for requests that have not ended: past `budget` the connection's window
        # opens only as they are used or dropped, so budget + window bound what one connection holds.
        self.window = options.connection_window
        self.half_window = self.window >> 1
        self.budget = max(4 * options.connection_window, 2 * (options.max_receive_message_length + f.DEFAULT_MAX_FRAME))
        self.buffered = 0
        self.recv_window = self.window
        self.recv_unacked = 0
        self.open_requests: dict[int, Stream] = {}  # streams whose request has not ended, oldest first
        self.request_timeout_s = options.request_timeout_s
        self.request_timer: asyncio.TimerHandle | None = None
        self.read_resumed = 0.0  # event-loop time the server last stopped holding uploads back
        self.blocked: dict[int, Stream] = {}  # streams waiting for the connection's send window
        self.draining = False  # the first GOAWAY (last stream 2^31-1) and its PING are sent
        self.going_away = False  # the final GOAWAY is sent: no new streams
        self.closed = False
        # Closed streams whose late frames are told apart (RFC 9113 5.1): reset by the server while the
        # client was still sending (ignored), or skipped by the client (idle, so closed: PROTOCOL_ERROR).
        self.reset_streams: dict[int, None] = {}
        self.skipped: deque[tuple[int, int]] = deque(maxlen=_REMEMBERED)
        self.timers: list[asyncio.TimerHandle] = []
        self.out: list[bytes | memoryview] = []  # written at the end of the loop iteration
        self.out_data = 0  # answer DATA bytes in `out`: past _WRITE_BUFFER_HIGH the rest waits for the write
        self.flush_deferred = False  # answers stopped at _WRITE_BUFFER_HIGH, resumed after the write
        self.write_paused = False  # the transport's buffer is over its limit (pause_writing)
        self.pending_streams: dict[int, Stream] = {}  # streams with answer bytes waiting to be sent
        self.strikes = 0  # control frames received since the server last answered (see _MAX_STRIKES)
        self.unwinding = 0  # handlers of streams the client reset, still running: counted as streams
        self.lingering = False  # closing: our side is shut, the client's frames are read and dropped
        self.idle_s = options.max_connection_idle_s
        self.idle_since = 0.0  # event-loop time the last stream ended
        self.linger_timer: asyncio.TimerHandle | None = None
        self.strikes_until = 0.0
        self.max_resets = max(_MAX_STRIKES, _RESET_STRIKES_PER_STREAM * options.max_concurrent_streams)
        self.reads = 0  # `data_received` calls so far

    # -- the connection's life ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport
        self.peer = _peer(transport.get_extra_info("peername"))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() not in ("h2", None):
            transport.close()  # an HTTP/1.1 client over TLS: nothing to say to it
            return
        options = self.options
        transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        transport.write(f.settings_frame({
            f.MAX_CONCURRENT_STREAMS: options.max_concurrent_streams,
            f.INITIAL_WINDOW_SIZE: options.stream_window,
            f.MAX_FRAME_SIZE: options.max_frame_size,
            f.MAX_HEADER_LIST_SIZE: options.max_header_list_size,
            f.ENABLE_PUSH: 0,
            **({} if options.header_table_size == 4096 else {f.HEADER_TABLE_SIZE: options.header_table_size})})
            + f.window_update(0, self.window - f.DEFAULT_WINDOW))
        self.timers.append(self.loop.call_later(options.handshake_timeout_s, self._handshake_timeout))
        if options.max_connection_age_s is not None:  # +-10 %: connections opened together do not all leave together
            age = options.max_connection_age_s * random.uniform(0.9, 1.1)  # noqa: S311 (a jitter, not a secret)
            self.timers.append(self.loop.call_later(age, self._aged))
        if self.idle_s is not None:
            self.idle_since = self.loop.time()
            self.timers.append(self.loop.call_later(self.idle_s, self._idle_check))
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.lingering.discard(self.transport)
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        self._release()

    def eof_received(self) -> bool:
        return False  # the client closed its side: so does the server (the transport closes)

    def _release(self) -> None:
        """Forget the connection's streams, timers and place in the server (the socket may linger)."""
        self.closed = True
        for timer in self.timers:
            timer.cancel()
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None
        self.open_requests.clear()
        for stream in self.streams.values():
            stream.reset = True
            self._end_stream_tasks(stream)
        self.streams.clear()
        self.blocked.clear()
        self.pending_streams.clear()
        self.server.connections.discard(self)
        self.server.connection_closed()

    def _handshake_timeout(self) -> None:
        if self.handshake < 2 and self.transport is not None:
            self.transport.close()

    def _idle_check(self) -> None:
        """GOAWAY once the connection went `max_connection_idle_s` without a stream (grpc's max
        connection idle); checked again when the last stream ends before then."""
        assert self.idle_s is not None
        wait = self.idle_s if self.streams else self.idle_since + self.idle_s - self.loop.time()
        if wait <= 0:
            self.shutdown()
        elif not self.closed:
            self.timers.append(self.loop.call_later(wait, self._idle_check))

    def _aged(self) -> None:
        self.shutdown()
        self.timers.append(self.loop.call_later(self.options.max_connection_age_grace_s, self.cancel_calls))

    def shutdown(self) -> None:
        """A graceful GOAWAY (RFC 9113 6.8): first one naming stream 2^31-1 and a PING, so the
        streams the client opened meanwhile are still taken; at the PING's ACK the final one
        naming the last stream taken. The calls begun finish; closed once none is left."""
        if self.draining or self.going_away or self.closed or self.transport is None:
            return
        self.draining = True
        self._write(f.goaway(f.STREAM_MASK, f.NO_ERROR) + f.frame(f.PING, 0, 0, _SHUTDOWN_PING))
        self.timers.append(self.loop.call_later(_SHUTDOWN_PING_WAIT_S, self._final_goaway))

    def _final_goaway(self) -> None:
        if self.going_away or self.closed or self.transport is None:
            return
        self.going_away = True
        self._write(f.goaway(self.last_stream_id, f.NO_ERROR))
        if not self.streams:
            self._close_transport()

    def cancel_calls(self) -> list[asyncio.Task[None]]:
        """End every call in flight with UNAVAILABLE (their handlers cancelled), then close; the
        handlers' tasks, to wait for."""
        self._final_goaway()
        tasks = []
        for stream in list(self.streams.values()):
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()  # its handler's end answers UNAVAILABLE (`_cancelled`)
                tasks.append(stream.task)
            else:
                self._finish(stream, grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        self.timers.append(self.loop.call_later(_CALLS_CANCELLED_WAIT_S, self.abort))
        return tasks

    def abort(self) -> None:
        """Close now: calls in flight are cancelled, the socket closed as `_close_transport` does."""
        if self.transport is not None and not self.closed:
            self._close_transport()
            self._release()

    def pause_writing(self) -> None:
        """The transport's buffer is full: read no more frames (they would make the server owe more)
        and send no more answer DATA until it drained."""
        self.write_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.read_resumed = self.loop.time()
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.resume_reading()
        self.flush_deferred = False
        self._flush_pending()

    def _flush_pending(self) -> None:
        for stream in list(self.pending_streams.values()):
            if self.write_paused or self.flush_deferred:
                return
            self._flush(stream)

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def _fault(self, fault: ConnectionFault) -> None:
        log.info("gRPC connection from %s ended: %s", self.peer, fault)
        self._write(f.goaway(self.last_stream_id, fault.code, str(fault).encode()[:256]))
        self.going_away = True
        self.abort()

    # -- frames in ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed or self.lingering:
            return
        self.reads += 1
        buffer = self.buffer
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        try:
            position = self._frames(view)
        except ConnectionFault as fault:
            self._fault(fault)
            return
        except Exception:  # a fault of the server's own: this connection ends, the others go on
            log.exception("gRPC connection from %s failed", self.peer)
            self._fault(ConnectionFault(f.INTERNAL_ERROR, "internal error"))
            return
        if view is buffer:
            del buffer[:position]
        elif position < len(view):
            buffer += view[position:]

    def _frames(self, view: bytes | bytearray) -> int:
        """Handle every whole frame in `view`; the position after the last one."""
        position = 0
        size = len(view)
        if self.handshake < 2:
            position = self._handshake(view)
            if self.handshake == 0:
                return 0  # the preface is not whole yet
        unpack = f.HEADER.unpack_from
        max_frame = self.options.max_frame_size
        while size - position >= f.HEADER_SIZE:
            high, low, kind, flags, stream_id = unpack(view, position)
            length = high << 8 | low
            if length > max_frame:
                raise ConnectionFault(f.FRAME_SIZE_ERROR, f"a frame of {length} bytes (the limit is {max_frame})")
            end = position + f.HEADER_SIZE + length
            if end > size:
                break
            payload = view[position + f.HEADER_SIZE:end]
            position = end
            stream_id &= f.STREAM_MASK
            if self.continuation is not None and kind != f.CONTINUATION:
                raise ConnectionFault(f.PROTOCOL_ERROR, "a header block interrupted before its end")
            if kind == f.DATA:
                self._data(stream_id, flags, payload)
            elif kind == f.HEADERS:
                self._headers(stream_id, flags, payload)
            else:
                handle = self._CONTROL.get(kind)
                if handle is not None:
                    handle(self, stream_id, flags, payload)
            if self.closed:
                break
        return position

    def _handshake(self, view: bytes | bytearray) -> int:
        """The position after the client's preface; its first frame must be SETTINGS (RFC 9113 3.4)."""
        position = 0
        if self.handshake == 0:
            if len(view) < len(f.PREFACE):
                if not f.PREFACE.startswith(view):
                    raise ConnectionFault(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return 0
            if view[:len(f.PREFACE)] != f.PREFACE:
                raise ConnectionFault(f.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.handshake = 1
            position = len(f.PREFACE)
        if len(view) - position >= f.HEADER_SIZE:
            kind, flags = view[position + 3], view[position + 4]
            if kind != f.SETTINGS or flags & f.ACK:
                raise ConnectionFault(f.PROTOCOL_ERROR, "the connection preface is not followed by SETTINGS")
            self.handshake = 2
        return position

    def _data(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if stream_id == 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self.recv_window -= length
        if self.recv_window < 0:
            raise ConnectionFault(f.FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        if flags & f.PADDED:
            payload = _unpad(payload)
        stream = self.streams.get(stream_id)
        if stream is None or stream.handler is None:
            self._consumed(length)  # not kept
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionFault(f.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream_id not in self.reset_streams:  # late data of a stream this server reset is dropped
                self._stream_error(stream_id, f.STREAM_CLOSED)
            return
        if stream.handler is not None:  # held until `_release_body`, also when the stream ends now
            stream.buffered += length
            self.buffered += length
            if self.buffered > self.budget:
                stream.unreturned += length
            else:  # `_consumed` inlined: this runs for every request
                self.recv_unacked += length
                if self.recv_unacked >= self.half_window or self.recv_window < f.DEFAULT_MAX_FRAME:
                    self._consumed(0)
        if stream.remote_closed:
            self._reset(stream, f.STREAM_CLOSED)
            return
        stream.recv_window -= length
        if stream.recv_window < 0:
            self._reset(stream, f.FLOW_CONTROL_ERROR)
            return
        body = stream.body
        if stream.handler is not None:
            body += payload
            if len(body) >= 5:
                declared = _MESSAGE_PREFIX.unpack_from(body)[1]
                limit = self.options.max_receive_message_length
                if declared > limit:
                    self._finish(stream, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"Received message larger than max ({declared} vs. {limit})")
                    return
                if len(body) > 5 + declared:
                    self._finish(stream, grpc.StatusCode.INTERNAL,
                                 "more than one request message for a method that takes one")
                    return
        if stream.content_length is not None:
            stream.content_length -= len(payload)  # what is still to come
            if stream.content_length < 0:
                self._reset(stream, f.PROTOCOL_ERROR)  # RFC 9113 8.1.1: malformed
                return
        if flags & f.END_STREAM:
            self._request_ended(stream)
            return
        if stream.opened:  # progress: the request timeout counts from here (the timer finds it when it fires)
            stream.opened = self.loop.time()
        stream.recv_unacked += length
        if stream.recv_unacked >= self.options.stream_window >> 1:
            self._write(f.window_update(stream_id, stream.recv_unacked))
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0
        if self.recv_window < f.DEFAULT_MAX_FRAME:
            self._window_full()

    def _consumed(self, size: int) -> None:
        """Request bytes used or dropped: the connection's window opens by them (in half-window
        steps, or at once when the client is nearly out of window)."""
        self.recv_unacked += size
        if self.recv_unacked >= self.half_window or (self.recv_unacked and self.recv_window < f.DEFAULT_MAX_FRAME):
            self._write(f.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0

    def _release_body(self, stream: Stream) -> None:
        self.buffered -= stream.buffered
        stream.buffered = 0
        if stream.unreturned:
            size, stream.unreturned = stream.unreturned, 0
            self._consumed(size)

    def _window_full(self) -> None:
        """The connection's window is held by requests that have not ended: the client can send none
        of their rest, so the newest is refused and the older ones can end (else it would stall)."""
        self._consumed(0)
        if self.recv_window >= f.DEFAULT_MAX_FRAME:
            return
        for stream in reversed(self.streams.values()):
            if stream.unreturned and not stream.remote_closed:
                self._reset(stream, f.REFUSED_STREAM)  # no handler ran (RFC 9113 8.7): grpc clients retry it
                return

    def _headers(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if not stream_id & 1:
            raise ConnectionFault(f.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & f.PADDED:
            payload = _unpad(payload)
        if flags & f.PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionFault(f.FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority")
            if f.read_u32(payload) & f.STREAM_MASK == stream_id:
                flags |= _SELF_DEPENDENT
            payload = payload[5:]
        if len(payload) > self.max_block:
            raise ConnectionFault(f.ENHANCE_YOUR_CALM, f"a header block over {self.max_block} bytes")
        if flags & f.END_HEADERS:
            self._header_block(stream_id, flags, payload)
        else:
            self.continuation = (stream_id, flags, bytearray(payload))

    def _continuation(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if self.continuation is None or self.continuation[0] != stream_id:
            raise ConnectionFault(f.PROTOCOL_ERROR, "CONTINUATION without the HEADERS it continues")
        _, first_flags, block = self.continuation
        block += payload
        if len(block) > self.max_block:
            raise ConnectionFault(f.ENHANCE_YOUR_CALM, f"a header block over {self.max_block} bytes")
        if flags & f.END_HEADERS:
            self.continuation = None
            self._header_block(stream_id, first_flags, block)

    def _header_block(self, stream_id: int, flags: int, block: bytes | bytearray) -> None:
        too_large = 0
        try:  # decoded whatever becomes of the stream: the dynamic table must stay in step
            headers = self.decoder.decode(block, self.options.max_header_list_size)
        except HeaderListTooLarge as error:
            headers, too_large = [], error.size
        except HpackError as error:
            raise ConnectionFault(f.COMPRESSION_ERROR, f"a header block that does not decode: {error}") from None
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._trailers(stream, flags, headers, too_large)
            return
        if stream_id <= self.last_stream_id:
            if stream_id in self.reset_streams:
                return  # trailers of a stream answered and reset before its request ended
            if self._was_skipped(stream_id):
                raise ConnectionFault(f.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}, below the last one")
            raise ConnectionFault(f.STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        if stream_id != self.last_stream_id + 2:
            self.skipped.append((self.last_stream_id + 2, stream_id - 2))
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) + self.unwinding >= self.options.max_concurrent_streams:
            self._stream_error(stream_id, f.REFUSED_STREAM)
            return
        stream = Stream(stream_id, self.peer_initial_window, self.options.stream_window)
        stream.read = self.reads
        self.streams[stream_id] = stream
        if flags & f.END_STREAM:
            stream.remote_closed = True
        elif self.request_timeout_s is not None:  # `_track_request` inlined: this runs for nearly every call
            stream.opened = self.loop.time()
            self.open_requests[stream_id] = stream
            if self.request_timer is None:
                self.request_timer = self.loop.call_later(self.request_timeout_s, self._requests_timed_out)
        if flags & _SELF_DEPENDENT:
            self._reset(stream, f.PROTOCOL_ERROR)
            return
        if too_large:
            self._finish(stream, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"received metadata of {too_large} bytes (the limit is "
                         f"{self.options.max_header_list_size})")
            return
        self._start(stream, headers)
        if stream.remote_closed and not stream.local_closed:
            self._request_ended(stream)

    def _trailers(self, stream: Stream, flags: int, headers: list[tuple[str, str]], too_large: int) -> None:
        """A second header block on a stream: the request's trailers (RFC 9113 8.1)."""
        if stream.remote_closed:
            self._reset(stream, f.STREAM_CLOSED)
            return
        if not flags & f.END_STREAM or flags & _SELF_DEPENDENT or not all(
                field[0][:1] != ":" and _field_valid(field) for field in headers):
            self._reset(stream, f.PROTOCOL_ERROR)  # malformed
            return
        if too_large:
            stream.remote_closed = True
            self.open_requests.pop(stream.id, None)
            self._finish(stream, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"received trailing metadata of {too_large} bytes (the limit is "
                         f"{self.options.max_header_list_size})")
            return
        self._request_ended(stream)

    def _was_skipped(self, stream_id: int) -> bool:
        """Whether the client opened streams past `stream_id` without opening it (RFC 9113 5.1.1)."""
        return any(low <= stream_id <= high for low, high in self.skipped)

    def _start(self, stream: Stream, headers: list[tuple[str, str]]) -> None:
        """Read the request's headers: its method, its handler, its deadline and metadata; a
        malformed request (RFC 9113 8.1.1, 8.2, 8.3.1) is reset with PROTOCOL_ERROR."""
        path = method = scheme = authority = None
        content_type = ""
        timeout: float | None = None
        metadata: list[tuple[str, str]] = []
        regular = False
        for field in headers:
            if field not in _valid_fields and not _field_valid(field):
                self._reset(stream, f.PROTOCOL_ERROR)
                return
            name, value = field
            if name[0] == ":":
                if regular:
                    self._reset(stream, f.PROTOCOL_ERROR)  # a pseudo-header after a regular field
                    return
                if name == ":path":
                    duplicate, path = path is not None, value
                elif name == ":method":
                    duplicate, method = method is not None, value
                elif name == ":scheme":
                    duplicate, scheme = scheme is not None, value
                else:
                    duplicate, authority = authority is not None, value
                if duplicate:
                    self._reset(stream, f.PROTOCOL_ERROR)
                    return
                continue
            regular = True
            if name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = parse_timeout(value)
            elif name == "grpc-encoding":
                stream.encoding = value
            elif name == "content-length":
                if not value.isdigit() or not value.isascii():
                    self._reset(stream, f.PROTOCOL_ERROR)
                    return
                stream.content_length = int(value)
            elif name not in RESERVED_HEADERS:
                metadata.append(field)
        if method != "CONNECT" and (not path or method is None or scheme is None):
            self._reset(stream, f.PROTOCOL_ERROR)  # a pseudo-header missing, or an empty :path
            return
        if method != "POST":
            stream.http_status = "405"
            return
        if not (content_type == "application/grpc" or content_type.startswith(("application/grpc+",
                                                                               "application/grpc;"))):
            stream.http_status = "415"
            return
        assert path is not None
        deadline = None if timeout is None else self.loop.time() + timeout
        stream.call = ServerCall(path, metadata, self.peer, deadline)
        if stream.encoding not in (None, "identity", "gzip", "deflate"):
            self._finish(stream, grpc.StatusCode.UNIMPLEMENTED,
                         f"the message encoding {stream.encoding!r} is not supported (identity, deflate, gzip are)")
            return
        handler = self.server.handlers.get(path)
        if handler is None:
            self._finish(stream, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            return
        stream.handler = handler
        if timeout is not None:
            stream.deadline_timer = self.loop.call_later(timeout, self._deadline_passed, stream)
            if stream.opened and self.request_timeout_s is not None and timeout > self.request_timeout_s:
                del self.open_requests[stream.id]  # the client's longer deadline governs its upload
                stream.opened = 0.0

    def _requests_timed_out(self) -> None:
        """End the requests that got no DATA for `request_timeout_s` while the server was reading
        them (a stalled upload, not a slow one); re-armed for the soonest of the others."""
        self.request_timer = None
        timeout = self.request_timeout_s
        assert timeout is not None
        now = self.loop.time()
        if self.write_paused or self.buffered > self.budget:  # the server holds the uploads back: no clock runs
            self.read_resumed = now
        since = self.read_resumed
        soonest = timeout
        for stream in list(self.open_requests.values()):
            wait = max(stream.opened, since) + timeout - now
            if wait > 0:
                soonest = min(soonest, wait)
                continue
            self.open_requests.pop(stream.id, None)
            if stream.local_closed or stream.id not in self.streams:
                continue
            if stream.call is None:
                self._reset(stream, f.CANCEL)
            else:
                self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED,
                             f"the request made no progress for {timeout:g} s")
        if self.open_requests and not self.closed:  # at most 8 checks a timeout: a stall is ended up to 1/8 late
            self.request_timer = self.loop.call_later(max(soonest, timeout / 8), self._requests_timed_out)

    def _request_ended(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.opened:
            del self.open_requests[stream.id]
        if stream.buffered:  # `_release_body` inlined: this runs for every request
            self.buffered -= stream.buffered
            stream.buffered = 0
            if stream.unreturned:
                size, stream.unreturned = stream.unreturned, 0
                self._consumed(size)
        if stream.local_closed:
            self._forget(stream)
            return
        if stream.content_length:  # fewer bytes than it declared
            self._reset(stream, f.PROTOCOL_ERROR)
            return
        handler = stream.handler
        if handler is None:
            assert stream.http_status is not None
            self._http_error(stream, stream.http_status)
            return
        try:
            message = self._message(stream)
        except RpcStatus as status:
            self._finish(stream, status.code, status.message)
            return
        if handler.unary is not None:
            stream.task = self.loop.create_task(self._unary(stream, handler, message))
        else:
            stream.task = self.loop.create_task(self._streaming(stream, handler, message))

    def _message(self, stream: Stream) -> bytes:
        """The request's one message, decompressed when it says so."""
        body = stream.body
        if len(body) < 5:
            raise RpcStatus(grpc.StatusCode.INTERNAL, "the call carried no request message" if not body
                            else "the request message was cut short")
        compressed, length = _MESSAGE_PREFIX.unpack_from(body)
        if compressed > 1:
            raise RpcStatus(grpc.StatusCode.INTERNAL, f"a message with the reserved compressed flag {compressed}")
        if len(body) != 5 + length:
            raise RpcStatus(grpc.StatusCode.INTERNAL, "the request message was cut short" if len(body) < 5 + length
                            else "more than one request message for a method that takes one")
        message = bytes(memoryview(body)[5:]) if length > 4096 else bytes(body[5:])  # large: one copy, not two
        stream.body = bytearray()
        if not compressed:
            return message
        if stream.encoding not in _DECOMPRESS_WBITS:
            raise RpcStatus(grpc.StatusCode.INTERNAL, "a compressed message without a grpc-encoding")
        limit = self.options.max_receive_message_length
        inflater = zlib.decompressobj(_DECOMPRESS_WBITS[stream.encoding])
        try:
            message = inflater.decompress(message, limit + 1)
        except zlib.error as error:
            raise RpcStatus(grpc.StatusCode.INTERNAL, f"the message does not decompress: {error}") from None
        if len(message) > limit:
            raise RpcStatus(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Received message larger than max (over {limit} bytes once decompressed)")
        if not inflater.eof or inflater.unused_data:  # a prefix could parse as another, valid request
            raise RpcStatus(grpc.StatusCode.INTERNAL, "the message does not decompress: "
                            + ("truncated" if not inflater.eof else "bytes after its end"))
        return message

    def _rst_stream(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if stream_id == 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "an RST_STREAM frame not 4 bytes long")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionFault(f.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            self._strike(self.max_resets)
            return
        # Early (a rapid reset): its request had not ended, or it came in the same read as its HEADERS (an
        # attack's HEADERS+RST pairs); a cancelled live call (a deadline, a cancel) is no strike.
        if not stream.remote_closed or stream.read == self.reads:
            self._strike(self.max_resets)
        stream.reset = True
        task = stream.task
        if task is not None and not task.done():  # counted until it ended (CVE-2023-44487: rapid reset)
            self.unwinding += 1
            task.add_done_callback(self._unwound)
        self._end_stream_tasks(stream)
        self._forget(stream)

    def _unwound(self, task: asyncio.Task[None]) -> None:
        self.unwinding -= 1

    def _settings(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if stream_id != 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise ConnectionFault(f.FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        self._strike(_MAX_STRIKES)
        grew = False
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise ConnectionFault(f.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                if delta:  # every stream's window moves by it (RFC 9113 6.9.2); most SETTINGS leave it
                    for stream in self.streams.values():
                        stream.send_window += delta
                        if stream.send_window > f.MAX_WINDOW:
                            raise ConnectionFault(f.FLOW_CONTROL_ERROR,
                                                  "a stream's window over 2^31-1 (RFC 9113 6.9.2)")
                    grew = delta > 0
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= f.LARGEST_MAX_FRAME:
                    raise ConnectionFault(f.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
            elif key == f.ENABLE_PUSH and value > 1:
                raise ConnectionFault(f.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value}")
        self._write(f.frame(f.SETTINGS, f.ACK, 0))
        if grew:
            self._flush_pending()

    def _ping(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if stream_id != 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a PING frame not 8 bytes long")
        if not flags & f.ACK:
            self._strike(_MAX_STRIKES)
            self._write(f.frame(f.PING, f.ACK, 0, payload))
        elif self.draining and payload == _SHUTDOWN_PING:
            self._final_goaway()  # the client has seen the first GOAWAY: it opens no more streams

    def _goaway(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if stream_id != 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a GOAWAY frame shorter than 8 bytes")
        self.going_away = True  # the client leaves: the calls in flight are still answered
        if not self.streams:
            self._close_transport()

    def _window_update(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        if len(payload) != 4:
            raise ConnectionFault(f.FRAME_SIZE_ERROR, "a WINDOW_UPDATE frame not 4 bytes long")
        increment = f.read_u32(payload) & f.STREAM_MASK
        if stream_id == 0:
            if increment == 0:
                raise ConnectionFault(f.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > f.MAX_WINDOW:
                raise ConnectionFault(f.FLOW_CONTROL_ERROR, "the connection's window over 2^31-1")
            blocked, self.blocked = self.blocked, {}
            for waiting in blocked.values():
                self._flush(waiting)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self.last_stream_id:
                raise ConnectionFault(f.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream's: nothing is left to send on it
        if increment == 0:
            self._reset(stream, f.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > f.MAX_WINDOW:
            self._reset(stream, f.FLOW_CONTROL_ERROR)
            return
        if stream.pending:
            self._flush(stream)

    def _priority(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        """Priorities are not acted on (RFC 9113 5.3.2 deprecates them), only checked."""
        if stream_id == 0:
            raise ConnectionFault(f.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) == 5 and f.read_u32(payload) & f.STREAM_MASK != stream_id:
            return
        code = f.FRAME_SIZE_ERROR if len(payload) != 5 else f.PROTOCOL_ERROR
        if stream_id > self.last_stream_id:  # RST_STREAM on an idle stream is itself an error (RFC 9113 6.4)
            raise ConnectionFault(code, f"a malformed PRIORITY on idle stream {stream_id}")
        self._stream_error(stream_id, code)

    def _strike(self, limit: int) -> None:
        """One more control frame while the server answers nothing: past `limit` in an interval
        the client is abusive (grpc's ping strikes, CVE-2019-9512/9515, CVE-2023-44487)."""
        now = self.loop.time()
        if now >= self.strikes_until:
            self.strikes, self.strikes_until = 0, now + _STRIKE_INTERVAL_S
        self.strikes += 1
        if self.strikes > limit:
            raise ConnectionFault(f.ENHANCE_YOUR_CALM, "too_many_pings")

    def _push_promise(self, stream_id: int, flags: int, payload: bytes | bytearray) -> None:
        raise ConnectionFault(f.PROTOCOL_ERROR, "PUSH_PROMISE from a client")

    _CONTROL: ClassVar[dict[int, Callable[[Connection, int, int, bytes | bytearray], None]]] = {
        f.PRIORITY: _priority, f.RST_STREAM: _rst_stream, f.SETTINGS: _settings, f.PUSH_PROMISE: _push_promise,
        f.PING: _ping, f.GOAWAY: _goaway, f.WINDOW_UPDATE: _window_update, f.CONTINUATION: _continuation}

    # -- calls ----------------------------------------------------------------------------

    async def _unary(self, stream: Stream, handler: RpcHandler, message: bytes) -> None:
        assert handler.unary is not None
        assert stream.call is not None
        try:
            answer = await handler.unary(message, stream.call)
        except RpcStatus as status:
            self._finish(stream, status.code, status.message)
        except asyncio.CancelledError:
            self._cancelled(stream)
        except Exception:
            log.exception("gRPC call %s failed", stream.call.path)
            self._finish(stream, grpc.StatusCode.INTERNAL, "Unexpected error")
        else:
            self._answer(stream, answer)

    async def _streaming(self, stream: Stream, handler: RpcHandler, message: bytes) -> None:
        assert handler.stream is not None
        assert stream.call is not None
        try:
            async for answer in handler.stream(message, stream.call):
                if stream.local_closed:
                    return
                self._send_message(stream, answer)
                if stream.pending:
                    stream.drained = self.loop.create_future()
                    await stream.drained
        except RpcStatus as status:
            self._finish(stream, status.code, status.message)
        except asyncio.CancelledError:
            self._cancelled(stream)
        except Exception:
            log.exception("gRPC call %s failed", stream.call.path)
            self._finish(stream, grpc.StatusCode.INTERNAL, "Unexpected error")
        else:
            self._finish(stream, grpc.StatusCode.OK, "")

    def _cancelled(self, stream: Stream) -> None:
        """The call's task was cancelled: by its deadline (answered DEADLINE_EXCEEDED), by a
        reset or a lost connection (nobody to answer), or by the server's stop."""
        if stream.reset or self.closed:
            return
        if stream.timed_out:
            self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        else:
            self._finish(stream, grpc.StatusCode.UNAVAILABLE, "the server is stopping")

    def _deadline_passed(self, stream: Stream) -> None:
        stream.deadline_timer = None
        stream.timed_out = True
        if stream.task is not None:
            stream.task.cancel()
        elif not stream.local_closed:
            self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    # -- frames out -----------------------------------------------------------------------

    def _write(self, data: bytes | memoryview) -> None:
        """Queue `data`: what a loop iteration writes goes out in one write at its end (the
        answers of many calls on one connection in one system call)."""
        if self.transport is None or self.closed:
            return
        out = self.out
        out.append(data)
        if len(out) == 1:
            self.loop.call_soon(self._send_out)

    def _send_out(self) -> None:
        out, self.out = self.out, []
        self.out_data = 0
        if not out or self.transport is None or self.closed or self.lingering:
            return
        if len(out) == 1:
            self.transport.write(out[0])
        else:
            self.transport.writelines(out)
        if self.flush_deferred and not self.write_paused:
            self.flush_deferred = False
            self._flush_pending()

    def _close_transport(self) -> None:
        """A lingering close: what is queued is written, then our side shut (FIN); the client's
        frames are read and dropped until it closes or _LINGER_S passed, then the socket is dropped
        (closing with unread input would send RST, which can destroy answers the client has not
        read yet; a client that reads nothing must not hold the socket and its buffer). The linger
        starts once the write buffer is empty: a slow reader gets the whole answer."""
        self._send_out()
        transport = self.transport
        if transport is None or self.lingering or transport.is_closing():
            return
        self.lingering = True
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the client is gone already
                transport.abort()
                return
            transport.resume_reading()  # even when paused by back-pressure: the input is dropped
        else:
            transport.close()  # TLS: no half-close
        self.server.lingering.add(transport)
        self._drained(transport, transport.get_write_buffer_size(), self.loop.time())

    def _drained(self, transport: asyncio.Transport, size: int, since: float) -> None:
        """Linger once the write buffer is empty; drop a client whose buffer did not shrink within _LINGER_S."""
        left = transport.get_write_buffer_size()
        now = self.loop.time()
        if left == 0:
            self.linger_timer = self.loop.call_later(_LINGER_S, transport.abort)
            return
        if left < size:
            size, since = left, now
        elif now - since >= _LINGER_S:  # it reads nothing
            transport.abort()
            return
        self.linger_timer = self.loop.call_later(_DRAIN_POLL_S, self._drained, transport, size, since)

    def _answer(self, stream: Stream, answer: bytes) -> None:
        """A unary call's answer: headers, the message and the OK trailers, at once when flow
        control lets the message go in one frame."""
        if stream.local_closed or self.closed:
            return
        size = len(answer) + 5
        trailers = self._trailers_block(stream, _OK_TRAILER)
        stream_id = stream.id
        if (not stream.sent_headers and size <= min(stream.send_window, self.send_window, self.peer_max_frame)
                and len(trailers) <= self.peer_max_frame):
            stream.send_window -= size
            self.send_window -= size
            stream.sent_headers = True
            self.strikes = 0
            self._write(b"".join((
                f.frame_header(f.HEADERS, f.END_HEADERS, stream_id, len(_RESPONSE_HEADERS)), _RESPONSE_HEADERS,
                f.frame_header(f.DATA, 0, stream_id, size), _MESSAGE_PREFIX.pack(0, len(answer)), answer,
                f.frame_header(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream_id, len(trailers)), trailers)))
            self._close_local(stream)
            return
        self._send_message(stream, answer)
        stream.trailers = trailers
        self._flush(stream)

    def _send_message(self, stream: Stream, message: bytes) -> None:
        if not stream.sent_headers:
            stream.sent_headers = True
            self._write(f.frame(f.HEADERS, f.END_HEADERS, stream.id, _RESPONSE_HEADERS))
        stream.pending.append(memoryview(_MESSAGE_PREFIX.pack(0, len(message))))
        if message:  # an empty piece would never be sent, and the stream would wait on it forever
            stream.pending.append(memoryview(message))
        stream.pending_size += len(message) + 5
        self.pending_streams[stream.id] = stream
        self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        """Send what flow control lets go of the stream's answer; its trailers once all went."""
        pending = stream.pending
        while pending:
            if self.write_paused or self.out_data >= _WRITE_BUFFER_HIGH:
                self.flush_deferred = not self.write_paused  # resumed by `_send_out` or `resume_writing`
                return
            allowed = min(stream.send_window, self.send_window, self.peer_max_frame, stream.pending_size)
            if allowed <= 0:
                if self.send_window <= 0:
                    self.blocked[stream.id] = stream
                return
            chunk: list[memoryview] = []
            taken = 0
            while taken < allowed:
                piece = pending[0]
                if len(piece) <= allowed - taken:
                    chunk.append(pending.popleft())
                    taken += len(piece)
                else:
                    cut = allowed - taken
                    chunk.append(piece[:cut])
                    pending[0] = piece[cut:]
                    taken += cut
            stream.send_window -= taken
            self.send_window -= taken
            stream.pending_size -= taken
            self.out_data += taken
            self.strikes = 0
            self._write(f.frame_header(f.DATA, 0, stream.id, taken))
            for piece in chunk:
                self._write(piece)
        self.pending_streams.pop(stream.id, None)
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        if stream.trailers is not None:
            trailers, stream.trailers = stream.trailers, None
            self._write(f.header_frames(stream.id, f.END_STREAM, trailers, self.peer_max_frame))
            self._close_local(stream)

    def _trailers_block(self, stream: Stream, status: bytes, message: str = "") -> bytes:
        block = status
        if message:
            block += encode([("grpc-message", encode_message(message))])
        call = stream.call
        if call is not None and call.trailing_metadata:
            block += encode_uncached(call.trailing_metadata)
        return block

    def _finish(self, stream: Stream, code: grpc.StatusCode, message: str) -> None:
        """End the call with a status (after any answer bytes still waiting for flow control);
        a call that sent nothing yet answers trailers-only."""
        if stream.local_closed or self.closed:
            return
        refused = self.server.refused
        if stream.task is None and stream.call is not None and refused is not None:
            try:
                refused(stream.call, code, message, len(stream.body))  # ended before any handler ran
            except Exception:  # the observer's fault: the call still ends
                log.exception("gRPC refused-call hook failed for %s", stream.call.path)
        status = _OK_TRAILER if code is grpc.StatusCode.OK else encode([("grpc-status", str(code_number(code)))])
        trailers = self._trailers_block(stream, status, message)
        if not stream.sent_headers:
            stream.sent_headers = True
            self.strikes = 0
            self._write(f.header_frames(stream.id, f.END_STREAM, _RESPONSE_HEADERS + trailers, self.peer_max_frame))
            self._close_local(stream)
            return
        stream.trailers = trailers
        self._flush(stream)

    def _http_error(self, stream: Stream, status: str) -> None:
        """A request that is not a gRPC call: an HTTP status and no body."""
        stream.sent_headers = True
        self.strikes = 0
        self._write(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, encode([(":status", status)])))
        self._close_local(stream)

    def _close_local(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.deadline_timer is not None:
            stream.deadline_timer.cancel()
            stream.deadline_timer = None
        if not stream.remote_closed:
            self._reset(stream, f.NO_ERROR)  # the answer is complete: the client need not send the rest
            return
        self._forget(stream)

    def _reset(self, stream: Stream, code: int) -> None:
        stream.local_closed = True
        stream.reset = stream.reset or code != f.NO_ERROR
        if code != f.NO_ERROR:
            self._end_stream_tasks(stream)
        self._stream_error(stream.id, code)
        self._forget(stream)

    def _stream_error(self, stream_id: int, code: int) -> None:
        """RST_STREAM; the client's frames already on their way on that stream are ignored."""
        self._write(f.rst_stream(stream_id, code))
        reset = self.reset_streams
        reset[stream_id] = None
        if len(reset) > _REMEMBERED:
            del reset[next(iter(reset))]

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        if stream.pending:  # only a stream with answer bytes waiting is in these
            self.blocked.pop(stream.id, None)
            self.pending_streams.pop(stream.id, None)
        if not stream.remote_closed:
            self.open_requests.pop(stream.id, None)
        if stream.buffered:
            self._release_body(stream)
        self._after_stream()

    def _after_stream(self) -> None:
        if not self.streams:
            if self.going_away:
                self._close_transport()
            elif self.idle_s is not None:
                self.idle_since = self.loop.time()
        self.server.stream_closed()

    @staticmethod
    def _end_stream_tasks(stream: Stream) -> None:
        if stream.deadline_timer is not None:
            stream.deadline_timer.cancel()
            stream.deadline_timer = None
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.drained is not None and not stream.drained.done():
            stream.drained.cancel()


def _unpad(payload: bytes | bytearray) -> bytes | bytearray:
    if not payload:
        raise ConnectionFault(f.PROTOCOL_ERROR, "a padded frame without its pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ConnectionFault(f.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1:len(payload) - pad]


def _peer(address: object) -> str:
    """The caller's address as grpc writes it."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return "unknown"
