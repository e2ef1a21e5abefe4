"""Load a gRPC Predict server with h2load, as wrk loads the HTTP rows: one parsable RESULT line.

h2load (nghttp2, C, one thread, closed loop) POSTs one gRPC-framed
`tensorflow.serving.PredictionService/Predict` request (model `increment`, int32 `[1]`, the
small payload) over HTTP/2 without TLS. It sees HTTP statuses only, and a gRPC error is an
HTTP 200 with a `grpc-status` trailer, so each run is checked three ways: one real grpc.aio call
before it must answer `number: [2]`; every call h2load counts as done must have carried an
answer (its DATA bytes over one answer's framed size: a gRPC error carries none), which holds
for every server; and, for the gateway, its request metrics of the method (`--metrics`) must
count no failed call during the run (the calls h2load resets when its time is up are counted
as `cancelled`, not as errors).

  grpc_predict.py check --target 127.0.0.1:8901
  grpc_predict.py load --target 127.0.0.1:8901 --clients 64 --streams 1 --duration 10 \
      --warmup 2 [--metrics http://127.0.0.1:8900/metrics]

`--clients` connections, each with `--streams` calls in flight (64 x 1 is wrk's c = 64; 1 x 64
is one channel carrying 64 calls, as a gRPC client usually calls). Run it pinned (taskset):
h2load inherits the affinity. The RESULT line has wrk's keys (rps, p50_us, p99_us, errors,
requests), the percentiles computed from h2load's per-request log.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import numpy as np

from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor

MODEL = "increment"
# The gateway's request counter, one line per label set.
METRIC = re.compile(r'^gateway_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def request() -> PredictRequest:
    """The small request: `number` = int32 [1], as `tf.make_tensor_proto` writes it."""
    message = PredictRequest()
    message.model_spec.name = MODEL
    fill_tensor(message.inputs["number"], np.array([1], np.int32))
    return message


def framed(message: PredictRequest) -> bytes:
    """A gRPC message as it travels in a DATA frame: uncompressed flag, big-endian length, bytes."""
    body = message.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


async def answer_bytes(target: str) -> int:
    """The framed size of one Predict answer (the same for every call of the same request)."""
    async with grpc.aio.insecure_channel(target) as channel:
        predict = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                                      response_deserializer=PredictResponse.FromString)
        answer: PredictResponse = await predict(request(), timeout=10)
    return len(answer.SerializeToString()) + 5  # the gRPC frame: compressed flag, 4-byte length


async def check(target: str) -> str | None:
    """None when one Predict answers `number: [2]`, else what went wrong."""
    async with grpc.aio.insecure_channel(target) as channel:
        predict = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                                      response_deserializer=PredictResponse.FromString)
        try:
            answer = await predict(request(), timeout=10)
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
    if "number" not in answer.outputs:
        return f"no output 'number' in {answer}"
    values = decode_tensor(answer.outputs["number"]).tolist()
    return None if values == [2] else f"number = {values}, expected [2]"


def failed_calls(metrics_url: str | None) -> tuple[int, int]:
    """Calls of the Predict method the gateway counted as failed (not 200, not 499) and as
    cancelled (499: h2load resets the calls still in flight when its time is up)."""
    if metrics_url is None:
        return 0, 0
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    failed = cancelled = 0
    for match in METRIC.finditer(text):
        labels = match["labels"]
        if f'route="{TF_PREDICT.path}"' not in labels or 'status="200"' in labels:
            continue
        if 'status="499"' in labels:
            cancelled += int(float(match["value"]))
        else:
            failed += int(float(match["value"]))
    return failed, cancelled


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted list (0 when empty)."""
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def load(args: argparse.Namespace) -> str:
    """Run h2load once; the RESULT line."""
    host, _, port = args.target.rpartition(":")
    with tempfile.TemporaryDirectory(prefix="grpc-predict-") as tmp:
        body, log = os.path.join(tmp, "body"), os.path.join(tmp, "log.tsv")
        with open(body, "wb") as f:
            f.write(framed(request()))
        size = asyncio.run(answer_bytes(args.target))
        before = failed_calls(args.metrics)
        command = ["h2load", "-t1", f"-c{args.clients}", f"-m{args.streams}", f"-D{args.duration}",
                   f"--warm-up-time={args.warmup}", "-d", body, "--log-file", log,
                   "-H", "content-type: application/grpc", "-H", "te: trailers",
                   f"http://{host}:{port}{TF_PREDICT.path}"]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.duration + args.warmup + 30)
        time.sleep(0.5 if args.metrics else 0)  # the calls reset at the end are counted a moment later
        after = failed_calls(args.metrics)
        errors, cancelled = after[0] - before[0], after[1] - before[1]
        out = done.stdout
        if done.returncode != 0 or "requests:" not in out:
            raise SystemExit(f"h2load failed ({done.returncode}): {done.stderr.strip()[-300:]} {out[-300:]}")
        with open(log) as f:
            rows = [line.split("\t") for line in f if line.strip()]
    latencies = sorted(int(row[2]) for row in rows if row[1] == "200")
    not_ok = sum(1 for row in rows if row[1] != "200")
    stats = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert stats is not None, out
    h2_failed = int(stats[5]) + int(stats[6]) + int(stats[7])
    data = re.search(r"traffic: .*\((\d+)\) data", out)
    assert data is not None, out
    # Calls without an answer's bytes (a few calls cut off at the end may leave part of theirs).
    unanswered = max(0, int(stats[3]) - int(data[1]) // size)
    rps = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
    return (f"RESULT rps={rps:.1f} p50_us={percentile(latencies, 50)} p99_us={percentile(latencies, 99)} "
            f"errors={max(errors + max(not_ok, h2_failed), unanswered)} requests={len(rows)} cancelled={cancelled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("check", "load"))
    parser.add_argument("--target", required=True, help="HOST:PORT of the gRPC server (loopback)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--metrics", help="the gateway's /metrics URL, to count calls that failed")
    args = parser.parse_args()
    if not args.target.startswith(("127.", "[::1]", "localhost")):
        raise SystemExit("only loopback targets")
    if args.what == "check":
        problem = asyncio.run(check(args.target))
        if problem is not None:
            print(problem)
            sys.exit(1)
        print("ok")
    else:
        print(load(args))


if __name__ == "__main__":
    main()
