"""The next candidate, tried as canary_app's shadow: it gets copies of requests, its answers are
compared with the live variant's and never reach the caller. Where version 1 (and
increment_model) wrap 2147483647 around to -2147483648, it stays at the int32 maximum."""

import numpy as np

INT32_MAX = np.iinfo(np.int32).max


def increment(number: np.ndarray) -> np.ndarray:
    return np.where(number < INT32_MAX, number + np.int32(1), number)
