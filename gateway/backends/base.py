"""The interface every backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from gateway.errors import BackendUnavailable

NDArray = np.ndarray


class Backend(Protocol):
    """Runs one model version. Implementations translate their transport's errors into
    the gateway's error tree; callers see only `GatewayError`s."""

    @property
    def target(self) -> str:
        """Where the model runs, for logs and health detail."""
        ...

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        """The model's outputs for `inputs`, within `timeout` seconds."""
        ...

    async def healthy(self, timeout: float) -> bool:
        """Whether the backend answers its health check within `timeout` seconds."""
        ...


class UnavailableBackend:
    """The backend of a model that could not be started; every call says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.target = "(none)"

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        raise BackendUnavailable(self.reason)

    async def healthy(self, timeout: float) -> bool:
        return False
