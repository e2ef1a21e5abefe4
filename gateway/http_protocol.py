"""The HTTP/1.1 connection: uvicorn's httptools protocol with the timeouts and the closing
manners a public server needs.

- Headers: a request's headers must arrive within `header_timeout_s` of the connection's
  start (or of the request's first byte on a kept-alive connection); else the client gets a
  408 (or, if it sent nothing, a plain close). Such a request never reaches the app, so it is
  never counted in flight. (uvicorn's own `timeout_keep_alive` covers only idle connections.)
- Body: a body that did not come with its headers gets `body_timeout_s` of reading time from
  the app's first `receive` (a pipelined request's wait for its turn does not count, nor time
  the server is not reading because the app has not taken what came); once spent, `receive`
  raises RequestTimeout, which the app answers (408, counted and logged) like any other error.
  A body that came with its headers costs nothing: its `receive` is uvicorn's own.
- Large binary bodies: raw tensors (`application/octet-stream`, or the Open Inference Protocol's
  binary extension: a body with `Inference-Header-Content-Length`) of a declared length of at least
  `WHOLE_BODY_MIN_BYTES`, within `max_body_bytes`, that did not come with its headers, are read,
  once the app asks for it (gateway.body, before its first `receive`; an upload, or an answer
  before the body, reads it as uvicorn does), into one buffer of its length (`WholeBody`, from
  protos.buffers), without pausing at uvicorn's 64 kB high-water mark and without the copies of its
  chunked path (its buffer, each `receive`'s bytes, and their join); gateway.body takes it whole.
  On a plaintext connection the socket reads the rest straight into that buffer, past the parser
  (`_BodyReader`, a buffered protocol in the connection's place until the last byte; the
  parser, which frames nothing else meanwhile, starts afresh for the next request). Its `receive`
  still ends it (disconnects, the body's deadline and 100-continue alike).
- Answered before the body came in full (413, 401, 404...): the rest of the body is read and
  discarded before the connection is closed, up to what is left of the body's time (all of
  `body_timeout_s` if the app never read) and `discard_limit()`: closing a socket with unread
  data makes the kernel send a reset, and a client that sends its whole body before reading
  (urllib, http.client) would see that instead of the answer.
- Draining (the shutdown grace, `shutdown_grace_s` after SIGTERM, while /health/ready is 503):
  every answer not yet begun carries `Connection: close` and its connection closes after it, the
  requests in flight when the grace begins included, so a load balancer's kept-alive connections
  move to other instances rather than waiting for this one to close them. Of requests pipelined
  on one connection the last one read carries it (those before it are answered, not cut off); an
  answer already under way when the grace begins keeps its connection, which then closes as
  shutdown closes idle ones.
- Shutdown: the connections waiting in the listening sockets' queues are accepted before the
  listeners close (closing them would reset those, whose clients may have sent a request
  already), each served in a task of the server's (its TLS handshake bounded) by a protocol
  that knows the server is stopping; a request in flight is answered with `Connection: close`; an idle kept-alive
  connection is closed once it has been idle for `IDLE_CLOSE_S` (a request that arrives
  before is served and answered with `Connection: close`), so the close does not cross a
  request the client has just sent on it.

Built on uvicorn's HttpToolsProtocol and its parser callbacks (tests/gateway/test_timeouts.py,
test_limits.py and tests/e2e/test_shutdown.py hold it to that behaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import socket
import struct
import threading
import weakref
from asyncio import TimerHandle
from collections.abc import Callable, Mapping
from ssl import SSLContext
from typing import Any, ClassVar, cast

import httptools
import uvicorn
from uvicorn._types import ASGIReceiveEvent
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.answers import NATIVE
from gateway.errors import RequestTimeout
from gateway.observability import WHOLE_BODY_READ_KEY, new_request_id
from gateway.settings import Settings
from protos.buffers import large_buffer
from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from protos.shared_memory import SharedRegion, shared_buffer

HANDSHAKE_MAX_S = 5.0  # at shutdown, a queued TLS connection's handshake is given at most this long
IDLE_CLOSE_S = 0.5  # at shutdown, an idle connection is closed after being idle this long
# ... and one that has not sent its first request yet after this long: its client has just
# connected to send one (a busy client may take a moment), so closing it at once would cut it off.
FRESH_CLOSE_S = 2.0
# An answered request's body is discarded up to this many times max_body_bytes (at least
# DISCARD_MIN_BYTES), so a body somewhat over the limit still gets its 413 read.
DISCARD_FACTOR = 4
DISCARD_MIN_BYTES = 256 * 1024 * 1024
_DEFAULTS = Settings()

log = logging.getLogger("gateway")


BODY_CLOCK_KEY = "gateway.body_clock"  # in a request's scope: the deadline of its body, when it has one
WHOLE_BODY_KEY = "gateway.whole_body"  # in a request's scope: what starts reading its body into a WholeBody
WHOLE_BODY_MIN_BYTES = 1 << 20
SCRATCH_BYTES = 1 << 20  # what one read from the socket into a shared body takes at most
BINARY_TYPE = b"application/octet-stream"
OIP_HEADER_LENGTH = b"inference-header-content-length"  # the Open Inference Protocol's binary extension


class WholeBody:
    """A request body of a declared length, read into one buffer of that length: memory shared
    with the embedded runtimes where the system has it (protos.shared_memory: the gateway writes
    it through the kernel and maps it read-only, so a tensor it only forwards to its runtime
    never enters its resident memory, and the runtime reads it from there instead of from a
    socket), else one of the process's large buffers (protos.buffers); both kinds are pooled.
    Either way a client that declares a large body and sends little costs little. `view()` is the whole body once every
    byte has come (read-only when shared: arrays over it cannot be written); `room()` is where the
    socket reads the next bytes into, and `filled_in(n)` takes them."""

    __slots__ = ("__weakref__", "buffer", "filled", "region", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.filled = 0
        self.region: SharedRegion | None = None
        if SHARED_MEMORY:
            try:
                self.buffer = shared_buffer(size)
                self.region = cast(SharedRegion, self.buffer.obj)
                return
            except OSError as error:  # out of descriptors, say: a buffer of its own
                log.warning("no shared memory for a request body (%s); reading it into a buffer", error)
        self.buffer = large_buffer(size)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        end = self.filled + len(data)
        if self.region is not None:
            self.region.write_at(self.filled, data)
        else:
            self.buffer[self.filled:end] = data  # the parser frames the body: never past `size`
        self.filled = end

    def room(self) -> memoryview:
        """Where the next bytes from the socket go (never more than are missing)."""
        if self.region is not None:  # read through one scratch buffer: taken at once by filled_in
            return _scratch()[:self.size - self.filled]
        return self.buffer[self.filled:]

    def filled_in(self, nbytes: int) -> None:
        """`nbytes` have been read into `room()`."""
        if self.region is not None:
            self.add(_scratch()[:nbytes])
        else:
            self.filled += nbytes

    def view(self) -> memoryview | None:
        return self.buffer if self.filled == self.size else None


def _scratch() -> memoryview:
    """This thread's buffer between the socket and a shared body (its event loop reads into it and
    empties it in the same step)."""
    scratch: memoryview | None = getattr(_SCRATCH, "buffer", None)
    if scratch is None:
        scratch = _SCRATCH.buffer = memoryview(bytearray(SCRATCH_BYTES))
    return scratch


_SCRATCH = threading.local()


def allow_body_time(scope: Mapping[str, Any], timeout_s: float) -> None:
    """Give the request's body `timeout_s` of reading time instead of `body_timeout_s`, for the
    one route whose bodies are meant to be large (a model upload); called before its first
    `receive`, else nothing changes. A body that came with its headers has no deadline to change."""
    clock: _BodyClock | None = scope.get(BODY_CLOCK_KEY)
    if clock is not None and not clock.started:
        clock.timeout_s = clock.left = timeout_s


def discard_limit(max_body_bytes: int) -> int:
    """How much of an answered request's body is read and thrown away before closing."""
    return max(DISCARD_FACTOR * max_body_bytes, DISCARD_MIN_BYTES)


