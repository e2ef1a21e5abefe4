"""Toy version 2 ("canary"): version 1's linear model behind a sigmoid, so it answers in (0, 1)."""

import numpy as np

WEIGHTS = np.array([[2.0], [3.0]], dtype=np.float32)


def serving_default(input_1: np.ndarray) -> dict[str, np.ndarray]:
    return {"output_1": 1.0 / (1.0 + np.exp(-(input_1 @ WEIGHTS)))}
