"""The local wire's attachment table: tensors' bytes after a frame's message."""

from __future__ import annotations

import numpy as np
import pytest

from protos.local_wire import ALIGN, ENTRY, Attachments, WireError, encode_table, split_attachment
from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from protos.shared_memory import SharedRegion, read_shared


def test_attachments_round_trip_by_item_and_name() -> None:
    sent = Attachments([(0, "x", np.arange(4, dtype="<f4")), (2, "größe", np.ones(3, dtype="<i8")),
                        (2, "y", np.zeros(0, dtype="<f8"))])
    attachment = bytearray(b"".join(bytes(buffer) for buffer in sent.buffers()))
    received = split_attachment(sent.table(), attachment)
    assert sorted(received) == [0, 2]
    assert np.frombuffer(received[0]["x"], "<f4").tolist() == [0, 1, 2, 3]
    assert np.frombuffer(received[2]["größe"], "<i8").tolist() == [1, 1, 1]
    assert received[2]["y"].nbytes == 0
    received[0]["x"][0] = 7  # views of the attachment, not copies
    assert attachment[0] == 7


@pytest.mark.parametrize(("table", "attachment", "words"), [
    (encode_table([(0, "x", 8)])[:ENTRY.size - 1], b"", "cut short"),
    (encode_table([(0, "x", 8)]), bytes(4), "the table needs more"),
    (encode_table([(0, "x", 4)]), bytes(8), "accounts for 4"),
    (b"", bytes(1), "accounts for 0"),
])
def test_a_table_that_does_not_match_its_attachment_is_refused(table: bytes, attachment: bytes, words: str) -> None:
    with pytest.raises(WireError, match=words):
        split_attachment(table, attachment)


@pytest.mark.parametrize("dtype", ["<c8", "<f2", "?", ">i4", "u1"])
def test_every_numeric_dtype_travels_and_each_tensor_starts_aligned(dtype: str) -> None:
    odd = np.arange(3, dtype="u1")  # 3 bytes: the next tensor would start unaligned
    values = np.ascontiguousarray(np.arange(6).reshape(2, 3).astype(dtype))
    sent = Attachments([(0, "odd", odd), (0, "values", values)])
    attachment = bytearray(b"".join(bytes(buffer) for buffer in sent.buffers()))
    assert len(attachment) == ALIGN + values.nbytes
    received = split_attachment(sent.table(), attachment)[0]
    assert bytes(received["odd"]) == odd.tobytes()
    np.testing.assert_array_equal(np.frombuffer(received["values"], values.dtype).reshape(2, 3), values)


@pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
def test_tensors_in_shared_memory_are_named_not_sent_when_sharing() -> None:
    region = SharedRegion.create(1 << 20)
    region.write_at(0, np.arange(1000, dtype="<f4").tobytes() + np.arange(7, dtype="u1").tobytes())
    body = memoryview(region)
    shared = np.frombuffer(body[:4000], dtype="<f4")
    unaligned = np.frombuffer(body[4001:4007], dtype="u1")  # not at a multiple of ALIGN: inline
    own = np.arange(5, dtype="<i8")
    sent = Attachments([(0, "shared", shared), (1, "unaligned", unaligned), (1, "own", own)])
    table, buffers = sent.frame(share=True)
    attachment = bytearray(b"".join(bytes(buffer) for buffer in buffers))
    assert len(attachment) == ALIGN + own.nbytes  # only the two not shared travel
    received = split_attachment(table, attachment, read_shared)
    assert np.frombuffer(received[0]["shared"], "<f4").tolist() == list(range(1000))
    assert bytes(received[1]["unaligned"]) == bytes(range(1, 7))
    assert np.frombuffer(received[1]["own"], "<i8").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(WireError, match="shared memory where none may be"):  # an answer never names one
        split_attachment(table, attachment)
    inline_table, inline_buffers = sent.frame(share=False)  # after a runtime refused: all inline
    assert (inline_table, b"".join(bytes(b) for b in inline_buffers)) == (sent.table(), b"".join(
        bytes(b) for b in sent.buffers()))
    assert np.frombuffer(split_attachment(inline_table, bytearray(b"".join(
        bytes(b) for b in inline_buffers)))[0]["shared"], "<f4").tolist() == list(range(1000))
    with pytest.raises(WireError, match="cut short"):
        split_attachment(table[:ENTRY.size + len("shared") + 3], attachment, read_shared)
