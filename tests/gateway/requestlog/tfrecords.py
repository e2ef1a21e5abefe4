"""An independent TFRecord reader for the tests (the `crc32c` package, not the gateway's
framing code): every length and data checksum checked, records parsed as PredictionLog."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import crc32c
import orjson

from protos.tensorflow_serving import prediction_log_pb2


def _masked(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecord(path: Path) -> list[tuple[int, int, prediction_log_pb2.PredictionLog]]:
    """Each record of `path`: (offset, framed length, PredictionLog); AssertionError on any bad byte."""
    data = path.read_bytes()
    records = []
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 12]
        assert len(header) == 12, f"{path}: truncated header at {offset}"
        (length,) = struct.unpack("<Q", header[:8])
        assert struct.unpack("<I", header[8:])[0] == _masked(header[:8]), f"{path}: length CRC at {offset}"
        body = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        assert len(body) + len(footer) == length + 4, f"{path}: truncated record at {offset}"
        assert struct.unpack("<I", footer)[0] == _masked(body), f"{path}: data CRC at {offset}"
        record = prediction_log_pb2.PredictionLog()
        record.ParseFromString(body)
        records.append((offset, length + 16, record))
        offset += length + 16
    return records


def read_index(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def closed_files(directory: Path) -> list[Path]:
    """The closed .tfrecord files of `directory`, oldest first (their names sort by time)."""
    return sorted(directory.glob("requests-*.tfrecord"))


def index_of(records: Path) -> Path:
    return records.with_name(records.name.removesuffix(".tfrecord") + ".index.jsonl")
