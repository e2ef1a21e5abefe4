"""Predict, then print that call's record from the gateway's request log:
`python grpcRequestLog.py -m Toy --log-dir .gateway/request-logs/Toy`.

TF Serving's version of this script asks the server for its logging config; the gateway instead
writes each sampled call as a TF Serving PredictionLog to the `request_log` files its model's
serving.yaml names. The script sends the call with an `x-request-id`, waits for that id in the
log's index (`*.index.jsonl`), and reads the record at the offset it gives.
"""

from __future__ import annotations

import json
import secrets
import struct
import sys
import time
from pathlib import Path

import grpcRequest
import tfs_client  # first: it puts the generated stubs on sys.path

# isort: split
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc

BANNER = 100


def banner(title: str) -> str:
    """A title between stars, as the seed's script prints its sections."""
    return title.center(BANNER, "*")


def find_record(log_dir: Path, request_id: str, wait_s: float) -> bytes:
    """The PredictionLog bytes of `request_id`, once an index beside a log file lists it."""
    deadline = time.monotonic() + wait_s
    while True:
        for index in sorted(log_dir.glob("*.index.jsonl*")):
            try:
                lines = index.read_text().splitlines()
            except FileNotFoundError:  # renamed from .partial meanwhile: found on the next pass
                continue
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line still being written (or blank)
                    continue
                if entry.get("request_id") == request_id:
                    stem = index.name.split(".index.jsonl")[0]
                    return read_record(log_dir, stem, entry["offset"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"request {request_id} is not in the request log in {log_dir} after {wait_s:g} s")
        time.sleep(0.05)


def read_record(log_dir: Path, stem: str, offset: int) -> bytes:
    """One TFRecord (u64 length, u32 crc, data, u32 crc) at `offset` of the log file `stem`."""
    for name in (f"{stem}.tfrecord", f"{stem}.tfrecord.partial"):
        try:
            with open(log_dir / name, "rb") as file:
                file.seek(offset)
                (length,) = struct.unpack("<Q", file.read(8))
                file.read(4)
                return file.read(length)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{stem}.tfrecord in {log_dir}")


def main() -> int:
    arguments = tfs_client.parser(__doc__.splitlines()[0])
    arguments.add_argument("-m", "--model", default="Toy", help="model name (default Toy)")
    which = arguments.add_mutually_exclusive_group()
    which.add_argument("-v", "--version", type=int, help="model version")
    which.add_argument("-l", "--label", help="model version label")
    arguments.add_argument("--log-dir", type=Path, default=Path(".gateway/request-logs/Toy"),
                           help="the model's request_log file dir (default .gateway/request-logs/Toy, as in "
                                "the example config, relative to the gateway's working directory)")
    arguments.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the record")
    options = arguments.parse_args()
    request_id = secrets.token_hex(8)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(tfs_client.channel(options))
    message = grpcRequest.request(options.model, options.version, options.label, "serving_default")
    try:
        stub.Predict(message, timeout=options.timeout,
                     metadata=tfs_client.metadata(options.api_key, ("x-request-id", request_id)))
    except tfs_client.grpc.RpcError as error:
        return tfs_client.fail(error)
    record = prediction_log_pb2.PredictionLog.FromString(find_record(options.log_dir, request_id, options.wait))
    response = record.predict_log.response
    logged = prediction_log_pb2.PredictionLog()
    logged.predict_log.request.CopyFrom(record.predict_log.request)
    print(banner("request logs"))
    print(logged, end="")
    print(banner("end"))
    print(banner("outputs"))
    print(response, end="")
    print(banner("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