def http_protocol(settings: Settings) -> type[GatewayHttpProtocol]:
    """The protocol class for uvicorn's `Config(http=...)`, with the settings' limits."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "discard_bytes": discard_limit(settings.max_body_bytes),
        "max_body_bytes": settings.max_body_bytes,
    })


def begin_draining(server: uvicorn.Server) -> None:
    """The shutdown grace begins: from now on every answer closes its connection (the
    requests already in flight included)."""
    protocol_class = server.config.http_protocol_class
    if isinstance(protocol_class, type) and issubclass(protocol_class, GatewayHttpProtocol):
        protocol_class.draining = True
    for connection in server.server_state.connections:
        if isinstance(connection, GatewayHttpProtocol):
            connection.drain()


async def adopt_pending_connections(server: uvicorn.Server) -> None:
    """Stop listening, first accepting the connections the kernel has queued (they would be
    reset by the close) and serving them as any other (the shutdown then drains them). Their
    TLS handshakes run in the server's tasks, bounded, so a silent client holds up nothing."""
    pending: list[socket.socket] = []
    for listener in server.servers:
        for sock in listener.sockets:
            with socket.socket(fileno=os.dup(sock.fileno())) as queue:
                _refuse_new_handshakes(queue)
                queue.setblocking(False)
                _accept_queued(queue, pending)
        listener.close()
    if not pending:
        return
    config = server.config
    protocol_class = config.http_protocol_class
    handshake_s = min(getattr(protocol_class, "header_timeout_s", HANDSHAKE_MAX_S), HANDSHAKE_MAX_S)
    loop = asyncio.get_running_loop()

    def create_protocol(lost: asyncio.Future[None]) -> asyncio.Protocol:
        protocol = protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state)
        if isinstance(protocol, GatewayHttpProtocol):
            protocol.stopping = True  # made after the shutdown began: closes once answered or idle
            protocol.lost = lost
        else:
            lost.set_result(None)
        return protocol

    for connection in pending:
        _adopt(loop, connection, create_protocol, config.ssl, handshake_s, server.server_state.tasks)


