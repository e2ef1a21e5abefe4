"""One process's HTTP server: a bound socket, uvicorn's `Server` with the signals left to the
gateway, serving until SIGTERM, then the drain. Used by `gateway serve` and by each of its workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from gateway.http_protocol import adopt_pending_connections, begin_draining, http_protocol
from gateway.serving.config_watch import ReloadTrigger, watch_config
from gateway.serving.process import hold_sighup
from gateway.settings import Settings

log = logging.getLogger("gateway")


class UvicornServer(uvicorn.Server):
    """uvicorn's server with signals left to the gateway, which also stops the runtimes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await adopt_pending_connections(self)  # before the listeners close, which would reset them
        await super().shutdown(sockets)


def bound_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A bound TCP socket; with SO_REUSEPORT (`reuse_port`) each worker binds its own on the
    same port and the kernel spreads new connections over them. Not inheritable (Python's
    default): the runtimes started after it must not hold the port open once the gateway closes it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_app(settings: Settings, app: Starlette, applications: list[str], stopping: asyncio.Event,
                    stop_wait: asyncio.Task[bool], sockets: list[socket.socket] | None = None) -> int:
    """Serve `app` until `stopping`, then drain; SIGHUP (and --watch) reload it."""
    loop = asyncio.get_running_loop()
    server = UvicornServer(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False, lifespan="on", server_header=False, log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile, http=http_protocol(settings),
    ))
    serving = asyncio.create_task(_serve_http(server, sockets))
    scheme = "https" if settings.tls_certfile else "http"
    log.info("serving %s://%s:%s (applications: %s)", scheme, settings.host, settings.port,
             ", ".join(applications) or "none")
    reloads = ReloadTrigger(lambda: getattr(app.state, "reload_via", None) or getattr(app.state, "reloader", None))
    loop.add_signal_handler(signal.SIGHUP, reloads.trigger)
    watching = None
    if settings.watch_config:
        watching = asyncio.create_task(watch_config(settings.config_dir, reloads))
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        reloads.abandon()  # a reload waiting on a runtime that hangs must not hold up the drain
        if stopping.is_set() and not serving.done():
            # Load balancers see /health/ready turn 503 and stop sending; requests that still
            # arrive during the grace period are served, each answered with Connection: close so
            # kept-alive connections move. Then uvicorn stops accepting and gives requests in
            # flight up to drain_timeout_s.
            app.state.draining = True
            begin_draining(server)
            grpc_door = getattr(app.state, "grpc_door", None)
            if grpc_door is not None:
                grpc_door.drain()  # its health NOT_SERVING now, not at its next readiness round
            log.info("draining: ready is 503, new connections accepted for %gs more",
                     settings.shutdown_grace_s)
            await asyncio.wait({serving}, timeout=settings.shutdown_grace_s)
            log.info("stopping: finishing requests in flight (up to %gs)", settings.drain_timeout_s)
            if grpc_door is not None:
                grpc_door.begin_stop(settings.drain_timeout_s)
            server.should_exit = True
        if watching is not None:
            watching.cancel()
        return await serving
    finally:
        hold_sighup(loop)


async def _serve_http(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> int:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exit_:  # uvicorn exits when it cannot bind
        return int(exit_.code or 1)
    return 0 if server.started else 1
