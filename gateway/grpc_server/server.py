"""The gRPC server: a listening socket in the running event loop, its connections, its
handlers by method path, and its stop (GOAWAY to every connection, the calls in flight given
their grace, then cancelled)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.connection import Connection


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The server's limits and HTTP/2 settings."""

    max_receive_message_length: int = 4 * 1024 * 1024
    # Request bytes a connection holds: its budget, max(4 connection windows, 2 x (message limit + 16 KiB)),
    # then one more connection window; past it the newest request is refused (REFUSED_STREAM, retried).
    max_concurrent_streams: int = 1024
    max_header_list_size: int = 16 * 1024  # grpc's own hard limit on metadata
    header_table_size: int = 4096
    stream_window: int = 4 * 1024 * 1024
    connection_window: int = 16 * 1024 * 1024
    max_frame_size: int = 64 * 1024  # as fast as 1 MiB with grpcio (10-50 MB messages); one frame holds the loop less
    handshake_timeout_s: float = 10.0  # the client's preface must arrive within this
    request_timeout_s: float | None = 30.0  # an upload stalled this long is ended (unless grpc-timeout is longer)
    max_connection_age_s: float | None = None  # then GOAWAY, so long-lived clients move
    max_connection_age_grace_s: float = 10.0  # and the calls still in flight get this long
    max_connection_idle_s: float | None = None  # GOAWAY after this long without a stream (None: never)


# Told of a call the server ended before any handler ran (an unknown method, a message over the
# limit, a deadline passed while the request arrived...): the call, its status, the bytes received.
RefusedCall = Callable[[ServerCall, grpc.StatusCode, str, int], None]


class GrpcServer:
    """Serves `handlers` (method path -> handler) on one listening socket; `refused` is told of
    the calls it ends itself."""

    def __init__(self, handlers: Mapping[str, RpcHandler], options: ServerOptions,
                 refused: RefusedCall | None = None) -> None:
        self.handlers = dict(handlers)
        self.options = options
        self.refused = refused
        self.connections: set[Connection] = set()
        self.lingering: set[asyncio.Transport] = set()  # closed connections' sockets not yet gone
        self._listener: asyncio.Server | None = None
        self._idle = asyncio.Event()

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> int:
        """Listen on the bound `sock`; the port it has."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(lambda: Connection(self), sock=sock, ssl=tls, backlog=1024)
        port: int = sock.getsockname()[1]
        return port

    def begin_stop(self) -> None:
        """Stop taking connections and calls: GOAWAY to every connection."""
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.shutdown()

    async def stop(self, grace_s: float) -> None:
        """`begin_stop`, wait up to `grace_s` for the calls in flight, then end those left with
        UNAVAILABLE (their handlers cancelled) and close every connection."""
        self.begin_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(connection.busy for connection in self.connections):
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                break
        tasks = [task for connection in list(self.connections) for task in connection.cancel_calls()]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)  # a handler that ignores its cancellation is not waited for
        for connection in list(self.connections):
            connection.abort()
        while self.lingering and loop.time() < deadline:  # closed connections' answers still draining to slow readers
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - loop.time())
            except TimeoutError:
                break
        for transport in list(self.lingering):
            transport.abort()  # a client that does not read would hold its socket and buffer past the stop
        self.lingering.clear()
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()

    def stream_closed(self) -> None:
        self._idle.set()

    def connection_closed(self) -> None:
        self._idle.set()


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context that speaks HTTP/2 (ALPN h2), TLS 1.2 at least as RFC 9113 asks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["h2"])
    return context
