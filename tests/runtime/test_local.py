"""The runtime's end of the local wire, in this process, spoken to over a real Unix socket."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.local_wire import (
    ATTACH_MIN,
    HEADER,
    MAPPED_MIN,
    METHOD_NUMBERS,
    SHARED_REFUSED,
    Attachments,
    encode_table,
    split_attachment,
)
from protos.runtime.calls_pb2 import PredictManyRequest, PredictManyResponse
from protos.services import RUNTIME_PREDICT_MANY, TF_PREDICT
from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from protos.shared_memory import SharedRegion
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.server import ModelServer
from tensorcodecs import lookup_dtype
from tensorcodecs.tensor_proto import attached_array, decode_tensor, tensor_header
from tests.conftest import INCREMENT_MODEL, write_model
from tests.runtime.test_server import request_for
from tests.waiting import wait_until

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"
Serve = Callable[[Path], str]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start a runtime for a model folder; returns its Unix socket path."""
    servers: list[ModelServer] = []

    def start(folder: Path) -> str:
        path = str(tmp_path / f"{len(servers)}.sock")
        server = ModelServer.for_folder(folder, chdir=False, local_socket=path)
        server.start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.stop(0).wait()


def connect(path: str) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(path)
    return connection


def read_exact(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def call(connection: socket.socket, number: int, payload: bytes) -> tuple[int, bytes]:
    """A call without attachments: (status code, message)."""
    code, table, message, attachment = call_attached(connection, number, payload)
    assert not table
    assert not attachment
    return code, message


def call_attached(connection: socket.socket, number: int, payload: bytes,
                  sent: Attachments | None = None) -> tuple[int, bytes, bytes, bytes]:
    """A call: (status code, table, message, attachment) of its answer."""
    sent = sent or Attachments()
    buffers = b"".join(bytes(buffer) for buffer in sent.buffers())
    table = sent.table()
    connection.sendall(HEADER.pack(number, len(table), len(payload), len(buffers)) + table + payload + buffers)
    return read_answer(connection)


def read_answer(connection: socket.socket) -> tuple[int, bytes, bytes, bytes]:
    code, table_length, message_length, attachment_length = HEADER.unpack(read_exact(connection, HEADER.size))
    return (code, read_exact(connection, table_length), read_exact(connection, message_length),
            read_exact(connection, attachment_length))


PREDICT = METHOD_NUMBERS[TF_PREDICT.path]
PREDICT_MANY = METHOD_NUMBERS[RUNTIME_PREDICT_MANY.path]


def test_predict_answers_as_over_grpc(serve: Serve) -> None:
    path = serve(INCREMENT_MODEL)
    with connect(path) as connection:
        for values in ([1, 2, 3], [41]):  # one connection, several calls in turn
            code, payload = call(connection, PREDICT,
                                 request_for("increment_model", number=values).SerializeToString())
            assert code == 0
            response = PredictResponse.FromString(payload)
            assert decode_tensor(response.outputs["number"]).tolist() == [v + 1 for v in values]
            assert response.model_spec.name == "increment_model"
            assert response.model_spec.version.value == 1


def test_predict_many_answers_each_request_on_its_own(serve: Serve) -> None:
    path = serve(INCREMENT_MODEL)
    request = PredictManyRequest(request_ids=["a", "b"])
    request.requests.add().CopyFrom(request_for("increment_model", number=[1]))
    request.requests.add().CopyFrom(request_for("increment_model", other=[1]))
    with connect(path) as connection:
        code, payload = call(connection, PREDICT_MANY, request.SerializeToString())
    assert code == 0
    first, second = PredictManyResponse.FromString(payload).results
    assert first.code == 0
    assert decode_tensor(first.response.outputs["number"]).tolist() == [2]
    assert second.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "number" in second.message


@pytest.mark.parametrize(("number", "payload", "code", "words"), [
    (PREDICT, request_for("increment_model", other=[1]).SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT,
     "missing input 'number'"),
    (PREDICT, request_for("someone_else", number=[1]).SerializeToString(), grpc.StatusCode.NOT_FOUND,
     "is not served here"),
    (PREDICT, b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "malformed request"),
    (99, b"", grpc.StatusCode.UNIMPLEMENTED, "no method number 99"),
    (PREDICT, b"\x0a", grpc.StatusCode.INVALID_ARGUMENT, "malformed request"),
])
def test_a_failed_call_is_a_status_and_the_connection_stays_usable(
        serve: Serve, number: int, payload: bytes, code: grpc.StatusCode, words: str) -> None:
    path = serve(INCREMENT_MODEL)
    with connect(path) as connection:
        got, message = call(connection, number, payload)
        assert got == code.value[0]
        assert words in message.decode()
        ok, _ = call(connection, PREDICT, request_for("increment_model", number=[1]).SerializeToString())
        assert ok == 0


def test_an_exception_in_the_model_is_internal_with_type_and_message(serve: Serve, tmp_path: Path) -> None:
    folder = write_model(tmp_path / "cfg", "faulty", "faulty", "def predict(x):\n    raise KeyError('w')\n")
    with connect(serve(folder)) as connection:
        code, message = call(connection, PREDICT, request_for("faulty", x=[1]).SerializeToString())
    assert code == grpc.StatusCode.INTERNAL.value[0]
    assert message.decode() == "KeyError: 'w'"


def test_connections_run_their_calls_at_the_same_time(serve: Serve, tmp_path: Path) -> None:
    path = serve(write_model(tmp_path / "cfg", "slow", "slow", SLOW))
    answers: list[int] = []

    def one() -> None:
        with connect(path) as connection:
            answers.append(call(connection, PREDICT, request_for("slow", x=[300]).SerializeToString())[0])

    threads = [threading.Thread(target=one) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [0, 0, 0, 0]
    assert time.monotonic() - started < 1.0  # 4 x 300 ms one after another would take 1.2 s


def test_stop_finishes_the_running_call_closes_idle_connections_and_removes_the_socket(tmp_path: Path) -> None:
    running = tmp_path / "running"
    source = (f"import time\n\ndef predict(x):\n    open({str(running)!r}, 'w').close()\n"
              "    time.sleep(int(x[0]) / 1000)\n    return x\n")
    folder = write_model(tmp_path / "cfg", "slow", "slow", source)
    path = str(tmp_path / "rt.sock")
    server = ModelServer.for_folder(folder, chdir=False, local_socket=path)
    server.start()
    idle, busy = connect(path), connect(path)
    try:
        assert call(busy, PREDICT, b"")[0] != 0  # the connection is being served (no input: a status)
        payload = request_for("slow", x=[400]).SerializeToString()
        busy.sendall(HEADER.pack(PREDICT, 0, len(payload), 0) + payload)
        wait_until(running.exists, what="the call running")
        stopped = server.stop(5)
        assert idle.recv(1) == b""  # an idle connection is closed at once
        code, _, message, _ = read_answer(busy)
        assert code == 0
        assert decode_tensor(PredictResponse.FromString(message).outputs["y"]).tolist() == [400]
        assert busy.recv(1) == b""  # and the busy one after its answer
        assert not Path(path).exists()
        with pytest.raises(FileNotFoundError):
            connect(path)
        assert stopped.wait(5)
    finally:
        idle.close()
        busy.close()
        server.wait()


def test_a_socket_file_left_by_an_earlier_run_is_replaced(serve: Serve, tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "0.sock"))
    stale.close()  # the file stays, nothing listens
    with connect(serve(INCREMENT_MODEL)) as connection:
        assert call(connection, PREDICT, request_for("increment_model", number=[1]).SerializeToString())[0] == 0


# ---------------------------------------------------------------- large tensors beside the message

DOUBLE = ("def predict(x):\n    return x * 2\n", "x: {shape: [-1], type: float32}", "y: {shape: [-1], type: float32}")


def float_request(name: str, values: np.ndarray, sent: Attachments, item: int = 0) -> PredictRequest:
    request = PredictRequest()
    request.model_spec.name = name
    sent.sent.append((item, "x", tensor_header(request.inputs["x"], values, lookup_dtype("float32"))))
    return request


@pytest.mark.parametrize("extra", ["", "workers: 2", "style: hydrosphere"])
@pytest.mark.parametrize("size", [ATTACH_MIN, MAPPED_MIN])  # the latter read into anonymous mappings
def test_large_tensors_travel_beside_the_message(serve: Serve, tmp_path: Path, extra: str, size: int) -> None:
    source, inputs, outputs = DOUBLE
    if extra == "style: hydrosphere":
        source = ("import hydro_serving_grpc as hs\nimport tensorflow as tf\n\ndef predict(x):\n"
                  "    doubled = tf.make_tensor_proto(hs.make_ndarray(x) * 2, dtype=hs.DT_FLOAT)\n"
                  "    return hs.PredictResponse(outputs={'y': doubled})\n")
    path = serve(write_model(tmp_path / "cfg", "double", "double", source, inputs, outputs, extra))
    values = np.arange(size, dtype=np.float32)  # 4 x size bytes
    sent = Attachments()
    request = float_request("double", values, sent)
    with connect(path) as connection:
        code, table, message, attachment = call_attached(connection, PREDICT, request.SerializeToString(), sent)
    assert code == 0, message
    response = PredictResponse.FromString(message)
    assert bool(table) == (extra == "")
    if table:  # a numpy-style function in this process: the output comes beside the message
        answer = attached_array(response.outputs["y"], split_attachment(table, bytearray(attachment))[0]["y"])
        assert not response.outputs["y"].tensor_content
    else:  # worker processes and TensorProto-style functions answer in the message
        answer = decode_tensor(response.outputs["y"])
    np.testing.assert_array_equal(answer, values * 2)


def test_predict_many_sends_attached_outputs_only_for_answered_requests(serve: Serve, tmp_path: Path) -> None:
    source = "def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n    return x * 2\n"
    path = serve(write_model(tmp_path / "cfg", "double", "double", source, DOUBLE[1], DOUBLE[2]))
    sent = Attachments()
    many = PredictManyRequest()
    firsts = [1.0, -1.0, 3.0]
    for item, first in enumerate(firsts):
        values = np.full(ATTACH_MIN, first, np.float32)
        many.requests.add().CopyFrom(float_request("double", values, sent, item))
    with connect(path) as connection:
        code, table, message, attachment = call_attached(connection, PREDICT_MANY, many.SerializeToString(), sent)
    assert code == 0
    results = PredictManyResponse.FromString(message).results
    assert [result.code for result in results] == [0, grpc.StatusCode.INTERNAL.value[0], 0]
    received = split_attachment(table, bytearray(attachment))
    assert sorted(received) == [0, 2]
    for item in (0, 2):
        answer = attached_array(results[item].response.outputs["y"], received[item]["y"])
        assert answer[0] == firsts[item] * 2


IN_PLACE = ("def predict(x):\n    x *= 2\n    return {'y': x}\n", DOUBLE[1], DOUBLE[2])  # writes its input


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
@pytest.mark.parametrize("extra", ["", "workers: 2"])
def test_a_tensor_in_shared_memory_is_read_from_there_and_the_model_may_write_its_copy(
        serve: Serve, tmp_path: Path, extra: str) -> None:
    path = serve(write_model(tmp_path / "cfg", "double", "double", *IN_PLACE, extra))
    values = np.arange(MAPPED_MIN, dtype="<f4")
    region = SharedRegion.create(values.nbytes)
    region.write_at(0, values.tobytes())
    sent = Attachments()
    request = float_request("double", np.frombuffer(memoryview(region), "<f4"), sent)
    table, buffers = sent.frame(share=True)
    assert not buffers  # the tensor is named, not sent
    payload = request.SerializeToString()
    with connect(path) as connection:
        connection.sendall(HEADER.pack(PREDICT, len(table), len(payload), 0) + table + payload)
        code, answer_table, message, attachment = read_answer(connection)
    assert code == 0, message
    output = PredictResponse.FromString(message).outputs["y"]
    answer = (attached_array(output, split_attachment(answer_table, bytearray(attachment))[0]["y"])
              if answer_table else decode_tensor(output))
    np.testing.assert_array_equal(answer, values * 2)
    np.testing.assert_array_equal(np.frombuffer(memoryview(region), "<f4"), values)  # the gateway's, unchanged


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
def test_a_shared_tensor_the_runtime_cannot_map_is_refused_before_anything_runs(serve: Serve, tmp_path: Path) -> None:
    record = tmp_path / "calls.log"
    source = f"def predict(x):\n    open({str(record)!r}, 'a').write('ran')\n    return {{'y': x}}\n"
    path = serve(write_model(tmp_path / "cfg", "echo", "echo", source, DOUBLE[1], DOUBLE[2]))
    region = SharedRegion.create(4 * ATTACH_MIN)
    sent = Attachments()
    request = float_request("echo", np.frombuffer(memoryview(region), "<f4"), sent)
    region.inode += 1  # as a runtime in another PID namespace would find: another file
    table = sent.frame(share=True)[0]
    payload = request.SerializeToString()
    with connect(path) as connection:
        connection.sendall(HEADER.pack(PREDICT, len(table), len(payload), 0) + table + payload)
        code, answer_table, message, attachment = read_answer(connection)
        assert (code, answer_table, attachment) == (SHARED_REFUSED, b"", b"")
        assert "is not the gateway's shared memory" in message.decode()
        table, buffers = sent.frame(share=False)  # the same call, inline, on the same connection
        inline = b"".join(bytes(buffer) for buffer in buffers)
        connection.sendall(HEADER.pack(PREDICT, len(table), len(payload), len(inline)) + table + payload + inline)
        assert read_answer(connection)[0] == 0
    assert record.read_text() == "ran"  # once: the refused call did not run


@pytest.mark.parametrize(("table_entry", "words"), [
    ((0, "nope", 4 * ATTACH_MIN), "input 'nope', which the request lacks"),
    ((5, "x", 4 * ATTACH_MIN), "names request 5 of 1"),
    ((0, "x", 4 * ATTACH_MIN - 4), "accounts for"),
])
def test_a_malformed_attachment_is_invalid_argument(serve: Serve, tmp_path: Path,
                                                    table_entry: tuple[int, str, int], words: str) -> None:
    path = serve(write_model(tmp_path / "cfg", "double", "double", *DOUBLE))
    sent = Attachments()
    request = float_request("double", np.zeros(ATTACH_MIN, np.float32), sent)
    table = encode_table([table_entry])
    payload = request.SerializeToString()
    with connect(path) as connection:
        connection.sendall(HEADER.pack(PREDICT, len(table), len(payload), 4 * ATTACH_MIN) + table + payload
                           + bytes(4 * ATTACH_MIN))
        code, _, message, _ = read_answer(connection)
    assert code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert words in message.decode()


def test_calls_beyond_the_runtime_threads_wait_and_abandoned_ones_are_skipped(tmp_path: Path) -> None:
    """As in the gRPC server's pool: at most `threads` calls run (at least 2); a queued call
    whose caller went away does not run at all."""
    record = tmp_path / "calls.log"
    source = (f"import time\n\ndef predict(x):\n    with open({str(record)!r}, 'a') as log:\n"
              "        log.write(f'{int(x[0])} ')\n    time.sleep(0.3)\n    return x\n")
    folder = write_model(tmp_path / "cfg", "slow", "slow", source)
    path = str(tmp_path / "rt.sock")
    server = ModelServer.for_folder(folder, chdir=False, threads=2, local_socket=path)
    server.start()
    connections = [connect(path) for _ in range(4)]
    try:
        started = time.monotonic()
        for number, connection in enumerate(connections[:3], start=1):
            payload = request_for("slow", x=[number]).SerializeToString()
            connection.sendall(HEADER.pack(PREDICT, 0, len(payload), 0) + payload)
            if number < 3:  # calls 1 and 2 hold both threads before call 3 comes
                wait_until(functools.partial(_started, record, number), what=f"call {number} running")
        connections[2].close()  # call 3 waits for a thread; its caller stops waiting
        assert call(connections[3], PREDICT, request_for("slow", x=[4]).SerializeToString())[0] == 0
        assert [read_answer(connection)[0] for connection in connections[:2]] == [0, 0]
        assert time.monotonic() - started >= 0.55  # call 4 waited for a thread: 2 x 0.3 s
    finally:
        for connection in connections:
            connection.close()
        server.stop(0).wait()
    assert sorted(record.read_text().split()) == ["1", "2", "4"]


def _started(record: Path, number: int) -> bool:
    """Whether the model has recorded the start of call `number`."""
    return record.exists() and str(number) in record.read_text().split()
