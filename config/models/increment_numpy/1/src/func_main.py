"""increment_model rewritten in numpy style: canary_app's canary (10 % of its traffic)."""

import numpy as np


def increment(number: np.ndarray) -> np.ndarray:
    return number + np.int32(1)
