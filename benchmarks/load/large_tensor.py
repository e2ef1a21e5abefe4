"""A large float32 tensor through the gateway: binary path vs JSON path vs memcpy.

Posts one tensor of --mb megabytes to an application with a float32 [-1] input and output
(the benchmark's `increment_f32`), one request at a time over a kept-alive connection, and
prints tab-separated `key<TAB>value` lines: MB/s of the tensor for a whole round trip (request
in, answer out, answer checked) on the binary path (raw bytes, dtype and shape in headers) and
on the JSON path, and of one in-process memcpy of the same bytes.

usage: large_tensor.py --url http://127.0.0.1:8900/gateway/applications/increment_f32 [--mb 100]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
import urllib.parse

import numpy as np
import orjson


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-repeat", type=int, default=1)
    args = parser.parse_args()
    count = int(args.mb * 1e6) // 4
    tensor = (np.arange(count, dtype=np.float32) % 1000) / 7
    raw = tensor.tobytes()
    megabytes = len(raw) / 1e6
    print(f"tensor_MB\t{megabytes:.1f}")

    target = np.empty_like(tensor)
    copies = []
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, tensor)
        copies.append(time.perf_counter() - started)
    print(f"memcpy_MBps\t{megabytes / statistics.median(copies):.0f}")

    headers = {"Content-Type": "application/octet-stream", "x-tensor-dtype": "float32",
               "x-tensor-shape": str(count)}
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        status, answer_headers, body = post(args.url, raw, headers)
        times.append(time.perf_counter() - started)
        assert status == 200, (status, body[:300])
        answer = np.frombuffer(body, dtype="<f4")
        assert answer.shape == tensor.shape
        assert answer_headers.get("x-tensor-dtype") == "float32"
        assert np.array_equal(answer[:1000], tensor[:1000] + 1)
    print(f"binary_seconds\t{statistics.median(times):.3f}")
    print(f"binary_MBps\t{megabytes / statistics.median(times):.0f}")

    body_json = orjson.dumps({"number": tensor}, option=orjson.OPT_SERIALIZE_NUMPY)
    print(f"json_body_MB\t{len(body_json) / 1e6:.1f}")
    times = []
    for _ in range(args.json_repeat):
        started = time.perf_counter()
        status, _, body = post(args.url, body_json, {"Content-Type": "application/json"})
        times.append(time.perf_counter() - started)
        assert status == 200, (status, body[:300])
    answer = np.asarray(orjson.loads(body)["number"], dtype=np.float32)
    assert np.array_equal(answer[:1000], tensor[:1000] + 1)
    print(f"json_seconds\t{statistics.median(times):.3f}")
    print(f"json_MBps\t{megabytes / statistics.median(times):.0f}")


if __name__ == "__main__":
    main()
