"""What a bounded queue is charged for an array (gateway.held_bytes), up to the decoders' 64 dimensions."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.held_bytes import array_bytes, held_bytes, least_string_bytes
from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from protos.shared_memory import shared_buffer


@pytest.mark.parametrize("depth", [1, 32, 40, 64])
def test_string_tensors_of_any_rank_are_measured(depth: int) -> None:
    array = np.empty((2,) + (1,) * (depth - 1), dtype=object)
    array.reshape(-1)[:] = [b"abc", "de"]
    assert array_bytes(array) == array.nbytes + 5
    assert least_string_bytes(array) == 5


def test_numeric_tensors_count_their_buffer() -> None:
    array = np.zeros((1,) * 40 + (3,), dtype=np.float32)
    assert array_bytes(array) == 12
    assert least_string_bytes(array) == 0


def test_an_array_owning_its_memory_or_viewing_bytes_of_its_size_is_charged_its_bytes() -> None:
    owned = np.arange(10, dtype=np.int64)
    assert held_bytes([owned, owned.reshape(2, 5)]) == 160  # a view of all of an array: its bytes
    content = owned.tobytes()  # as a TensorProto's tensor_content is read
    assert held_bytes([np.frombuffer(content, dtype=np.int64).reshape(5, 2)]) == 80


def test_a_small_view_of_a_large_buffer_is_charged_all_of_it_once() -> None:
    body = bytearray(1 << 20)  # a request body read whole, or a local-wire answer frame
    view = memoryview(body)
    small = np.frombuffer(view[:16], dtype=np.float32)
    other = np.frombuffer(view[16:48], dtype=np.int32).reshape(2, 4)
    assert held_bytes([small]) == 1 << 20
    assert held_bytes([small, other, np.zeros(3, dtype=np.int8)]) == (1 << 20) + 3
    batch = np.zeros(1000, dtype=np.float64)  # a batch's answer: each request's rows are charged their own
    assert held_bytes([batch[:10], batch[10:20].reshape(2, 5)]) == 160
    frame_batch = np.frombuffer(memoryview(body)[:8000], dtype=np.float64)  # a batch's answer read from a frame
    assert held_bytes([frame_batch[:10]]) == 80
    assert held_bytes([frame_batch.reshape(10, 100)]) == 1 << 20  # the whole batch: its frame


@pytest.mark.skipif(not SHARED_MEMORY, reason="needs memfd_create")
def test_a_tensor_of_a_body_in_shared_memory_is_charged_its_region() -> None:
    view = shared_buffer(3 << 20)
    region = view.obj
    tensor = np.frombuffer(view[:64], dtype=np.uint8)
    assert held_bytes([tensor]) == memoryview(region).nbytes >= 3 << 20


def test_string_tensors_viewing_others_are_measured_as_strings() -> None:
    strings = np.array([b"abcd"] * 8, dtype=object)
    assert held_bytes([strings[:2]]) == array_bytes(strings[:2])
