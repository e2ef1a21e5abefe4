"""The in-loop client against a real grpc.aio server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.grpc_client import InloopChannel
from gateway.grpc_server.status import RpcStatus

OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
           ("grpc.max_concurrent_streams", 10)]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "nö such thing %")
    if request == b"sleep":
        await asyncio.sleep(2)
    return request[::-1]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = grpc.aio.server(options=OPTIONS)
    handler = grpc.method_handlers_generic_handler("t.S", {"E": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield bound
    await server.stop(0)


async def test_calls_errors_deadlines_and_large_messages(port: int) -> None:
    channel = InloopChannel(f"127.0.0.1:{port}")
    assert bytes(await channel.unary("/t.S/E", b"hello", 5)) == b"olleh"
    with pytest.raises(RpcStatus) as error:
        await channel.unary("/t.S/E", b"fail", 5)
    assert (error.value.code, error.value.message) == (grpc.StatusCode.NOT_FOUND, "nö such thing %")
    with pytest.raises(RpcStatus) as error:
        await channel.unary("/t.S/E", b"sleep", 0.2)
    assert error.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    big = b"x" * (64 << 20)
    assert len(await channel.unary("/t.S/E", big, 30)) == len(big)
    answers = await asyncio.gather(*(channel.unary("/t.S/E", b"%d" % i, 5) for i in range(100)))
    assert [bytes(a) for a in answers] == [(b"%d" % i)[::-1] for i in range(100)]
    await channel.close(1)
