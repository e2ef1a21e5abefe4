"""A circuit breaker per backend target, and the gRPC retry policy the channels use.

Retries are gRPC's own (a service config on every pooled channel): only calls that end
UNAVAILABLE are retried, at most `attempts` times in all, within the call's deadline and a
token-bucket budget (`retryThrottling`) so retries cannot multiply an outage's load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from enum import Enum

import grpc

from gateway.errors import BackendUnavailable

# Outcomes that say the target itself is in trouble (not the request, not the model's code).
TRANSPORT_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CircuitState(Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    """Opens after `failures` consecutive transport failures; while open, calls fail at once
    (503 with Retry-After). After `cooldown_s` one probe call goes through (half-open): its
    success closes the circuit, its failure opens it again."""

    def __init__(self, target: str, failures: int = 5, cooldown_s: float = 5.0,
                 on_change: Callable[[str, CircuitState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.on_change = on_change
        self.clock = clock
        self.state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False

    def before_call(self, model: str | None = None) -> None:
        """Raise BackendUnavailable (naming `model`) when the circuit does not let this call through."""
        if self.state is CircuitState.CLOSED:
            return
        if self.state is CircuitState.OPEN:
            waited = self.clock() - self._opened_at
            if waited < self.cooldown_s:
                raise self._refusal(self.cooldown_s - waited, model)
            self._set(CircuitState.HALF_OPEN)
        if self._probing:
            raise self._refusal(1.0, model)
        self._probing = True

    def record(self, code: grpc.StatusCode | None) -> None:
        """The outcome of a call that went through (None: it succeeded)."""
        self._probing = False
        if code not in TRANSPORT_FAILURES:
            self._consecutive = 0
            if self.state is not CircuitState.CLOSED:
                self._set(CircuitState.CLOSED)
            return
        self._consecutive += 1
        if self.state is CircuitState.HALF_OPEN or self._consecutive >= self.failures:
            self._opened_at = self.clock()
            self._set(CircuitState.OPEN)

    def _refusal(self, retry_after_s: float, model: str | None) -> BackendUnavailable:
        backend = f"the backend of model {model}" if model else "the backend"
        error = BackendUnavailable(f"{backend} is failing; its circuit is open "
                                   f"(next try in {max(retry_after_s, 0.0):.1f}s)",
                                   log_detail=f"backend {self.target}")
        error.retry_after_s = max(1, round(retry_after_s))
        return error

    def _set(self, state: CircuitState) -> None:
        self.state = state
        if self.on_change is not None:
            self.on_change(self.target, state)


def retry_service_config(attempts: int) -> str:
    """The channel's service config: retry UNAVAILABLE up to `attempts` calls in all."""
    config: dict[str, object] = {
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
    if attempts > 1:
        config["methodConfig"] = [{
            "name": [{}],  # every method
            "retryPolicy": {
                "maxAttempts": min(attempts, 5),
                "initialBackoff": "0.02s",
                "maxBackoff": "0.2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
    return json.dumps(config)
