"""The gateway's end of the local wire, against a real runtime (or a real socket that misbehaves)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.backends.local import MAX_IDLE, LocalCallError, LocalChannel, LocalConnection
from gateway.backends.transports import LocalWireTransport
from gateway.errors import BackendError
from gateway.manifests import load_config
from gateway.settings import Settings
from protos import shared_memory
from protos.local_wire import (
    ALIGN,
    ATTACH_MIN,
    ENTRY,
    HEADER,
    SHARED,
    SHARED_BUSY,
    Attachments,
    WireError,
    encode_table,
)
from protos.services import TF_PREDICT
from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from protos.shared_memory import SharedRegion, shared_buffer
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from runtime.server import ModelServer
from tensorcodecs import lookup_dtype
from tensorcodecs.tensor_proto import attached_array, decode_tensor, encode_tensor, tensor_header
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import eventually

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"


def request(milliseconds: int, name: str = "slow") -> PredictRequest:
    message = PredictRequest()
    message.model_spec.name = name
    message.inputs["x"].CopyFrom(encode_tensor(np.array([milliseconds], np.int32), lookup_dtype("int32")))
    return message


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[ModelServer]:
    """A real runtime serving the slow model (sleeps x[0] ms) on a Unix socket too."""
    folder = write_model(tmp_path / "cfg", "slow", "slow", SLOW)
    server = ModelServer.for_folder(folder, chdir=False, local_socket=str(tmp_path / "slow.sock"))
    server.start()
    yield server
    server.stop(0).wait()


@pytest.fixture
def slow_runtime(slow_server: ModelServer) -> str:
    """The slow runtime's Unix socket path."""
    assert slow_server._local is not None
    return slow_server._local.path


async def until_running(server: ModelServer, calls: int = 1) -> None:
    """Return once the runtime has read `calls` requests it has not answered yet."""
    async def running() -> bool:
        return server._local is not None and server._local._busy >= calls
    await eventually(running, what=f"{calls} call(s) running in the runtime")


