"""Warmup files, in TF Serving's format (`assets.extra/tf_serving_warmup_requests`): a TFRecord
file of serialized `PredictionLog`s, replayed against a model version before it takes traffic.

TF Serving's limits and rules (servables/tensorflow/saved_model_warmup_util.cc): at most
`MAX_RECORDS` records (more is an error, not a truncation), a record that does not parse is an
error, and so is a log type warmup cannot replay (session_run_log). A `predict_streamed_log`
with exactly one request is replayed as a Predict of it (tfrt_saved_model_warmup.cc); a record
with no log type is refused, as the TFRT warmup refuses it (the classic one skips it silently,
which would hide a broken file). Record numbers in messages are 1-based (the first record of a
file is record 1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from protos.tensorflow_serving.predict_pb2 import PredictRequest
from protos.tensorflow_serving.prediction_log_pb2 import PredictionLog
from tensorcodecs.tfrecord import TFRecordError, read_records

MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords
ASSETS_FILE = Path("assets.extra") / "tf_serving_warmup_requests"  # a SavedModel's own warmup file
# The log types a warmup replays (TF's RunWarmupRequest); the others are refused.
SUPPORTED = ("predict_log", "predict_streamed_log", "classify_log", "regress_log", "multi_inference_log")
PREDICT_KINDS = ("predict_log", "predict_streamed_log")  # both replayed as a Predict
_SESSION_RUN_LOG = 5  # PredictionLog's field TF Serving itself refuses for warmup (not declared here)
_RECORD_PREFIX = re.compile(r"^record \d+ at byte \d+:? ?")


WarmupStamp = tuple[str, int, int] | None  # a warmup file's path, modification time and size


def stamp(path: Path | None) -> WarmupStamp:
    """What tells a changed warmup file from the one read before (None: no file, or unreadable)."""
    if path is None:
        return None
    try:
        status = path.stat()
    except OSError:
        return None
    return str(path), status.st_mtime_ns, status.st_size


class WarmupError(Exception):
    """A warmup that failed: the file, the record (1-based; None: the file as a whole) and why."""

    def __init__(self, path: Path, record: int | None, reason: str) -> None:
        where = f"record {record} of {path}" if record is not None else str(path)
        super().__init__(f"warmup failed at {where}: {reason}")
        self.path = path
        self.record = record
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WarmupRecord:
    """One record of a warmup file: its number (1-based) and the log it holds."""

    number: int
    log: PredictionLog

    @property
    def kind(self) -> str:
        """The log type: one of SUPPORTED."""
        return str(self.log.WhichOneof("log_type"))

    @property
    def predict_request(self) -> PredictRequest | None:
        """The Predict this record replays (a predict_log's request, or a predict_streamed_log's
        only one); None for the other log types."""
        if self.kind == "predict_log":
            return self.log.predict_log.request
        if self.kind == "predict_streamed_log":
            return self.log.predict_streamed_log.request[0]
        return None


def read_warmup(path: Path, *, max_records: int = MAX_RECORDS) -> list[WarmupRecord]:
    """Every record of the warmup file `path`, checked (framing and checksums, PredictionLog,
    a supported log type, at most `max_records`); WarmupError naming the record otherwise."""
    records: list[WarmupRecord] = []
    try:
        with path.open("rb") as stream:
            for index, (offset, data) in enumerate(_records(path, stream)):
                number = index + 1
                if number > max_records:
                    raise WarmupError(path, None, f"the number of warmup records exceeds the maximum "
                                                  f"({max_records}), as TF Serving refuses it")
                records.append(WarmupRecord(number, _parse(path, number, offset, data)))
    except OSError as error:
        raise WarmupError(path, None, f"cannot read it: {error.strerror or error}") from None
    return records


def _records(path: Path, stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The file's records, a framing error raised as a WarmupError naming its record."""
    try:
        yield from read_records(stream)
    except TFRecordError as error:
        detail = _RECORD_PREFIX.sub("", str(error))
        raise WarmupError(path, error.index + 1, f"at byte {error.offset}: {detail}") from None


def _parse(path: Path, number: int, offset: int, data: bytes) -> PredictionLog:
    log = PredictionLog()
    try:
        log.ParseFromString(data)
    except DecodeError:
        raise WarmupError(path, number, f"the record at byte {offset} is not a PredictionLog") from None
    kind: str | None = log.WhichOneof("log_type")
    if kind == "predict_streamed_log":
        count = len(log.predict_streamed_log.request)
        if count == 0:  # TFRT's messages
            raise WarmupError(path, number, "predict_streamed_log does not contain any requests.")
        if count > 1:
            raise WarmupError(path, number, "predict_streamed_log contains more than one request, which is "
                                            "not supported by PredictStreamed.")
    if kind in SUPPORTED:
        return log
    unknown = UnknownFieldSet(log)
    if kind is None and any(unknown[i].field_number == _SESSION_RUN_LOG for i in range(len(unknown))):
        kind = "session_run_log"
    reason = "it has no log type" if kind is None else f"unsupported log type {kind} for warmup"
    raise WarmupError(path, number, f"{reason} (supported: {', '.join(SUPPORTED)})")
