"""What the data plane hands the request logs about one backend call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.held_bytes import held_bytes


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """One model call of a request, answered or failed: what its record and index line say.

    The arrays are the call's own (the stage's inputs, the backend's outputs), held, never
    copied or changed: nothing writes to them once the call is made."""

    request_id: str
    time: float  # time.time() when the call started
    duration_s: float
    model: str  # the gateway's name of the model
    version: int | None  # the version that ran (the backend's answer, else the one asked for)
    signature_name: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray] | None  # None: the call failed
    status: int = 200  # the HTTP status of the call's outcome (the error's when it failed)
    error: str | None = None  # the error's machine code and message when it failed
    application: str | None = None  # None: a call of a model route
    stage: int | None = None
    variant: str | None = None  # as answers name it: `name:N`, `name@label`, `name`
    output_filter: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        """The bytes holding the call keeps alive, strings estimated from a sample, a view of a
        larger buffer charged all of it (`held_bytes`: what a queue holding the call is charged,
        cheap enough for the request path)."""
        return held_bytes([*self.inputs.values(), *(self.outputs or {}).values()])
