"""`gateway logs warmup`: a request log turned into a TF Serving warmup file (a TFRecord file of
`PredictionLog`s, `assets.extra/tf_serving_warmup_requests`' format): only one model's answered
calls, since a record replayed as warmup fails as its call failed, and at most TF Serving's 1,000."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.requestlog.reading import PARTIAL, LogFileError, LogRecord, read_log
from modelfolder.warmup import MAX_RECORDS
from tensorcodecs.tfrecord import encode_record


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The `--model NAME[:VERSION]` the records are taken from (version None: any)."""

    name: str
    version: int | None = None

    def takes(self, record: LogRecord) -> bool:
        spec = record.record.predict_log.request.model_spec
        return spec.name == self.name and (self.version is None or spec.version.value == self.version)


def model_choice(text: str) -> ModelChoice:
    """`NAME` or `NAME:VERSION` (argparse type)."""
    name, colon, version = text.rpartition(":") if ":" in text else (text, "", "")
    if not name or (colon and not version.isdigit()):
        raise ValueError(f"must be NAME or NAME:VERSION (a whole number), got {text!r}")
    return ModelChoice(name, int(version) if colon else None)


def write_warmup(path: Path, destination: Path, *, model: ModelChoice | None = None, limit: int = MAX_RECORDS,
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write the answered calls of `path` (a log file or directory) to `destination` as a warmup
    file, through `destination.partial` renamed when complete. 0 written; 1 nothing to write,
    or a file with a corrupt record (the records before it are written); 2 `path` cannot be
    read, or it holds calls of several models and `model` does not say which."""
    out = out or sys.stdout
    err = err or sys.stderr
    failures: list[LogFileError] = []
    skipped: Counter[str] = Counter()
    unindexed: set[Path] = set()

    def fail(error: LogFileError) -> None:
        failures.append(error)
        print(f"gateway logs warmup: {error}", file=err)

    def warn(message: str) -> None:
        print(f"gateway logs warmup: warning: {message}", file=err)

    taken: list[LogRecord] = []
    over = 0
    models: Counter[str] = Counter()
    for record in read_log(path, warn=warn, fail=fail):
        reason = _refused(record)
        if reason is not None:
            skipped[reason] += 1
            continue
        if not record.indexed and record.path not in unindexed:
            unindexed.add(record.path)
            warn(f"{record.path} has no index: every record is taken, answered or not (a failed call's "
                 "record fails the warmup as the call failed)")
        if model is not None and not model.takes(record):
            skipped["calls of other models"] += 1
            continue
        spec = record.record.predict_log.request.model_spec
        models[spec.name] += 1
        if len(taken) < limit:  # the rest only counted: memory bounded by `limit`, not by the log
            taken.append(record)
        else:
            over += 1
    if failures and not taken and all(error.shown == 0 for error in failures):
        return 2
    if model is None and len(models) > 1:
        print(f"gateway logs warmup: {path} holds calls of several models ("
              + ", ".join(f"{name} x{count}" for name, count in sorted(models.items()))
              + "): say which with --model NAME[:VERSION]", file=err)
        return 2
    if over:
        skipped[f"more than {limit}"] += over
    for reason, count in sorted(skipped.items()):
        print(f"  skipped {count} record(s): {reason}", file=out)
    if not taken:
        print(f"gateway logs warmup: {path} has no answered call to write", file=err)
        return 1
    try:
        _write(destination, taken)
    except OSError as error:
        print(f"gateway logs warmup: cannot write {destination}: {error.strerror or error}", file=err)
        return 2
    name = model.name if model is not None else next(iter(models))
    print(f"wrote {len(taken)} record(s) of model {name} to {destination}", file=out)
    return 1 if failures else 0


def _refused(record: LogRecord) -> str | None:
    """Why `record` is not warmup (None: it is)."""
    log = record.record
    if log.WhichOneof("log_type") != "predict_log":
        return f"not a predict log ({log.WhichOneof('log_type')})"
    if not record.indexed:
        return None
    if record.entry is None:
        return "no index line (cannot tell whether it was answered)"
    if record.entry.get("status") != 200 or not log.predict_log.HasField("response"):
        return "failed calls"
    return None


def _write(destination: Path, records: list[LogRecord]) -> None:
    """The records framed as TFRecord in `destination.partial`, renamed to `destination` once
    complete and on disk: a warmup reading it never sees half a file."""
    partial = destination.with_name(destination.name + PARTIAL)
    try:
        with partial.open("wb") as stream:
            for record in records:
                stream.write(encode_record(record.record.SerializeToString()))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
