"""A large float32 tensor through the gateway: binary path vs JSON path vs the ceilings.

Posts one tensor of --mb megabytes to an application with a float32 [-1] input and output
(the benchmark's `increment_f32`), one request at a time, and prints tab-separated
`key<TAB>value` lines: MB/s of the tensor for a whole round trip (request in, answer out,
answer checked) on the binary path (raw bytes, dtype and shape in headers) and on the JSON
path; of one in-process memcpy of the same bytes; and (--loopback) of the same bytes sent to a
raw TCP echo on 127.0.0.1 and read back, with nothing but the kernel in between: the ceiling
of any round trip over loopback TCP on this machine. --prefix names the keys of another server
(the Starlette ceiling); --ingest-url times the request alone, one way, against a server that
only reads the body; --v2-url also sends the tensor through the Open Inference Protocol's binary
tensor extension (a JSON header of Inference-Header-Content-Length bytes, then the raw bytes; the
output asked as binary_data) to a /v2/models/<m>/infer URL of the same application.

usage: large_tensor.py --url http://127.0.0.1:8900/gateway/applications/increment_f32 [--mb 100]
           [--loopback --echo-cpu 0] [--prefix ceiling_] [--json-repeat 0] [--ingest-url URL]
           [--v2-url http://127.0.0.1:8900/v2/models/increment_f32/infer]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import time
import urllib.parse
from collections.abc import Callable

import numpy as np
import orjson

_ANSWERS: dict[int, bytearray] = {}


def _answer_buffer(size: int) -> bytearray:
    """The buffer answers of `size` bytes are read into, made once (as the echo's client's is)."""
    if size not in _ANSWERS:
        _ANSWERS.clear()
        _ANSWERS[size] = bytearray(size)
    return _ANSWERS[size]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes | bytearray]:
    """One round trip; an answer of a declared length is read into one buffer of that length (as
    the raw TCP echo's client reads), so that the client's own copies do not weigh on the ratios."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        answer_headers = dict(response.getheaders())
        length = response.getheader("content-length")
        if length is None or not length.isdigit() or response.getheader("content-encoding"):
            return response.status, answer_headers, response.read()
        answer = _answer_buffer(int(length))
        view, got = memoryview(answer), 0
        while got < len(answer):
            read = response.readinto(view[got:])
            if not read:
                raise EOFError(f"the answer ended after {got} of {len(answer)} bytes")
            got += read
        return response.status, answer_headers, answer
    finally:
        connection.close()


def _echo(listener: socket.socket, size: int, rounds: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    connection, _ = listener.accept()
    buffer = bytearray(size)
    for _ in range(rounds):
        _read_into(connection, buffer)
        connection.sendall(buffer)


def _read_into(connection: socket.socket, buffer: bytearray) -> None:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        got += connection.recv_into(view[got:])


def loopback_seconds(raw: bytes, rounds: int, cpu: int | None) -> float:
    """Median seconds to send `raw` to a raw TCP echo process on 127.0.0.1 and read it back."""
    listener = socket.create_server(("127.0.0.1", 0))
    echo = multiprocessing.get_context("fork").Process(target=_echo, args=(listener, len(raw), rounds, cpu))
    echo.start()
    times = []
    with socket.create_connection(listener.getsockname()) as connection:
        back = bytearray(len(raw))
        for _ in range(rounds):
            started = time.perf_counter()
            connection.sendall(raw)
            _read_into(connection, back)
            times.append(time.perf_counter() - started)
        assert back == raw
    echo.join()
    listener.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-repeat", type=int, default=1)
    parser.add_argument("--loopback", action="store_true", help="also measure a raw TCP echo on loopback")
    parser.add_argument("--echo-cpu", type=int, help="the CPU the raw TCP echo runs on")
    parser.add_argument("--prefix", default="", help="a prefix for the keys printed")
    parser.add_argument("--ingest-url", help="also time the request alone against this URL (one way)")
    parser.add_argument("--v2-url", help="also time the v2 binary tensor extension at this infer URL")
    args = parser.parse_args()
    key = args.prefix
    count = int(args.mb * 1e6) // 4
    tensor = (np.arange(count, dtype=np.float32) % 1000) / 7
    raw = tensor.tobytes()
    megabytes = len(raw) / 1e6
    if not key:
        print(f"tensor_MB\t{megabytes:.1f}")
        target = np.empty_like(tensor)
        copies = []
        for _ in range(5):
            started = time.perf_counter()
            np.copyto(target, tensor)
            copies.append(time.perf_counter() - started)
        print(f"memcpy_MBps\t{megabytes / statistics.median(copies):.0f}")
    if args.loopback:
        print(f"loopback_tcp_round_trip_MBps\t{megabytes / loopback_seconds(raw, args.repeat, args.echo_cpu):.0f}")

    headers = {"Content-Type": "application/octet-stream", "x-tensor-dtype": "float32",
               "x-tensor-shape": str(count)}

    def binary_answer(answer_headers: dict[str, str], body: bytes | bytearray) -> None:
        answer = np.frombuffer(body, dtype="<f4")
        assert answer.shape == tensor.shape
        assert answer_headers.get("x-tensor-dtype") == "float32"
        assert np.array_equal(answer[:1000], tensor[:1000] + 1)

    seconds = median_seconds(args.url, raw, headers, args.repeat, binary_answer)
    if args.ingest_url:  # the body one way only: a server that reads it and answers its length
        ingest = median_seconds(args.ingest_url, raw, headers, args.repeat,
                                lambda _, body: _expect(int(body) == len(raw), body))
        print(f"{key}ingest_MBps\t{megabytes / ingest:.0f}")
    print(f"{key}binary_seconds\t{seconds:.3f}")
    print(f"{key}binary_MBps\t{megabytes / seconds:.0f}")
    if args.v2_url:
        try:
            v2_seconds = v2_binary_seconds(args.v2_url, tensor, args.repeat)
        except (AssertionError, KeyError, ValueError, OSError) as error:  # reported; the JSON path still runs
            print(f"{key}v2_binary_error\t{str(error)[:200]!r}")
        else:
            print(f"{key}v2_binary_seconds\t{v2_seconds:.3f}")
            print(f"{key}v2_binary_MBps\t{megabytes / v2_seconds:.0f}")
            print(f"{key}v2_binary_vs_binary\t{seconds / v2_seconds:.2f}")
    if args.json_repeat < 1:
        return

    body_json = orjson.dumps({"number": tensor}, option=orjson.OPT_SERIALIZE_NUMPY)
    print(f"{key}json_body_MB\t{len(body_json) / 1e6:.1f}")

    def json_answer(_: dict[str, str], body: bytes | bytearray) -> None:
        answer = np.asarray(orjson.loads(body)["number"], dtype=np.float32)
        assert np.array_equal(answer[:1000], tensor[:1000] + 1)

    seconds = median_seconds(args.url, body_json, {"Content-Type": "application/json"}, args.json_repeat,
                             json_answer)
    print(f"{key}json_seconds\t{seconds:.3f}")
    print(f"{key}json_MBps\t{megabytes / seconds:.0f}")


def median_seconds(url: str, body: bytes, headers: dict[str, str], repeat: int,
                   check: Callable[[dict[str, str], bytes | bytearray], None]) -> float:
    """Median seconds of `repeat` round trips, each answer 200 and passing `check`."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        status, answer_headers, answer = post(url, body, headers)
        times.append(time.perf_counter() - started)
        assert status == 200, (status, answer[:300])
        check(answer_headers, answer)
    return statistics.median(times)


def v2_binary_seconds(url: str, tensor: np.ndarray, repeat: int) -> float:
    """Median seconds of `repeat` round trips of `tensor` as the v2 binary tensor extension: the
    input `number` and the output asked as binary data, the answer's bytes checked."""
    raw = tensor.tobytes()
    header = orjson.dumps({
        "inputs": [{"name": "number", "shape": [tensor.size], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "number", "parameters": {"binary_data": True}}]})
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}

    def answer(answer_headers: dict[str, str], body: bytes | bytearray) -> None:
        length = int({k.lower(): v for k, v in answer_headers.items()}["inference-header-content-length"])
        output = orjson.loads(body[:length])["outputs"][0]
        assert (output["datatype"], output["shape"]) == ("FP32", [tensor.size]), output
        assert output["parameters"]["binary_data_size"] == len(raw), output
        values = np.frombuffer(body, dtype="<f4", count=tensor.size, offset=length)
        assert np.array_equal(values[:1000], tensor[:1000] + 1)

    # One buffer, as a client sends it: the header then the tensor's bytes.
    return median_seconds(url, header + raw, headers, repeat, answer)


def _expect(condition: bool, body: bytes | bytearray) -> None:
    assert condition, body[:300]


if __name__ == "__main__":
    main()