# A classic BPF program of one instruction, `ret #0`: every packet to the socket is dropped.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux's value


def _refuse_new_handshakes(listener: socket.socket) -> None:
    """Drop the SYNs that reach `listener` from now on (Linux): a connection whose handshake
    completed after the queue was drained would be reset by the close, after its client sent a
    request; a dropped SYN is retried by the client and then refused, never sent. Elsewhere
    (no socket filters) the close keeps that small race."""
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    with contextlib.suppress(OSError):
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _accept_queued(queue: socket.socket, pending: list[socket.socket]) -> None:
    """Accept every connection waiting in `queue` into `pending`."""
    while True:
        try:
            pending.append(queue.accept()[0])
        except BlockingIOError:  # the queue is empty
            return
        except OSError as error:
            if isinstance(error, ConnectionAbortedError) or error.errno == errno.EPROTO:
                continue  # that client gave up; the next ones are still queued
            log.error("could not accept the connections queued at shutdown (%d accepted): %s",
                      len(pending), error)  # EMFILE, ENFILE...: those left are reset by the close
            return


def _adopt(loop: asyncio.AbstractEventLoop, connection: socket.socket,
           create_protocol: Callable[[asyncio.Future[None]], asyncio.Protocol], ssl: SSLContext | None,
           handshake_s: float, tasks: set[asyncio.Task[None]]) -> None:
    """Serve an accepted `connection` in a task that lasts as long as the connection, so that
    the shutdown waits for it (and cancels it at the end of its grace)."""
    handed = False

    async def adopt() -> None:
        nonlocal handed
        handed = True  # from here the transport owns the socket, and closes it on failure
        lost = loop.create_future()
        factory = functools.partial(create_protocol, lost)
        try:
            if ssl is None:
                transport, _ = await loop.connect_accepted_socket(factory, connection)
            else:
                transport, _ = await loop.connect_accepted_socket(factory, connection, ssl=ssl,
                                                                  ssl_handshake_timeout=handshake_s)
        except (OSError, ValueError):  # gone already, or a failed TLS handshake
            with contextlib.suppress(OSError):
                connection.close()
            return
        try:
            await lost
        finally:  # cancelled: the shutdown's grace is over
            transport.close()

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not handed:  # cancelled before it began
            connection.close()

    task = loop.create_task(adopt())
    tasks.add(task)
    task.add_done_callback(done)


class GatewayHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection (see the module's docstring)."""

    header_timeout_s: ClassVar[float] = _DEFAULTS.header_timeout_s
    body_timeout_s: ClassVar[float] = _DEFAULTS.body_timeout_s
    discard_bytes: ClassVar[int] = discard_limit(_DEFAULTS.max_body_bytes)
    max_body_bytes: ClassVar[int] = _DEFAULTS.max_body_bytes
    draining: ClassVar[bool] = False  # set on the server's own class by begin_draining
    flow: _FlowControl

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timer: TimerHandle | None = None
        self.body_clock: _BodyClock | None = None  # the deadline of a body that did not come with its headers
        self.whole_body: WholeBody | None = None  # where the body now arriving goes, when not chunk by chunk
        self.linger_timer: TimerHandle | None = None
        self.in_headers = False  # a request's headers are arriving
        self.in_body = False  # its body is arriving
        self.discarded = 0  # body bytes of an answered request thrown away
        self.body_seen = False  # some of the request's body has come
        self.close_when_read = False  # close once the answered request's body has been read
        self.stopping = False  # the server is shutting down
        self.lost: asyncio.Future[None] | None = None  # set once the connection is closed
        self.idle_since = 0.0  # when it was made, or last armed its keep-alive timer itself
        self.used = False  # a request has begun on it
        self.cycle_transport: _CycleTransport | None = None
        self.closing_cycle: RequestResponseCycle | None = None  # the answer this server made the last

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _FlowControl(transport)
        self.cycle_transport = _CycleTransport(transport, self)
        self.idle_since = self.loop.time()
        self.header_timer = self.loop.call_later(self.header_timeout_s, self.header_timeout)
        if self.stopping:  # adopted at shutdown, after the server told its connections
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.header_timer, self.linger_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.linger_timer = None
        self.closing_cycle = None
        self._stop_body_clock()
        self.whole_body = None
        if self.cycle_transport is not None:  # it and the cycles refer to this protocol: freed at once
            self.cycle_transport.protocol = None
            self.cycle_transport = None
        super().connection_lost(exc)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        held = self.cycle_transport
        if held is not None and held.holding:  # what the parser writes itself (a 400) goes after it
            held.flush()
        super().data_received(data)
        if self.in_headers and self.header_timer is None:  # armed only when headers come in parts
            self.header_timer = self.loop.call_later(self.header_timeout_s, self.header_timeout)
        elif self.in_body and self.body_clock is None and not self.transport.is_closing():
            cycle = self.cycle  # its headers came in this read, without all of its body
            if cycle.scope is self.scope and not cycle.response_complete:
                self.body_clock = self.flow.clock = _BodyClock(cycle, self.loop, self.body_timeout_s)
                cycle.receive = self.body_clock.receive  # type: ignore[method-assign]  # its task has not run yet
                cycle.scope[BODY_CLOCK_KEY] = self.body_clock  # type: ignore[literal-required]  # see allow_body_time
                self._read_whole(cycle)

    def _read_whole(self, cycle: RequestResponseCycle) -> None:
        """Offer the app to read a large binary body into one buffer (see the module's docstring):
        `scope[WHOLE_BODY_KEY]` starts it, called by gateway.body before its first `receive`; an
        app that never calls it (an upload, an answer before the body) reads it as uvicorn does."""
        size, length, binary = 0, False, False
        for name, value in self.headers:
            if name == b"content-length":
                if not value.isdigit():
                    return
                size, length = int(value), True
            elif name == b"content-type":
                binary = binary or value.split(b";", 1)[0].strip().lower() == BINARY_TYPE
            elif name == OIP_HEADER_LENGTH:  # its JSON header, then raw tensors: whatever its type says
                binary = True
        if length and binary and WHOLE_BODY_MIN_BYTES <= size <= self.max_body_bytes:
            # a weak reference: no cycle -> scope -> cycle loop, so the body's buffer goes with its
            # request, not at some later collection
            start = functools.partial(self._start_whole, weakref.ref(cycle), size)
            cycle.scope[WHOLE_BODY_KEY] = start  # type: ignore[literal-required]  # see gateway.body

    def _start_whole(self, cycle_ref: weakref.ref[RequestResponseCycle], size: int) -> WholeBody | None:
        """Read the rest of `cycle`'s body into one buffer, what has come moving there from the
        cycle's; None (the body then comes through `receive` as before) when it is no longer
        arriving (it came whole, or was answered) or no buffer could be had."""
        cycle = cycle_ref()
        if (cycle is None or self.cycle is not cycle or not self.in_body or not cycle.more_body
                or cycle.response_complete or self.whole_body is not None or self.transport.is_closing()):
            return None
        try:
            whole = WholeBody(size)
        except (OSError, ValueError):  # out of memory or address space: the chunked path
            log.warning("no buffer of %d bytes for a request body; reading it in parts", size)
            return None
        try:
            whole.add(cycle.body)
        except OSError as error:  # no memory for it: read through `receive` as it came
            log.warning("a request body could not be stored (%s); reading it in parts", error)
            return None
        cycle.body = cycle.body[:0]
        self.whole_body = whole
        # weakly: the connection keeps the scope until its next request, the body goes with its request
        cycle.scope[WHOLE_BODY_READ_KEY] = weakref.ref(whole)  # type: ignore[literal-required]
        if self.transport.get_extra_info("sslcontext") is None:
            self.transport.set_protocol(_BodyReader(self, whole))
        self.flow.resume_reading()  # paused at uvicorn's high-water mark by the first part
        return whole

    def whole_body_read(self) -> None:
        """`_BodyReader` has read the body's last byte: the connection is this protocol's again,
        with a parser that starts at the next request, and the request's message is complete."""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # as uvicorn sets it (httptools 0.6.3 and later)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport.set_protocol(self)
        self.on_message_complete()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.timeout_keep_alive_task is not None:  # armed by a drained body read with this request
            self._unset_keepalive_if_required()
        self.in_headers = True
        self.used = True
        self.discarded = 0

    def on_headers_complete(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.in_headers, self.in_body, self.body_seen = False, True, False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            assert self.cycle_transport is not None
            cycle.transport = self.cycle_transport  # its close() waits for the body to be read
            if self.stopping or self.draining:
                self._close_after(cycle)

    def on_body(self, body: bytes) -> None:
        self.body_seen = True
        if self.cycle.response_complete:  # answered already: discard, up to a bound
            self.discarded += len(body)
            if self.discarded > self.discard_bytes:
                self.close()
            return
        if self.whole_body is not None:
            try:
                self.whole_body.add(body)
            except OSError as error:  # out of memory: not the client's mistake, and not a 400
                log.warning("a request body could not be stored: %s; closing the connection", error)
                self.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_body = False
        self.whole_body = None
        if self.body_clock is not None:
            self._stop_body_clock()
        if self.cycle.response_complete:  # the body of an answered request has been read
            if self.linger_timer is not None:
                self.linger_timer.cancel()
                self.linger_timer = None
            if self.close_when_read:
                self.close()
            elif not self.pipeline and self.timeout_keep_alive_task is None:
                self.idle_since = self.loop.time()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _stop_body_clock(self) -> None:
        clock = self.body_clock
        if clock is not None:
            clock.stop()
            self.body_clock = self.flow.clock = None

    # -- answers

    def close_after_response(self) -> None:
        """The answer asks for the connection to close: at once, unless the client is still
        sending the request's body (then once it has been read, within the bounds)."""
        if self.in_body and self.cycle.response_complete and not self.transport.is_closing():
            self.close_when_read = True
        else:
            self.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.in_body and self.cycle.response_complete:  # answered before the body came in full
            self._unset_keepalive_if_required()  # read the rest (uvicorn resumed reading), bounded
            clock = self.body_clock
            delay = clock.time_left() if clock is not None and clock.started else self.body_timeout_s
            self._stop_body_clock()
            if delay <= 0 or (self.expect_100_continue and not self.body_seen):  # none will come
                self.close()
            else:
                self.linger_timer = self.loop.call_later(delay, self.close)
        elif self.stopping and not self.pipeline:
            self.close()

    def header_timeout(self) -> None:
        """The request's headers did not come in time: 408 if it had begun, else a close."""
        self.header_timer = None
        if self.transport.is_closing():
            return
        answering = self.pipeline[0][0] if self.pipeline else self.cycle  # the last request read in full
        if answering is not None and not answering.response_complete:
            # Requests before it are still being answered: a 408 now would pass for their
            # answer. They are answered; then the connection closes, this request unread.
            answering.keep_alive = False
            log.info("request headers not received within %g s from %s behind a request in flight: "
                     "the connection closes after its answer", self.header_timeout_s,
                     self.client[0] if self.client else "-")
            return
        if self.in_headers:  # never reaches the app, so logged here rather than counted
            request_id = new_request_id()
            message = f"request headers not received within {self.header_timeout_s:g} s"
            log.info("request %s: %s from %s -> 408", request_id.decode(), message,
                     self.client[0] if self.client else "-")
            body = NATIVE.body(RequestTimeout.code, message)  # no route known: the native shape
            defaults = self.server_state.default_headers
            self.transport.write(b"".join([
                STATUS_LINE[408], *(name + b": " + value + b"\r\n" for name, value in defaults),
                b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                b"\r\nx-request-id: ", request_id, b"\r\nconnection: close\r\n\r\n", body]))
        self.close()

    # -- shutdown

    def _close_after(self, cycle: RequestResponseCycle) -> None:
        """Make `cycle`'s answer the connection's last (it says `Connection: close`). The answer
        the server made the last before, if it has not begun, keeps the connection again: `cycle`
        was pipelined behind it and is answered too, rather than read and dropped. A client that
        asked to close itself is left as it asked."""
        if not cycle.keep_alive:
            return
        before = self.closing_cycle
        if before is not None and before is not cycle and not before.response_started:
            before.keep_alive = True
        cycle.keep_alive = False
        self.closing_cycle = cycle

    def drain(self) -> None:
        """The shutdown grace begins: the request read last, if its answer has not begun, is
        answered with `Connection: close` (a begun one promised a persistent connection)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._close_after(cycle)

    def shutdown(self) -> None:
        """The server stops: answer what is in flight with `Connection: close`; close an idle
        connection once it has been idle for IDLE_CLOSE_S (a request arriving before is served)."""
        self.stopping = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                cycle.keep_alive = False  # the server stops: closed once its answer is out
            else:
                self._close_after(cycle)
        elif self.in_body:  # an answered request's body is arriving: close once it is read
            self.close_when_read = True
        elif self.in_headers:  # a request is arriving: served, answered with Connection: close
            pass
        else:
            keep_alive = self.timeout_keep_alive_task  # armed when the last answer was sent
            idle_since = self.idle_since if keep_alive is None else keep_alive.when() - self.timeout_keep_alive
            delay = idle_since + (IDLE_CLOSE_S if self.used else FRESH_CLOSE_S) - self.loop.time()
            if delay <= 0:
                self.close()
            elif self.linger_timer is None:
                self.linger_timer = self.loop.call_later(delay, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self.linger_timer = None
        if not (self.in_headers or self.in_body) and (self.cycle is None or self.cycle.response_complete):
            self.close()


class _BodyReader(asyncio.BufferedProtocol):
    """In a connection's place while the rest of a large body is read: the socket reads straight
    into the body's buffer, as much as is missing and never more (the next request's bytes stay
    in the socket for the parser); the connection's own protocol gets everything else."""

    def __init__(self, protocol: GatewayHttpProtocol, whole: WholeBody) -> None:
        self.protocol = protocol
        self.whole: WholeBody | None = whole  # None once read: the transport may keep this protocol a while

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self.whole is not None
        return self.whole.room()

    def buffer_updated(self, nbytes: int) -> None:
        whole = self.whole
        assert whole is not None
        self.protocol.body_seen = True
        try:
            whole.filled_in(nbytes)
        except OSError as error:  # the shared memory could not grow (out of memory)
            log.warning("a request body could not be stored: %s; closing the connection", error)
            self.whole = None
            self.protocol.close()
            return
        if whole.filled == whole.size:
            self.whole = None
            self.protocol.whole_body_read()

    def eof_received(self) -> None:
        self.protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


class _BodyClock:
    """The deadline of one request's body that did not come with its headers: `body_timeout_s`
    of reading time, counted from the app's first `receive` (not while a pipelined request
    waits for its turn) and stopped while the server is not reading (flow control). The app's
    `receive` raises RequestTimeout once it is spent. Refers to its cycle weakly: the cycle
    holds it as its `receive`."""

    __slots__ = ("cycle", "deadline", "event", "expired", "left", "loop", "started", "timeout_s", "timer")

    def __init__(self, cycle: RequestResponseCycle, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.cycle = weakref.ref(cycle)
        self.event = cycle.message_event
        self.loop = loop
        self.timeout_s = timeout_s
        self.left = timeout_s  # of reading time, while the timer is not running
        self.deadline = 0.0  # while it is
        self.timer: TimerHandle | None = None
        self.started = self.expired = False

    async def receive(self) -> ASGIReceiveEvent:
        if not self.started:
            self.started = True
            self.resume()
        cycle = self.cycle()
        assert cycle is not None  # its task holds it
        message = await RequestResponseCycle.receive(cycle)  # resumes reading: see resume()
        if self.expired and message["type"] == "http.request":
            raise RequestTimeout(f"request body not received within {self.timeout_s:g} s")
        return message

    def resume(self) -> None:
        if self.started and self.timer is None and not self.expired:
            self.deadline = self.loop.time() + self.left
            self.timer = self.loop.call_at(self.deadline, self.expire)

    def pause(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.left = max(self.deadline - self.loop.time(), 0.0)

    def stop(self) -> None:
        self.pause()
        self.started = True  # not to be started by a later receive

    def time_left(self) -> float:
        return max(self.deadline - self.loop.time(), 0.0) if self.timer is not None else self.left

    def expire(self) -> None:
        self.timer = None
        self.left = 0.0
        self.expired = True
        self.event.set()  # wakes a pending receive


class _FlowControl(FlowControl):
    """uvicorn's flow control, telling the body clock when reading stops and starts again."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self.clock: _BodyClock | None = None

    def pause_reading(self) -> None:  # uvicorn's, inlined (twice per request)
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()
        if self.clock is not None:
            self.clock.pause()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()
        if self.clock is not None:
            self.clock.resume()


# An answer's head and a body up to this size are joined into one buffer; a longer body is
# written beside its head (one writev, no copy).
JOIN_LIMIT = 64 * 1024


class _CycleTransport(asyncio.Transport):
    """The connection's transport as a request-response cycle sees it: an answer's head (status
    line and headers, written by uvicorn on `http.response.start`) is held until its first body
    write, so that both leave in one write: one system call and one wake-up of the client per
    answer instead of two. A head whose body does not follow in the same turn of the event loop
    (a streamed answer still computing) is written at the end of that turn. The close that
    follows an answer asks the protocol first."""

    def __init__(self, transport: asyncio.Transport, protocol: GatewayHttpProtocol) -> None:
        super().__init__()
        self.transport = transport
        self.protocol: GatewayHttpProtocol | None = protocol
        self.loop = protocol.loop
        self.is_closing = transport.is_closing  # type: ignore[method-assign]
        self._head: bytes | None = None  # an answer's head, held for its body
        self._flush: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            assert self._flush is not None
            self._flush.cancel()
            if len(data) <= JOIN_LIMIT:
                self.transport.write(head + data)
            else:  # not copied into one: the transport writes both at once
                self.transport.writelines((head, data))
        elif data[:9] == b"HTTP/1.1 " and data[9:13] != b"100 " and data[-4:] == b"\r\n\r\n":
            self._head = bytes(data)
            self._flush = self.loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    @property
    def holding(self) -> bool:
        """Whether an answer's head waits for its body."""
        return self._head is not None

    def flush(self) -> None:
        """Write a held head now."""
        head = self._head
        if head is not None:
            self._head = None
            if self._flush is not None:
                self._flush.cancel()
            if not self.transport.is_closing():
                self.transport.write(head)

    def close(self) -> None:
        self.flush()
        if self.protocol is None:  # the connection is gone
            self.transport.close()
        else:
            self.protocol.close_after_response()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)
