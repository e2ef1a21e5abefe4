"""TFRecord framing, as TensorFlow writes and reads it (tensorflow/core/lib/io/record_writer.cc).

A file is a sequence of records, each:

    uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes
    | data (length bytes) | uint32 masked CRC32C of the data

with the mask `((crc >> 15) | (crc << 17)) + 0xa282ead8` (mod 2**32). TF Serving's warmup files
(`assets.extra/tf_serving_warmup_requests`) and the gateway's request logs are TFRecords of
serialized `PredictionLog`s. Pure: bytes in, bytes out; the reader takes any binary stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

MASK_DELTA = 0xA282EAD8
HEADER_BYTES = 12  # length + its CRC
FOOTER_BYTES = 4  # the data's CRC
OVERHEAD_BYTES = HEADER_BYTES + FOOTER_BYTES
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


class TFRecordError(ValueError):
    """A stream that is not a well-formed TFRecord: truncated, or a checksum that does not match.
    `offset` is where the bad record starts, `index` its number (0-based)."""

    def __init__(self, message: str, offset: int, index: int) -> None:
        super().__init__(message)
        self.offset = offset
        self.index = index


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C TFRecord stores for `data`."""
    crc = int(google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data))
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    """`data` framed as one TFRecord record (len(data) + 16 bytes)."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc(length)), data, _CRC.pack(masked_crc(data))))


def read_records(stream: BinaryIO, *, max_record_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Each record of `stream` with the offset it starts at (relative to where the stream
    was), checksums checked; TFRecordError for a truncated or corrupt record (or one longer
    than `max_record_bytes`, before reading it). An empty stream has no records."""
    offset = 0
    index = 0
    while True:
        header = stream.read(HEADER_BYTES)
        if not header:
            return
        if len(header) < HEADER_BYTES:
            raise TFRecordError(f"record {index} at byte {offset} is truncated (its header has "
                                f"{len(header)} of {HEADER_BYTES} bytes)", offset, index)
        (length,) = _LENGTH.unpack_from(header)
        (length_crc,) = _CRC.unpack_from(header, 8)
        if masked_crc(header[:8]) != length_crc:
            raise TFRecordError(f"record {index} at byte {offset}: the length's checksum does not match "
                                "(not a TFRecord file, or corrupt)", offset, index)
        if max_record_bytes is not None and length > max_record_bytes:
            raise TFRecordError(f"record {index} at byte {offset} has {length} bytes, more than the "
                                f"{max_record_bytes} allowed", offset, index)
        body = stream.read(length + FOOTER_BYTES)
        if len(body) < length + FOOTER_BYTES:
            raise TFRecordError(f"record {index} at byte {offset} is truncated ({len(body)} of "
                                f"{length + FOOTER_BYTES} bytes after its header)", offset, index)
        data = body[:length]
        (data_crc,) = _CRC.unpack_from(body, length)
        if masked_crc(data) != data_crc:
            raise TFRecordError(f"record {index} at byte {offset}: the data's checksum does not match "
                                "(corrupt)", offset, index)
        yield offset, data
        offset += HEADER_BYTES + length + FOOTER_BYTES
        index += 1
