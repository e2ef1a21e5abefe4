"""TFRecord framing against an independent CRC32C (the `crc32c` package) and TF's known bytes."""

from __future__ import annotations

import io
import struct

import crc32c
import pytest

from tensorcodecs.tfrecord import OVERHEAD_BYTES, TFRecordError, encode_record, masked_crc, read_records


def _masked(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_masked_crc_is_tensorflows() -> None:
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        assert masked_crc(data) == _masked(data)


def test_a_record_is_length_crc_data_crc() -> None:
    data = b"\x08\x01hello"
    record = encode_record(data)
    assert len(record) == len(data) + OVERHEAD_BYTES
    (length,) = struct.unpack_from("<Q", record)
    assert length == len(data)
    assert struct.unpack_from("<I", record, 8)[0] == _masked(record[:8])
    assert record[12:12 + length] == data
    assert struct.unpack_from("<I", record, 12 + length)[0] == _masked(data)


def test_an_empty_record_has_tensorflows_bytes() -> None:
    # tf.io.TFRecordWriter writing b"": eight zero bytes, then the masked CRCs of those and of b"".
    assert encode_record(b"") == bytes(8) + struct.pack("<I", _masked(bytes(8))) + struct.pack("<I", _masked(b""))


def test_records_are_read_back_with_their_offsets() -> None:
    payloads = [b"first", b"", b"x" * 70_000]
    stream = io.BytesIO(b"".join(encode_record(p) for p in payloads))
    read = list(read_records(stream))
    assert [data for _, data in read] == payloads
    assert [offset for offset, _ in read] == [0, 5 + OVERHEAD_BYTES, 5 + 2 * OVERHEAD_BYTES]
    assert list(read_records(io.BytesIO(b""))) == []


@pytest.mark.parametrize(("cut", "words"), [(5, "header has 5 of 12"), (20, "truncated")])
def test_a_truncated_record_is_named(cut: int, words: str) -> None:
    data = encode_record(b"ok") + encode_record(b"0123456789")[:cut]
    with pytest.raises(TFRecordError, match=words) as caught:
        list(read_records(io.BytesIO(data)))
    assert (caught.value.index, caught.value.offset) == (1, 2 + OVERHEAD_BYTES)


def test_a_corrupt_byte_fails_its_checksum() -> None:
    record = bytearray(encode_record(b"payload"))
    record[14] ^= 0xFF
    with pytest.raises(TFRecordError, match="data's checksum"):
        list(read_records(io.BytesIO(bytes(record))))
    with pytest.raises(TFRecordError, match="length's checksum"):
        list(read_records(io.BytesIO(b"not a tfrecord file at all")))


def test_a_record_over_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(TFRecordError, match="more than the 10 allowed"):
        list(read_records(io.BytesIO(encode_record(b"x" * 11)), max_record_bytes=10))
