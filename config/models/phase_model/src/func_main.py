"""A numpy-style model: float64 temperatures in, the phase of water at each as text."""

import numpy as np

MELTS_K, BOILS_K = 273.15, 373.15  # at one atmosphere


def phase(kelvin: np.ndarray) -> dict[str, np.ndarray]:
    return {"phase": np.where(kelvin < MELTS_K, "ice", np.where(kelvin < BOILS_K, "water", "steam"))}
