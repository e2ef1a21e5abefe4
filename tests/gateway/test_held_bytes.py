"""What a bounded queue is charged for an array (gateway.held_bytes), up to the decoders' 64 dimensions."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.held_bytes import array_bytes, least_string_bytes


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
