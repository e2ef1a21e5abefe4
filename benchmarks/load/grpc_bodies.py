"""Writes the small Predict request of each benchmark backend as a gRPC message (the 5-byte
prefix, then the serialized request), for h2load's `-d`: payloads/grpc-tf-small.bin (TF Serving's
PredictRequest, the gateway's TF-protocol backends) and payloads/grpc-peers-small.bin (the
mini-gateway's Ceiling B). Run from benchmarks/ with the repository root on PYTHONPATH."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proto"))
import tensor_pb2 as peers

from protos.tensorflow.types_pb2 import DT_INT32
from protos.tensorflow_serving.predict_pb2 import PredictRequest


def message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "payloads"
    tf = PredictRequest()
    tf.model_spec.name = "increment"
    tensor = tf.inputs["number"]
    tensor.dtype = DT_INT32
    tensor.tensor_shape.dim.add(size=1)
    tensor.int_val.append(1)  # as the gateway sends a small int32 input to TF Serving
    (out / "grpc-tf-small.bin").write_bytes(message(tf.SerializeToString()))
    b = peers.Tensor(dtype=peers.DT_INT32, tensor_content=np.asarray([1], np.int32).tobytes())
    b.tensor_shape.dim.add(size=1)
    (out / "grpc-peers-small.bin").write_bytes(message(peers.PredictRequest(inputs={"number": b}).SerializeToString()))


if __name__ == "__main__":
    main()
