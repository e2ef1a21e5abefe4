"""What an array holds, measured cheaply enough for the request path: what a bounded queue
holding it (shadow copies, request-log calls) is charged."""

from __future__ import annotations

from typing import Any

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


def least_string_bytes(array: NDArray[Any]) -> int:
    """A lower bound of the characters or bytes of a string array's elements (0 for other
    arrays): its first `OBJECT_SAMPLE` elements measured, the rest counted 0."""
    if array.dtype.kind not in "OSU" or array.size == 0:
        return 0
    return sum(len(item) for item in _first(array, OBJECT_SAMPLE) if isinstance(item, (bytes, str)))
