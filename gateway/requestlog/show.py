"""`gateway logs show`: a request log (or warmup file) printed for a person, as TF Serving's
request-log view prints it (the request, then the outputs, in protobuf text format), or as one
JSON object per record for `jq`."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from gateway.requestlog.reading import LogFileError, LogRecord, decode, read_log, record_label
from gateway.requestlog.records import INDEX_FIELDS
from protos.tensorflow import tensor_pb2
from protos.tensorflow_serving import model_pb2, predict_pb2, prediction_log_pb2
from tensorcodecs import CodecError
from tensorcodecs.json_codec import to_json_value

BANNER_WIDTH = 100  # the seed's request-log view
MAX_BYTES_SHOWN = 64  # of one tensor_content or string element in the text format
MAX_VALUES_SHOWN = 10  # of one repeated value field (float_val, ...) in the text format
_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "string_val", "scomplex_val", "int64_val",
                 "bool_val", "dcomplex_val", "uint32_val", "uint64_val")


def show(path: Path, *, limit: int | None = None, as_json: bool = False, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """Print the records of `path` (a log file, a warmup file or a directory of logs), the first
    `limit` of them. 0 when all were read; 1 when a file had a corrupt record (those before it
    were printed); 2 when nothing could be read (a missing file, not a TFRecord file)."""
    out = out or sys.stdout
    err = err or sys.stderr
    failures: list[LogFileError] = []

    def fail(error: LogFileError) -> None:
        failures.append(error)
        print(f"gateway logs show: {error}", file=err)

    def warn(message: str) -> None:
        print(f"gateway logs show: warning: {message}", file=err)

    shown = 0
    with_file = path.is_dir()
    try:
        for record in read_log(path, warn=warn, fail=fail):
            if limit is not None and shown >= limit:
                break
            out.write(json_line(record) if as_json else text(record, with_file=with_file))
            shown += 1
        out.flush()
    except BrokenPipeError:  # `gateway logs show FILE | head`: the reader has seen enough
        if out is sys.stdout:  # no flush at exit onto the closed pipe (Python's documented remedy)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # Ctrl-C: no traceback; 130 as a shell reports SIGINT
        out.flush()
        return 130
    if not failures:
        return 0
    return 2 if shown == 0 and all(error.shown == 0 for error in failures) else 1


# ---------------------------------------------------------------- readable


def text(record: LogRecord, *, with_file: bool = False) -> str:
    """One record as the request-log view prints it: a header line, the request between
    `request logs` banners, then the outputs (or the error) between `outputs` banners; each
    tensor also decoded, as numpy prints it summarised."""
    lines = [header(record, with_file=with_file)]
    log = record.record
    if log.WhichOneof("log_type") != "predict_log":
        lines += [_banner(log.WhichOneof("log_type") or "record"), _text_format(log), _banner("end"), ""]
        return "\n".join(lines) + "\n"
    request = predict_pb2.PredictRequest()
    request.CopyFrom(log.predict_log.request)
    shown = prediction_log_pb2.PredictionLog()
    shown.predict_log.request.CopyFrom(request)
    lines += [_banner("request logs"), _text_format(shown), _banner("end")]
    lines += _decoded(request.inputs)
    entry = record.entry or {}
    if log.predict_log.HasField("response"):
        response = log.predict_log.response
        lines += [_banner("outputs"), _text_format(response), _banner("end")]
        lines += _decoded(response.outputs)
    elif entry.get("error") is not None:
        lines += [_banner("error"), f"status {entry.get('status')}: {entry['error']}", _banner("end")]
    else:
        lines += [_banner("outputs"), "no response (the call failed, or the log was written without answers)",
                  _banner("end")]
    lines.append("")
    return "\n".join(lines) + "\n"


def header(record: LogRecord, *, with_file: bool = False) -> str:
    """`record N (offset O, L bytes)` (after the file's name `with_file`) and, from the index,
    the request id, time, status, application/stage/variant and duration; else the model spec."""
    parts = [f"{record_label(record, with_file=with_file)} (offset {record.offset}, {record.length} bytes)"]
    entry = record.entry
    if entry is None:
        spec = _spec_of(record.record)
        if spec is not None:
            parts.append(_spec_label(spec))
        return "  ".join(parts)
    parts += [f"request {entry.get('request_id')}", str(entry.get("time")), f"status {entry.get('status')}"]
    if entry.get("application") is not None:
        parts.append(f"application {entry['application']} stage {entry.get('stage')} "
                     f"variant {entry.get('variant')}")
    else:
        version = entry.get("version")
        parts.append(f"model {entry.get('model')}" + ("" if version is None else f":{version}"))
    parts.append(f"{entry.get('duration_ms')} ms")
    return "  ".join(parts)


def _banner(title: str) -> str:
    return title.center(BANNER_WIDTH, "*")


def _text_format(message: Message) -> str:
    return text_format.MessageToString(message, message_formatter=_short_tensor).rstrip("\n")


def _short_tensor(message: Message, indent: int, as_one_line: bool) -> str | None:
    """A TensorProto's text with its long `tensor_content`, long strings and long value
    lists cut (a comment says how much there is): a large tensor must not flood the terminal."""
    if not isinstance(message, tensor_pb2.TensorProto):
        return None
    cut = tensor_pb2.TensorProto()
    cut.CopyFrom(message)
    notes = []
    content = message.tensor_content
    if len(content) > MAX_BYTES_SHOWN:
        cut.tensor_content = content[:MAX_BYTES_SHOWN]
        notes.append(f"tensor_content: {len(content)} bytes, the first {MAX_BYTES_SHOWN} shown")
    for field in _VALUE_FIELDS:
        values = getattr(message, field)
        if len(values) > MAX_VALUES_SHOWN:
            del getattr(cut, field)[MAX_VALUES_SHOWN:]
            notes.append(f"{field}: {len(values)} values, the first {MAX_VALUES_SHOWN} shown")
    long_strings = [i for i, value in enumerate(cut.string_val) if len(value) > MAX_BYTES_SHOWN]
    for i in long_strings:
        cut.string_val[i] = cut.string_val[i][:MAX_BYTES_SHOWN]
    if long_strings:
        notes.append(f"string_val: {len(long_strings)} value(s) longer than {MAX_BYTES_SHOWN} bytes cut")
    body = text_format.MessageToString(cut, indent=indent, as_one_line=as_one_line)
    if as_one_line:
        return body.rstrip()
    # the printer indents the first line and ends the last one itself
    return (body[indent:] + "".join(f"{' ' * indent}# {note}\n" for note in notes)).rstrip("\n")


def _decoded(tensors: Mapping[str, tensor_pb2.TensorProto]) -> list[str]:
    """Each tensor as numpy prints it, summarised (`[0 1 2 ... 997 998 999]`), long bytes cut."""
    lines = []
    with np.printoptions(threshold=20, edgeitems=3, linewidth=BANNER_WIDTH):
        for name in sorted(tensors):
            try:
                array = decode(tensors[name])
            except (CodecError, ValueError) as error:
                lines.append(f"  {name}: cannot be decoded: {error}")
                continue
            shape = "scalar" if array.ndim == 0 else str(list(array.shape))
            dtype = "string" if array.dtype.kind in "OSU" else str(array.dtype)
            shown = _cut_bytes(array) if array.dtype.kind in "OSU" else array
            value = np.array2string(shown, prefix=" " * 4, separator=" " if array.dtype.kind in "biufc" else ", ")
            lines.append(f"  {name} ({dtype}, {shape}): {value}")
    return lines


def _cut_bytes(array: np.ndarray) -> np.ndarray:
    """The string elements cut to MAX_BYTES_SHOWN bytes (`b'aaaa...'` + `...`)."""
    cut = np.empty(array.shape, dtype=object)
    for where, value in np.ndenumerate(array):
        data = value if isinstance(value, bytes) else str(value).encode()
        cut[where] = data if len(data) <= MAX_BYTES_SHOWN else data[:MAX_BYTES_SHOWN] + b"..."
    return cut


def _spec_of(log: prediction_log_pb2.PredictionLog) -> model_pb2.ModelSpec | None:
    kind = log.WhichOneof("log_type")
    if kind is None:
        return None
    request = getattr(getattr(log, kind), "request", None)
    return request.model_spec if request is not None and request.HasField("model_spec") else None


def _spec_label(spec: model_pb2.ModelSpec) -> str:
    label = f"model {spec.name}"
    if spec.HasField("version"):
        label += f":{spec.version.value}"
    elif spec.version_label:
        label += f"@{spec.version_label}"
    if spec.signature_name:
        label += f" signature {spec.signature_name}"
    return label


# ---------------------------------------------------------------- JSON


def json_line(record: LogRecord) -> str:
    """One record as one JSON line: where it is, its index line's fields (null when it has
    none, so every line has the same keys), the model spec, and the inputs and outputs as the
    gateway's native JSON values (`{"b64": ...}` for bytes that are not UTF-8; NaN and
    infinities as null)."""
    document: dict[str, Any] = {"file": str(record.path), "record": record.number}
    document.update(dict.fromkeys(INDEX_FIELDS))
    if record.entry is not None:
        document.update(record.entry)
    document.update(offset=record.offset, length=record.length)  # the file's, even if the index disagrees
    log = record.record
    kind = log.WhichOneof("log_type")
    document["kind"] = kind
    if kind != "predict_log":
        document["log"] = json_format.MessageToDict(log)
        return orjson.dumps(document).decode() + "\n"
    request = log.predict_log.request
    document["model_spec"] = spec_json(request.model_spec) if request.HasField("model_spec") else None
    document["inputs"] = tensors_json(request.inputs)
    document["output_filter"] = list(request.output_filter)
    response = log.predict_log.response if log.predict_log.HasField("response") else None
    document["outputs"] = tensors_json(response.outputs) if response is not None else None
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n"


def spec_json(spec: model_pb2.ModelSpec) -> dict[str, Any]:
    """A ModelSpec as `{"name", "version", "version_label", "signature_name"}` (null when unset)."""
    return {"name": spec.name, "version": spec.version.value if spec.HasField("version") else None,
            "version_label": spec.version_label or None, "signature_name": spec.signature_name or None}


def tensors_json(tensors: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, Any]:
    """`{name: value}` as the native API writes values (orjson with OPT_SERIALIZE_NUMPY writes them);
    a tensor that cannot be decoded as `{"error": ...}`."""
    values: dict[str, Any] = {}
    for name in sorted(tensors):
        try:
            values[name] = to_json_value(decode(tensors[name]))
        except (CodecError, ValueError) as error:
            values[name] = {"error": str(error)}
    return values
