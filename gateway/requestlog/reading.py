"""Reading request logs back: the TFRecord files of `PredictionLog`s a file sink wrote (closed or
still `.partial`), or any warmup file, with the JSON-lines index beside them when there is one.
What `gateway logs show` and `gateway logs replay` both read."""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from google.protobuf.message import DecodeError

from gateway.settings import Settings
from protos.tensorflow import tensor_pb2
from protos.tensorflow_serving import prediction_log_pb2
from tensorcodecs import CodecError
from tensorcodecs.tensor_proto import decode_tensor, shape_elements
from tensorcodecs.tfrecord import FOOTER_BYTES, HEADER_BYTES, OVERHEAD_BYTES, TFRecordError, masked_crc, read_records

PARTIAL = ".partial"
TFRECORD = ".tfrecord"
INDEX = ".index.jsonl"
MAX_ELEMENTS = Settings().max_elements  # of one tensor decoded: the gateway's default `limits.max_elements`
_RECORD_NUMBER = re.compile(r"^record \d+")  # TFRecordError's own, 0-based


class LogFileError(Exception):
    """A file that cannot be read as a log: missing, not a TFRecord file, or a corrupt record.
    `shown` is how many of its records were read before the error (0: nothing was)."""

    def __init__(self, message: str, shown: int = 0) -> None:
        super().__init__(message)
        self.shown = shown


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of a log file: its number (1-based, as warmup errors count) and place in
    the file, the `PredictionLog`, and its index line when the file has an index that names it
    (`indexed`: the file has an index, so a record without a line is one it does not know)."""

    path: Path
    number: int
    offset: int
    length: int  # framing included, as the index counts it
    record: prediction_log_pb2.PredictionLog
    entry: dict[str, Any] | None
    indexed: bool = False


def record_label(record: LogRecord, *, with_file: bool) -> str:
    """`record N`, `<file name> record N` when records of several files are shown."""
    return f"{record.path.name} record {record.number}" if with_file else f"record {record.number}"


def log_files(path: Path) -> list[Path]:
    """The files `path` names: itself (its log when it is an index), or for a directory its
    `*.tfrecord` and `*.tfrecord.partial` files in the order they were opened (the names start
    with the time; `.partial` ignored)."""
    if path.is_dir():
        files = [child for child in path.iterdir() if child.is_file()
                 and (child.name.endswith(TFRECORD) or child.name.endswith(TFRECORD + PARTIAL))]
        if not files:  # a wrong directory must not look like an empty log
            raise LogFileError(f"{path} has no .tfrecord files")
        return sorted(files, key=lambda child: (child.name.removesuffix(PARTIAL), child.name))
    for index in (INDEX, INDEX + PARTIAL):  # an index named for its log: read the log
        if path.name.endswith(index):
            path = path.with_name(path.name.removesuffix(index) + TFRECORD + index.removeprefix(INDEX))
    if not path.exists():
        closed = path.with_name(path.name.removesuffix(PARTIAL))
        if path.name.endswith(PARTIAL) and closed.exists():  # renamed since it was named: read it closed
            return [closed]
        raise LogFileError(f"{path}: no such file or directory")
    return [path]


def index_path(path: Path) -> Path | None:
    """The index beside `path`: `X.tfrecord` -> `X.index.jsonl`; a `.partial` file's index may
    be closed already (the index is renamed first) or still `.partial`. None: there is none."""
    name = path.name
    partial = name.endswith(PARTIAL)
    stem = name.removesuffix(PARTIAL)
    if not stem.endswith(TFRECORD):
        return None
    base = stem.removesuffix(TFRECORD) + INDEX
    for candidate in ((base + PARTIAL, base) if partial else (base,)):
        if (path.parent / candidate).exists():
            return path.parent / candidate
    return None


def read_index(path: Path, *, partial: bool) -> dict[int, dict[str, Any]]:
    """The index's lines by the offset of their record. A `.partial` index may end mid-line
    (the writer is at it): that line is left out; a bad line elsewhere is an error."""
    entries: dict[int, dict[str, Any]] = {}
    try:
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:
            if not partial:
                raise
            lines = path.with_name(path.name.removesuffix(PARTIAL)).read_bytes().split(b"\n")  # closed since
    except OSError as error:
        raise LogFileError(f"{path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            offset = entry["offset"]
        except (ValueError, TypeError, KeyError):
            if partial and number == len(lines):
                break
            raise LogFileError(f"{path}:{number}: not an index line (a JSON object with an offset)") from None
        if isinstance(offset, int):
            entries[offset] = entry
    return entries


class LogReader:
    """The records of one log file, in order. Problems with the index of a closed file (a line
    that matches no record, a record without a line) go to `warn` once the file was read."""

    def __init__(self, path: Path, *, warn: Callable[[str], None]) -> None:
        self.path = path
        self.partial = path.name.endswith(PARTIAL)
        self._warn = warn
        where = index_path(path)
        self.has_index = where is not None
        self.entries = read_index(where, partial=where.name.endswith(PARTIAL)) if where is not None else {}
        self.index = where
        self._reread = False

    def __iter__(self) -> Iterator[LogRecord]:
        try:
            stream = self.path.open("rb")
        except FileNotFoundError:
            closed = self.path.with_name(self.path.name.removesuffix(PARTIAL))
            if not self.partial or not closed.exists():
                raise LogFileError(f"{self.path}: no such file") from None
            stream = closed.open("rb")  # closed between listing and opening
        except OSError as error:
            raise LogFileError(f"{self.path}: {error.strerror or error}") from None
        with stream:
            yield from self._records(stream)

    def _records(self, stream: BinaryIO) -> Iterator[LogRecord]:
        count = 0
        unmatched = 0
        used: set[int] = set()
        try:
            for offset, data in read_records(stream):
                record = prediction_log_pb2.PredictionLog()
                try:
                    record.ParseFromString(data)
                except DecodeError:
                    raise LogFileError(f"{self.path}: record {count + 1} at byte {offset} is not a PredictionLog",
                                       count) from None
                entry = self._entry(offset)
                length = len(data) + OVERHEAD_BYTES
                if entry is not None and entry.get("length") != length:
                    entry = None
                if entry is not None:
                    used.add(offset)
                elif self.has_index:
                    unmatched += 1
                yield LogRecord(self.path, count + 1, offset, length, record, entry, self.has_index)
                count += 1
        except TFRecordError as error:
            detail = _RECORD_NUMBER.sub(f"record {error.index + 1}", str(error))
            if self.partial and _cut_short(stream, error.offset):
                count = error.index  # the writer is mid-record: the file ends before it
            elif error.index == 0:
                raise LogFileError(f"{self.path} is not a TFRecord file of PredictionLogs ({detail})") from None
            else:
                raise LogFileError(f"{self.path}: {detail}", error.index) from None
        if self.partial:  # the index may lag its records, or be ahead of a record still being written
            return
        extra = len(self.entries) - len(used)
        problems = []
        if unmatched:
            problems.append(f"{unmatched} record(s) have no line in it")
        if extra:
            problems.append(f"{extra} of its line(s) match no record")
        if problems:
            self._warn(f"{self.index}: the index disagrees with {self.path.name}: {', '.join(problems)}; "
                       "records are shown as the file has them")


    def _entry(self, offset: int) -> dict[str, Any] | None:
        """The index line of the record at `offset`; a `.partial` index lags its records (it is
        append-only), so past its last line it is read again, once."""
        entry = self.entries.get(offset)
        if (entry is None and self.partial and self.index is not None and not self._reread
                and offset > max(self.entries, default=-1)):
            self._reread = True
            self.entries = read_index(self.index, partial=self.index.name.endswith(PARTIAL))
            entry = self.entries.get(offset)
        return entry


def _cut_short(stream: BinaryIO, offset: int) -> bool:
    """Whether the record at `offset` is one the file ends in the middle of (or that was
    finished since it was read) rather than a corrupt one."""
    size = os.fstat(stream.fileno()).st_size
    stream.seek(offset)
    header = stream.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return True
    (length,) = struct.unpack_from("<Q", header)
    if masked_crc(header[:8]) != struct.unpack_from("<I", header, 8)[0]:
        return False
    if offset + HEADER_BYTES + length + FOOTER_BYTES > size:
        return True
    body = stream.read(length + FOOTER_BYTES)
    return bool(masked_crc(body[:length]) == struct.unpack_from("<I", body, length)[0])


def read_log(path: Path, *, warn: Callable[[str], None],
             fail: Callable[[LogFileError], None]) -> Iterator[LogRecord]:
    """Every record of the files `path` names (`log_files`), in order. A file that cannot be
    read is handed to `fail` (after the records before its error) and the next one is read."""
    try:
        files = log_files(path)
    except LogFileError as error:
        fail(error)
        return
    for file in files:
        try:
            yield from LogReader(file, warn=warn)
        except LogFileError as error:
            fail(error)


def decode(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """`decode_tensor`, refusing (CodecError) a shape of more than MAX_ELEMENTS elements before
    allocating it: a corrupt or hand-made record must not take the memory of the machine."""
    elements = shape_elements(tensor)
    if elements > MAX_ELEMENTS:
        raise CodecError(f"too large to decode ({elements} elements)")
    return decode_tensor(tensor)
