"""An in-memory backend for unit tests of the core: a Python function stands in for a model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gateway.backends.base import NDArray

ModelFunction = Callable[[Mapping[str, NDArray]], dict[str, NDArray]]


class FakeBackend:
    """Answers with `function(inputs)` after `delay_s`; records every call's inputs."""

    def __init__(self, function: ModelFunction, *, delay_s: float = 0.0, target: str = "fake") -> None:
        self.function = function
        self.delay_s = delay_s
        self.target = target
        self.calls: list[tuple[dict[str, NDArray], float]] = []
        self.is_healthy = True

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        self.calls.append((dict(inputs), timeout))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.function(inputs)

    async def healthy(self, timeout: float) -> bool:
        return self.is_healthy
