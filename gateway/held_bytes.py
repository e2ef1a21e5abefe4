"""What an array holds, measured cheaply enough for the request path: what a bounded queue
holding it (shadow copies, request-log calls) is charged."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

OBJECT_SAMPLE = 1024  # string tensors: elements measured, the rest estimated from them
FLAT_MAX_DIMS = 32  # numpy's flat iterator refuses arrays of more dimensions (tensors may have 64)


def _first(array: NDArray[Any], count: int) -> NDArray[Any]:
    """The first `count` elements in C order, without copying the array when numpy's flat
    iterator can take it."""
    return array.flat[:count] if array.ndim <= FLAT_MAX_DIMS else array.reshape(-1)[:count]


def array_bytes(array: NDArray[Any]) -> int:
    """An array's bytes; a string tensor's strings too (measured on its first `OBJECT_SAMPLE`)."""
    if array.dtype.kind != "O" or array.size == 0:
        return int(array.nbytes)
    sample = _first(array, OBJECT_SAMPLE)
    measured = sum(len(item) if isinstance(item, (bytes, str)) else 8 for item in sample)
    return int(array.nbytes) + measured * array.size // len(sample)


MAX_VIEW_DEPTH = 16  # views of views: a short chain in practice


def held_bytes(arrays: Iterable[NDArray[Any]]) -> int:
    """What holding `arrays` keeps in memory: each one's `array_bytes`, except that an array
    viewing a larger buffer that is not an array (a raw tensor read whole with its request body,
    in memory shared with the embedded runtime; a tensor of a local-wire answer frame) keeps all
    of that buffer alive, and is charged the buffer's size, once for all of `arrays` viewing it.
    Rows of a larger array (a batch's answer, gateway.backends.coalesce) are charged their own
    bytes: the batch is held once for all its requests."""
    total = 0
    buffers: set[int] = set()
    for array in arrays:
        buffer = _viewed_buffer(array)
        size = _buffer_bytes(buffer) if buffer is not None else 0
        if size <= array.nbytes:
            total += array_bytes(array)
        elif id(buffer) not in buffers:
            buffers.add(id(buffer))
            total += size
    return total


def _viewed_buffer(array: NDArray[Any]) -> object | None:
    """The buffer that is not an array at the end of an array's chain of views (numpy bases,
    memoryviews): bytes, bytearray, an mmap; None for an array owning its memory, or part of a
    larger array (rows of a batch, whatever that array views)."""
    buffer: object = array.base
    for _ in range(MAX_VIEW_DEPTH):
        if buffer is None:
            return None
        if isinstance(buffer, memoryview):
            buffer = buffer.obj
        elif isinstance(buffer, np.ndarray):
            if buffer.nbytes > array.nbytes:
                return None
            buffer = buffer.base
        else:
            return buffer
    return None


def _buffer_bytes(buffer: object) -> int:
    """The bytes of a buffer an array views (0 when they cannot be told: the array is charged its own)."""
    try:
        return memoryview(buffer).nbytes  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):  # no buffer, a closed one, one that refuses a view
        return 0


def least_string_bytes(array: NDArray[Any]) -> int:
    """A lower bound of the characters or bytes of a string array's elements (0 for other
    arrays): its first `OBJECT_SAMPLE` elements measured, the rest counted 0."""
    if array.dtype.kind not in "OSU" or array.size == 0:
        return 0
    return sum(len(item) for item in _first(array, OBJECT_SAMPLE) if isinstance(item, (bytes, str)))
