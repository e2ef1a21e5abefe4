"""Toy_double: twice Toy version 1, 4*a + 6*b for each row [a, b]."""

import numpy as np

WEIGHTS = np.array([[4.0], [6.0]], dtype=np.float32)


def serving_default(input_1: np.ndarray) -> dict[str, np.ndarray]:
    return {"output_1": input_1 @ WEIGHTS}
