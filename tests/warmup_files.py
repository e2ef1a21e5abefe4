"""Warmup files as TensorFlow's documented snippet writes them (tf.io.TFRecordWriter of
serialized PredictionLogs with a PredictRequest, tensors as tf.make_tensor_proto makes them from
numpy arrays), framed here with the `crc32c` package, not with tensorcodecs.tfrecord."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import crc32c
import numpy as np

from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow.types_pb2 import DT_FLOAT, DT_INT32
from protos.tensorflow_serving.predict_pb2 import PredictRequest
from protos.tensorflow_serving.prediction_log_pb2 import PredictionLog, PredictLog

_DTYPES = {np.dtype(np.int32): DT_INT32, np.dtype(np.float32): DT_FLOAT}


def masked_crc(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord record (record_writer.cc)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def tensor(array: np.ndarray) -> TensorProto:
    """What tf.make_tensor_proto makes of a numpy array: dtype, shape and tensor_content."""
    proto = TensorProto(dtype=_DTYPES[array.dtype], tensor_content=array.tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def predict_log(inputs: Mapping[str, np.ndarray], model: str = "model",
                signature: str = "serving_default") -> PredictionLog:
    request = PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tensor(array))
    return PredictionLog(predict_log=PredictLog(request=request))


def write_warmup(path: Path, records: Iterable[PredictionLog | bytes]) -> Path:
    """A TFRecord file of `records` (logs, serialized; bytes as they are) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(frame(r if isinstance(r, bytes) else r.SerializeToString()) for r in records))
    return path


def int_logs(*values: int, model: str = "model") -> list[PredictionLog]:
    """One predict log per value: input `x`, int32 [1]."""
    return [predict_log({"x": np.array([v], dtype=np.int32)}, model) for v in values]
