"""The tests' ports cannot be taken behind their back: a reserved port refuses connections and
other binds, yet the test's own gRPC server binds it; an in-process server listens on the socket
it was handed."""

from __future__ import annotations

import errno
import socket

import grpc
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import free_port, loopback_socket, serve_app


async def test_a_reserved_port_refuses_connections_and_other_binds_but_not_a_grpc_server() -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        assert _bind_error(other, port) == errno.EADDRINUSE
    server = grpc.aio.server()
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # the gRPC server's listener takes it: the reservation never listens
    finally:
        await server.stop(0)


def test_a_loopback_socket_holds_its_port_until_the_server_listens() -> None:
    with loopback_socket() as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        with socket.socket() as other:
            assert _bind_error(other, port) == errno.EADDRINUSE


async def test_serve_app_serves_on_the_socket_it_picked() -> None:
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("here"))])
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/")).text == "here"


def _bind_error(sock: socket.socket, port: int) -> int | None:
    """The errno of binding `sock` to 127.0.0.1:`port` (None when it binds)."""
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        return error.errno
    return None


def test_a_loopback_socket_gets_no_nagle_delay() -> None:
    # asyncio sets TCP_NODELAY on the connections a server accepts only for IPPROTO_TCP sockets.
    with loopback_socket() as sock:
        assert (sock.family, sock.type, sock.proto) == (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
