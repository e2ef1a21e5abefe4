"""Toy version 1 ("stable"): a linear model, 2*a + 3*b for each row [a, b]."""

import numpy as np

WEIGHTS = np.array([[2.0], [3.0]], dtype=np.float32)


def serving_default(input_1: np.ndarray) -> dict[str, np.ndarray]:
    return {"output_1": input_1 @ WEIGHTS}
