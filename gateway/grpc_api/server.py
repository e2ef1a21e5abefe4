"""The gRPC front door's grpc.aio server, run in the HTTP app's process and event loop.

The app's lifespan starts it once the data plane is built (so every `--workers` process runs
one, each binding the shared port with SO_REUSEPORT; with one worker the port is not shared
and a busy one fails the start) and stops it last; `serve_app` turns its health NOT_SERVING when
the drain starts (`drain`) and begins its stop together with HTTP's (`begin_stop`): the health
Watch streams end, new calls are refused UNAVAILABLE, calls in flight get `drain_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from gateway.grpc_api import health, hydrosphere, tfserving
from gateway.grpc_api.calls import DoorState
from gateway.serving.server import bound_socket
from gateway.settings import Settings

log = logging.getLogger("gateway.grpc")
# Each service module's handlers for a door (new services: one more entry).
SERVICES: Sequence[Callable[[DoorState], Sequence[grpc.GenericRpcHandler[bytes, bytes]]]] = (tfserving.services,
                                                                               hydrosphere.services)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The channel arguments of the server: message limits from `max_body_bytes`, the port
    shared only between workers, connections aged out when configured."""
    options = [("grpc.max_receive_message_length", settings.max_body_bytes),
               ("grpc.max_send_message_length", -1),
               ("grpc.so_reuseport", 1 if settings.workers > 1 else 0)]
    age = settings.grpc_max_connection_age_s
    if age is not None:
        options += [("grpc.max_connection_age_ms", int(age * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(settings.drain_timeout_s * 1000))]
    return options


class GrpcFrontDoor:
    """The grpc.aio server of one gateway process."""

    def __init__(self, door: DoorState) -> None:
        self.door = door
        settings = door.settings
        self.server = grpc.aio.server(options=server_options(settings))
        self.health = health.ReadinessHealth(door)
        self.server.add_generic_rpc_handlers([handler for make in SERVICES for handler in make(door)])
        health.add_to_server(self.health, self.server)
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind `grpc_port` (RuntimeError when it cannot) and serve; the port bound."""
        settings = self.door.settings
        assert settings.grpc_port is not None
        address = _address(settings.host, settings.grpc_port)
        try:
            if settings.tls_certfile is not None and settings.tls_keyfile is not None:
                credentials = grpc.ssl_server_credentials(
                    [(settings.tls_keyfile.read_bytes(), settings.tls_certfile.read_bytes())])
                port = self.server.add_secure_port(address, credentials)
            else:
                port = self.server.add_insecure_port(address)
        except OSError as error:  # a certificate file that cannot be read
            raise RuntimeError(f"cannot listen for gRPC on {address}: {error.strerror or error}: "
                               f"{error.filename}") from None
        except RuntimeError as error:
            raise RuntimeError(f"cannot listen for gRPC on {address}: {error}") from None
        if port == 0:
            raise RuntimeError(f"cannot listen for gRPC on {address} (in use?)")
        self.port = port
        await self.server.start()
        await self.health.start()
        scheme = "TLS" if settings.tls_certfile else "plaintext"
        log.info("serving gRPC on %s:%s (%s)", settings.host, port, scheme)
        return port

    def drain(self) -> None:
        """The drain began: health NOT_SERVING at once (calls are still taken until `begin_stop`)."""
        self.health.drain()

    def begin_stop(self, grace_s: float) -> None:
        """End the health Watch streams, stop taking calls and give those in flight `grace_s`
        (once; later calls are no-ops)."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(grace_s))

    async def _stop(self, grace_s: float) -> None:
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