async def test_calls_in_turn_share_one_connection_and_calls_at_once_open_more(slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    for milliseconds in (1, 2, 3):
        answer = await channel.call(TF_PREDICT, request(milliseconds), 5)
        assert decode_tensor(answer.outputs["y"]).tolist() == [milliseconds]
    assert channel.idle_connections == 1
    started = time.monotonic()
    answers = await asyncio.gather(*(channel.call(TF_PREDICT, request(200), 5) for _ in range(4)))
    assert time.monotonic() - started < 0.7  # at the same time, not 4 x 200 ms in turn
    assert [decode_tensor(a.outputs["y"]).tolist() for a in answers] == [[200]] * 4
    assert channel.idle_connections == 4
    channel.close()
    assert channel.idle_connections == 0


async def test_a_status_from_the_runtime_keeps_the_connection(slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    with pytest.raises(LocalCallError) as caught:
        await channel.call(TF_PREDICT, request(1, name="other"), 5)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert "'other' is not served here" in caught.value.message
    assert channel.idle_connections == 1
    assert caught.value.to_gateway_error("t").status == 404
    channel.close()


async def test_a_deadline_ends_the_wait_and_drops_the_connection(slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    started = time.monotonic()
    with pytest.raises(LocalCallError) as caught:
        await channel.call(TF_PREDICT, request(500), 0.1)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.4
    assert channel.idle_connections == 0  # its late answer must not reach the next caller
    answer = await channel.call(TF_PREDICT, request(1), 5)
    assert decode_tensor(answer.outputs["y"]).tolist() == [1]
    error = caught.value.to_gateway_error("t")
    assert (error.status, error.code) == (504, "deadline_exceeded")
    channel.close()


async def test_a_cancelled_caller_drops_its_connection(slow_server: ModelServer, slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    task = asyncio.create_task(channel.call(TF_PREDICT, request(300), 5))
    await until_running(slow_server)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert channel.idle_connections == 0
    assert decode_tensor((await channel.call(TF_PREDICT, request(1), 5)).outputs["y"]).tolist() == [1]
    channel.close()


async def test_no_runtime_is_unavailable(tmp_path: Path) -> None:
    channel = LocalChannel(str(tmp_path / "nobody.sock"), "t")
    with pytest.raises(LocalCallError) as caught:
        await channel.call(TF_PREDICT, request(1), 5)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "cannot connect" in caught.value.message
    assert caught.value.to_gateway_error("t").status == 503


async def test_a_runtime_that_goes_away_mid_call_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "dies.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def accept_read_and_die() -> None:
        connection, _ = listener.accept()
        connection.recv(1 << 16)
        connection.close()  # as a killed runtime would

    thread = threading.Thread(target=accept_read_and_die)
    thread.start()
    channel = LocalChannel(path, "t")
    try:
        with pytest.raises(LocalCallError) as caught:
            await channel.call(TF_PREDICT, request(1), 5)
    finally:
        thread.join()
        listener.close()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "closed the connection mid-call" in caught.value.message
    assert channel.idle_connections == 0


async def test_an_idle_connection_the_runtime_closed_is_not_reused(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "cfg", "slow", "slow", SLOW)
    path = str(tmp_path / "rt.sock")
    first = ModelServer.for_folder(folder, chdir=False, local_socket=path)
    first.start()
    channel = LocalChannel(path, "t")
    await channel.call(TF_PREDICT, request(1), 5)
    first.stop(0).wait()  # a restart: the same socket path, a new process behind it
    second = ModelServer.for_folder(folder, chdir=False, local_socket=path)
    second.start()
    try:
        # Called at once, before the loop has seen the kept connection end: the request goes
        # out on it, fails without an answer, and is sent again on a fresh connection.
        assert decode_tensor((await channel.call(TF_PREDICT, request(2), 5)).outputs["y"]).tolist() == [2]

        async def one_kept() -> bool:  # the broken one gone once the loop has seen it end
            return channel.idle_connections == 1

        await eventually(one_kept, what="one idle connection")
    finally:
        channel.close()
        second.stop(0).wait()


async def test_closing_lets_a_running_call_finish_and_keeps_nothing(slow_server: ModelServer,
                                                                    slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    task = asyncio.create_task(channel.call(TF_PREDICT, request(200), 5))
    await until_running(slow_server)
    channel.close()
    assert decode_tensor((await task).outputs["y"]).tolist() == [200]
    assert channel.idle_connections == 0
    with pytest.raises(LocalCallError) as caught:
        await channel.call(TF_PREDICT, request(1), 5)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_the_gateway_answers_over_the_local_wire_and_over_grpc_alike(tmp_path: Path) -> None:
    """The same requests through a runtime reached over its socket and over gRPC only."""
    root = tmp_path / "config"
    write_model(root, "m", "m", "def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n"
                "    return x + 1\n")
    write_app(root, "m", "m")
    bodies = [{"x": [1, 2]}, {"x": [-1]}, {"x": ["a"]}, {"y": [1]}]
    answers = []
    for local_wire in (True, False):
        with runtimes_for(load_config(root), local_wire=local_wire) as config:
            assert all((model.backend.local_socket is not None) is local_wire
                       for model in config.models.values() if model.backend is not None)
            async with serve_app(create_app(Settings(config_dir=root), config)) as url, httpx.AsyncClient() as client:
                responses = [await client.post(f"{url}/gateway/applications/m", json=body) for body in bodies]
                answers.append([(r.status_code, r.json()) for r in responses])
    assert answers[0] == answers[1]
    assert [status for status, _ in answers[0]] == [200, 500, 400, 400]


async def test_large_tensors_take_the_attachment_and_answer_as_over_grpc(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "double", "double", "def predict(x):\n    return x * 2\n",
                "x: {shape: [-1], type: float32}", "y: {shape: [-1], type: float32}")
    write_app(root, "double", "double")
    values = [np.arange(300_000, dtype=np.float32) + first for first in range(6)]
    binary = {"content-type": "application/octet-stream"}
    answers = []
    for local_wire in (True, False):
        with runtimes_for(load_config(root), local_wire=local_wire) as config:
            app = create_app(Settings(config_dir=root), config)
            async with serve_app(app) as url, httpx.AsyncClient() as client:
                app_url = f"{url}/gateway/applications/double"
                # at once: they share calls (PredictMany), each with its own attachment
                posts = [client.post(app_url, content=v.tobytes(), headers=binary, timeout=30) for v in values]
                responses = await asyncio.gather(*posts)
                as_json = await client.post(app_url, json={"x": values[0][:20_000].tolist()}, timeout=30)
                answers.append(([r.content for r in responses], as_json.json()))
                backend = app.state.dataplane.registry.models[("double", 1)].backend
                wire = backend.inner.transport.inner  # under the scheduling wrapper and the circuit breaker
                assert (isinstance(wire, LocalWireTransport) and wire.local.idle_connections > 0) is local_wire
    assert answers[0] == answers[1]
    for sent, got in zip(values, answers[0][0], strict=True):
        np.testing.assert_array_equal(np.frombuffer(got, "<f4"), sent * 2)
    assert answers[0][1] == {"y": (values[0][:20_000] * 2).tolist()}


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
async def test_a_runtime_that_cannot_map_shared_memory_gets_the_tensors_inline_from_then_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_model(tmp_path / "cfg", "double", "double", "def predict(x):\n    return x * 2\n",
                         "x: {shape: [-1], type: float32}", "y: {shape: [-1], type: float32}")
    path = str(tmp_path / "double.sock")
    server = ModelServer.for_folder(folder, chdir=False, local_socket=path)
    server.start()
    channel = LocalChannel(path, "t")
    values = np.arange(300_000, dtype="<f4")

    async def double(region: SharedRegion) -> np.ndarray:
        message = PredictRequest()
        message.model_spec.name = "double"
        attachments = Attachments()
        array = np.frombuffer(memoryview(region), "<f4")
        attachments.sent.append((0, "x", tensor_header(message.inputs["x"], array, lookup_dtype("float32"))))
        answer = await channel.call(TF_PREDICT, message, 5, attachments)
        return attached_array(answer.outputs["y"], attachments.received[0]["y"])

    try:
        region = SharedRegion.create(values.nbytes)
        region.write_at(0, values.tobytes())
        np.testing.assert_array_equal(await double(region), values * 2)
        assert channel.shares_memory
        region.inode += 1  # what a runtime that sees other processes under /proc would find
        np.testing.assert_array_equal(await double(region), values * 2)  # sent again, inline
        assert not channel.shares_memory
        assert "cannot map the gateway's shared memory" in caplog.text
        np.testing.assert_array_equal(await double(region), values * 2)
    finally:
        channel.close()
        server.stop(0).wait()


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
async def test_a_call_given_up_never_lets_its_shared_body_be_reused(slow_runtime: str) -> None:
    """The runtime may still be reading it: the next body must not be written there."""
    body = shared_buffer(4 * ATTACH_MIN)
    region = body.obj
    assert isinstance(region, SharedRegion)
    region.write_at(0, np.full(ATTACH_MIN, 300, "<i4").tobytes())  # the slow model sleeps x[0] ms
    message = PredictRequest()
    message.model_spec.name = "slow"
    attachments = Attachments()
    array = np.frombuffer(body, "<i4")
    attachments.sent.append((0, "x", tensor_header(message.inputs["x"], array, lookup_dtype("int32"))))
    channel = LocalChannel(slow_runtime, "t")
    try:
        with pytest.raises(LocalCallError) as failed:
            await channel.call(TF_PREDICT, message, 0.1, attachments)
        assert failed.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        channel.close()
    kept = [entry.buffer for entry in shared_memory.REGIONS._kept]
    assert all(buffer is not region for buffer in kept)


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
async def test_a_runtime_that_cannot_map_shared_memory_just_now_gets_that_call_inline(tmp_path: Path) -> None:
    """SHARED_BUSY (out of descriptors, say): that call goes again inline, later ones share again."""
    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    seen: list[tuple[bool, int]] = []  # per request: whether it named shared memory, its attachment's size

    def runtime() -> None:
        connection, _ = listener.accept()
        with connection:
            for answer in (SHARED_BUSY, 0, 0):
                header = connection.recv(HEADER.size, socket.MSG_WAITALL)
                _, table_length, message_length, attachment_length = HEADER.unpack(header)
                table = connection.recv(table_length, socket.MSG_WAITALL) if table_length else b""
                for length in (message_length, attachment_length):
                    while length:
                        length -= len(connection.recv(min(length, 1 << 20)))
                seen.append((bool(ENTRY.unpack_from(table)[0] & SHARED), attachment_length))
                connection.sendall(frame(answer, b"", b"try again" if answer else b"", b""))

    thread = threading.Thread(target=runtime, daemon=True)
    thread.start()
    region = SharedRegion.create(4 * ATTACH_MIN)
    channel = LocalChannel(path, "t")
    try:
        for _ in range(2):
            message = PredictRequest()
            attachments = Attachments()
            array = np.frombuffer(memoryview(region), "<f4")
            attachments.sent.append((0, "x", tensor_header(message.inputs["x"], array, lookup_dtype("float32"))))
            await channel.call(TF_PREDICT, message, 5, attachments)
            assert channel.shares_memory
    finally:
        channel.close()
        listener.close()
    thread.join(5)
    assert seen == [(True, 0), (False, 4 * ATTACH_MIN), (True, 0)]


async def test_an_answer_with_tensors_nobody_asked_for_is_a_backend_error(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "cfg", "big", "big", "import numpy as np\n\ndef predict(x):\n"
                         "    return np.zeros(100_000, np.int32)\n")
    path = str(tmp_path / "big.sock")
    server = ModelServer.for_folder(folder, chdir=False, local_socket=path)
    server.start()
    channel = LocalChannel(path, "t")
    try:
        with pytest.raises(BackendError, match="tensors came beside an answer that expects none"):
            await channel.call(TF_PREDICT, request(1, name="big"), 5)
        attachments = Attachments()
        answer = await channel.call(TF_PREDICT, request(1, name="big"), 5, attachments)
        assert attached_array(answer.outputs["y"], attachments.received[0]["y"]).shape == (100_000,)
    finally:
        channel.close()
        server.stop(0).wait()


async def test_a_vanished_socket_sends_predictions_over_grpc(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "double", "double", "def predict(x):\n    return x * 2\n",
                "x: {shape: [-1], type: float32}", "y: {shape: [-1], type: float32}")
    write_app(root, "double", "double")
    values = np.arange(100_000, dtype=np.float32)  # large enough to travel beside the message
    with runtimes_for(load_config(root)) as config:
        socket_path = config.models[("double", 1)].backend.local_socket  # type: ignore[union-attr]
        assert socket_path is not None
        Path(socket_path).unlink()  # as a cleaner of temporary files would
        async with serve_app(create_app(Settings(config_dir=root), config)) as url, httpx.AsyncClient() as client:
            for _ in range(2):
                response = await client.post(f"{url}/gateway/applications/double", content=values.tobytes(),
                                             headers={"content-type": "application/octet-stream"}, timeout=30)
                assert response.status_code == 200, response.text
                np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), values * 2)


def frame(code: int, table: bytes, message: bytes, attachment: bytes) -> bytes:
    return HEADER.pack(code, len(table), len(message), len(attachment)) + table + message + attachment


@pytest.mark.parametrize("piece", [1, 7, HEADER.size, 1000, 1 << 20])
async def test_an_answer_is_read_whatever_pieces_it_comes_in(piece: int) -> None:
    """The connection's reader fed through get_buffer/buffer_updated, as the event loop does."""
    attachment = bytes(range(256)) * 300
    frames = [frame(0, b"", b"", b""), frame(5, b"", b"no such model", b""),
              frame(0, encode_table([(0, "y", len(attachment))]), b"message", attachment),
              frame(0, b"", attachment * 2, b"")]  # a large message (outputs inside it)
    connection = LocalConnection()
    for data in frames:
        answer = connection.expect()
        position = 0
        while position < len(data):
            buffer = connection.get_buffer(-1)
            size = min(piece, len(buffer), len(data) - position)
            buffer[:size] = data[position:position + size]
            connection.buffer_updated(size)
            position += size
        got = answer.result()
        code, table_length, message_length, _ = HEADER.unpack_from(data)
        body = data[HEADER.size:]
        if got.attachment.nbytes:  # read where its tensors start ALIGN-aligned in memory
            assert np.frombuffer(got.attachment, np.uint8).ctypes.data % ALIGN == 0
        assert (got.code, got.table, bytes(got.message), bytes(got.attachment)) == (
            code, body[:table_length], body[table_length:table_length + message_length],
            body[table_length + message_length:])


async def test_more_bytes_than_the_frame_announced_break_the_wire() -> None:
    connection = LocalConnection()
    answer = connection.expect()
    data = frame(0, b"", b"ok", b"") + b"extra"
    buffer = connection.get_buffer(-1)
    buffer[:len(data)] = data
    connection.buffer_updated(len(data))
    with pytest.raises(WireError, match="more than its frame announced"):
        answer.result()
    assert connection.closed


async def test_after_a_burst_only_a_few_connections_are_kept(slow_runtime: str) -> None:
    channel = LocalChannel(slow_runtime, "t")
    answers = await asyncio.gather(*(channel.call(TF_PREDICT, request(50), 10) for _ in range(MAX_IDLE + 8)))
    assert len(answers) == MAX_IDLE + 8
    assert channel.idle_connections == MAX_IDLE
    channel.close()


async def test_bytes_nobody_asked_for_close_the_connection() -> None:
    connection = LocalConnection()
    buffer = connection.get_buffer(-1)
    buffer[:3] = b"abc"
    connection.buffer_updated(3)  # no call is waiting for an answer
    assert connection.closed


async def test_requests_naming_the_version_share_calls_too(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m", "m", "import time\n\ndef predict(x):\n    time.sleep(0.005)\n    return x + 1\n")
    write_app(root, "m_v1", "m:1")
    with runtimes_for(load_config(root)) as config:
        app = create_app(Settings(config_dir=root), config)
        async with serve_app(app) as url, httpx.AsyncClient() as client:
            posts = [client.post(f"{url}/gateway/applications/m_v1", json={"x": [i]}) for i in range(40)]
            responses = await asyncio.gather(*posts)
            backend = app.state.dataplane.registry.models[("m", 1)].backend
    assert [r.json() for r in responses] == [{"y": [i + 1]} for i in range(40)]
    used = [scheduler for scheduler in backend._schedulers.values() if scheduler.calls]
    assert len(used) == 1
    assert used[0].calls < 40  # some calls carried several requests (PredictMany)
