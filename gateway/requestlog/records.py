"""A logged call as TF Serving's `PredictionLog` (the TFRecord's record) and as the JSON-lines
index entry beside it (what TF's messages have no field for). Pure, run by the writer threads."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np

from gateway.requestlog.call import LoggedCall
from protos.tensorflow_serving import model_pb2, prediction_log_pb2
from tensorcodecs.tensor_proto import encode_tensor

# The index's fields, in the order each line has them.
INDEX_FIELDS = ("offset", "length", "request_id", "time", "duration_ms", "status", "error", "application",
                "stage", "variant", "model", "version")


def model_spec(call: LoggedCall) -> model_pb2.ModelSpec:
    """The spec of the model version that ran: the gateway's model name, its version, the signature."""
    spec = model_pb2.ModelSpec(name=call.model, signature_name=call.signature_name)
    if call.version is not None:
        spec.version.value = call.version
    return spec


def prediction_log(call: LoggedCall) -> prediction_log_pb2.PredictionLog:
    """`call` as a PredictionLog: `predict_log` with the request (model spec, inputs, output
    filter) and, when the call was answered, the response; `log_metadata.model_spec`."""
    spec = model_spec(call)
    record = prediction_log_pb2.PredictionLog()
    record.log_metadata.model_spec.CopyFrom(spec)
    request = record.predict_log.request
    request.model_spec.CopyFrom(spec)
    _fill(request.inputs, call.inputs)
    request.output_filter.extend(call.output_filter)
    if call.outputs is not None:
        response = record.predict_log.response
        response.model_spec.CopyFrom(spec)
        _fill(response.outputs, call.outputs)
    return record


def _fill(tensors: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        tensors[name].CopyFrom(encode_tensor(np.asarray(array)))


def index_entry(call: LoggedCall, offset: int, length: int) -> dict[str, Any]:
    """The index line of `call`'s record, which starts at `offset` of its TFRecord file and
    takes `length` bytes there (framing included)."""
    values = (offset, length, call.request_id, iso_time(call.time), round(call.duration_s * 1000, 3),
              call.status, call.error, call.application, call.stage, call.variant, call.model, call.version)
    return dict(zip(INDEX_FIELDS, values, strict=True))


def iso_time(seconds: float) -> str:
    """`seconds` since the epoch as RFC 3339 UTC with microseconds (`2026-12-01T16:20:30.123456Z`)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
