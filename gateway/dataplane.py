"""The transport-agnostic core: run an application's stages on arrays.

HTTP routes and any other front door decode their wire format into arrays, call
`DataPlane.predict` and encode the arrays it returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.backends import NDArray
from gateway.errors import BackendError, DeadlineExceeded, Overloaded, TooManyRequests
from gateway.registry import Application, Registry
from gateway.routing import choose_variant


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the core needs to know about the caller's request."""

    request_id: str
    deadline: float  # time.monotonic() by which the answer is due

    @classmethod
    def start(cls, request_id: str, timeout_s: float) -> RequestContext:
        return cls(request_id, time.monotonic() + timeout_s)

    def remaining(self) -> float:
        """Seconds left before the deadline; DeadlineExceeded once it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed before the answer was ready")
        return left


class DataPlane:
    """Runs requests against the current registry, within the concurrency limits: the
    gateway's (`max_concurrency`, beyond it 503) and each application's (beyond it 429).
    Nothing waits in a queue: a request over a limit is refused at once with Retry-After."""

    def __init__(self, registry: Registry, max_concurrency: int = 1024) -> None:
        self.registry = registry
        self.max_concurrency = max_concurrency
        self.in_flight = 0
        self._app_in_flight: dict[str, int] = {}

    def application(self, name: str) -> Application:
        """The application called `name` (NotFound otherwise)."""
        return self.registry.application(name)

    async def predict(self, app: Application, inputs: Mapping[str, NDArray],
                      context: RequestContext) -> dict[str, NDArray]:
        """Pass `inputs` through every stage; each stage's outputs feed the next."""
        if self.in_flight >= self.max_concurrency:
            raise Overloaded(f"the gateway is at its limit of {self.max_concurrency} requests in flight")
        limit = app.manifest.max_concurrency
        running = self._app_in_flight.get(app.name, 0)
        if limit is not None and running >= limit:
            raise TooManyRequests(f"application {app.name} is at its limit of {limit} requests in flight")
        self.in_flight += 1
        self._app_in_flight[app.name] = running + 1
        try:
            return await self._run_stages(app, inputs, context)
        finally:
            self.in_flight -= 1
            self._app_in_flight[app.name] -= 1

    async def _run_stages(self, app: Application, inputs: Mapping[str, NDArray],
                          context: RequestContext) -> dict[str, NDArray]:
        tensors: Mapping[str, NDArray] = inputs
        outputs: dict[str, NDArray] = {}
        model = ""
        for stage in app.stages:
            variant = choose_variant(stage)
            model = variant.model.label
            outputs = await variant.model.backend.predict(tensors, context.remaining())
            tensors = outputs
        return _contract_outputs(app, outputs, model)


def _contract_outputs(app: Application, outputs: dict[str, NDArray], model: str) -> dict[str, NDArray]:
    """The contract's outputs in contract order (extra outputs are not part of the API)."""
    specs = app.signature.outputs
    if not specs:
        return outputs
    missing = [name for name in specs if name not in outputs]
    if missing:
        raise BackendError(f"model {model} answered without output {missing[0]!r}")
    return {name: outputs[name] for name in specs}
