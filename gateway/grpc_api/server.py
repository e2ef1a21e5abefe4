"""The gRPC front door: the gateway's own gRPC server, run in the HTTP app's process and event loop.

The app's lifespan starts it once the data plane is built (so every `--workers` process runs
one, each binding the shared port with SO_REUSEPORT; with one worker the port is not shared
and a busy one fails the start) and stops it last; `serve_app` turns its health NOT_SERVING when
the drain starts (`drain`) and begins its stop together with HTTP's (`begin_stop`): the health
Watch streams end, every connection gets GOAWAY (no new calls), calls in flight get `drain_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence

from gateway.grpc_api import health, hydrosphere, oip, tfserving
from gateway.grpc_api.calls import DoorState, refused_calls
from gateway.grpc_server.call import RpcHandler
from gateway.grpc_server.server import GrpcServer, ServerOptions, tls_context
from gateway.serving.server import bound_socket
from gateway.settings import Settings

log = logging.getLogger("gateway.grpc")
# Each service module's handlers for a door (new services: one more entry).
SERVICES: Sequence[Callable[[DoorState], Mapping[str, RpcHandler]]] = (
    tfserving.services, hydrosphere.services, oip.services)


def server_options(settings: Settings) -> ServerOptions:
    """The server's limits: messages up to `max_body_bytes`, a client's preface within
    `header_timeout_s`, a call's upload ended when it makes no progress for `body_timeout_s`,
    connections aged out when configured (their calls then get `drain_timeout_s`)."""
    return ServerOptions(max_receive_message_length=settings.max_body_bytes,
                         handshake_timeout_s=settings.header_timeout_s,
                         request_timeout_s=settings.body_timeout_s,
                         max_connection_age_s=settings.grpc_max_connection_age_s,
                         max_connection_age_grace_s=settings.drain_timeout_s)


class GrpcFrontDoor:
    """The gRPC server of one gateway process."""

    def __init__(self, door: DoorState) -> None:
        self.door = door
        self.health = health.ReadinessHealth(door)
        handlers = {path: handler for make in SERVICES for path, handler in make(door).items()}
        handlers.update(self.health.servicer.handlers())
        self.server = GrpcServer(handlers, server_options(door.settings), refused_calls(door, handlers))
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind `grpc_port` (RuntimeError when it cannot) and serve; the port bound."""
        settings = self.door.settings
        assert settings.grpc_port is not None
        address = _address(settings.host, settings.grpc_port)
        try:
            tls = None
            if settings.tls_certfile is not None and settings.tls_keyfile is not None:
                for path in (settings.tls_certfile, settings.tls_keyfile):
                    path.read_bytes()  # ssl's own error would not name the file
                tls = tls_context(str(settings.tls_certfile), str(settings.tls_keyfile))
            sock = bound_socket(settings.host, settings.grpc_port, reuse_port=settings.workers > 1)
        except ssl.SSLError as error:
            raise RuntimeError(f"cannot listen for gRPC on {address}: the certificate or key does not load: "
                               f"{error.reason or error}") from None
        except OSError as error:  # a certificate file that cannot be read, a port in use
            where = f": {error.filename}" if error.filename else ""
            raise RuntimeError(f"cannot listen for gRPC on {address}: {error.strerror or error}{where}") from None
        self.port = await self.server.start(sock, tls)
        await self.health.start()
        scheme = "TLS" if tls is not None else "plaintext"
        log.info("serving gRPC on %s:%s (%s)", settings.host, self.port, scheme)
        return self.port

    def drain(self) -> None:
        """The drain began: health NOT_SERVING at once (calls are still taken until `begin_stop`)."""
        self.health.drain()

    def begin_stop(self, grace_s: float) -> None:
        """End the health Watch streams, stop taking calls and give those in flight `grace_s`
        (once; later calls are no-ops)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace_s))

    async def _stop(self, grace_s: float) -> None:
        self.server.begin_stop()  # GOAWAY at once; the Watch streams end next
        await self.health.close()  # a Watch left open would hold the stop for all of grace_s
        await self.server.stop(grace_s)

    async def stop(self, grace_s: float) -> None:
        """`begin_stop`, then wait until the server stopped."""
        self.begin_stop(grace_s)
        assert self._stopping is not None
        await self._stopping


def port_problem(settings: Settings) -> str | None:
    """Why `grpc_port` cannot be listened on, found before anything starts (grpc would only
    fail in the app's lifespan, after the runtimes started); None when it can or is 0."""
    port = settings.grpc_port
    if port is None or port == 0:
        return None
    address = _address(settings.host, port)
    if port == settings.port:
        return f"cannot listen for gRPC on {address}: it is the HTTP port"
    try:
        probe = bound_socket(settings.host, port, reuse_port=settings.workers > 1)
    except OSError as error:
        return f"cannot listen for gRPC on {address}: {error.strerror or error}"
    probe.close()
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
