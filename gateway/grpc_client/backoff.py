"""The client's two waits, as the grpcio channels of gateway.backends.pool have them:
reconnecting (CHANNEL_OPTIONS' reconnect backoff) and retrying UNAVAILABLE calls
(gateway.backends.resilience.retry_service_config: its backoff and retry throttling)."""

from __future__ import annotations

import random

# grpc.initial_reconnect_backoff_ms, grpc.min_reconnect_backoff_ms, grpc.max_reconnect_backoff_ms.
RECONNECT_INITIAL_S = 0.2
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
_RECONNECT_MULTIPLIER = 1.6  # grpc's connection backoff
_RECONNECT_JITTER = 0.2
# retry_service_config's retryPolicy and retryThrottling.
RETRY_INITIAL_S = 0.02
RETRY_MAX_S = 0.2
RETRY_MULTIPLIER = 2.0
RETRY_MAX_ATTEMPTS = 5
_THROTTLE_MAX_TOKENS = 10.0
_THROTTLE_TOKEN_RATIO = 0.1


class ReconnectBackoff:
    """How long after a failed connection attempt the next one may start: 0.2 s, then x1.6
    with 20 % jitter up to 2 s (never under 0.1 s); a connection that got ready starts over."""

    def __init__(self) -> None:
        self._next = RECONNECT_INITIAL_S

    def failed(self) -> float:
        """The wait before the next attempt, after one failed."""
        wait = self._next * random.uniform(1 - _RECONNECT_JITTER, 1 + _RECONNECT_JITTER)  # noqa: S311 (jitter)
        self._next = min(self._next * _RECONNECT_MULTIPLIER, RECONNECT_MAX_S)
        return max(RECONNECT_MIN_S, min(wait, RECONNECT_MAX_S))

    def succeeded(self) -> None:
        self._next = RECONNECT_INITIAL_S


class RetryPolicy:
    """gRPC's retry policy for UNAVAILABLE: up to `attempts` calls in all (at most 5), waits drawn
    from [0, min(0.02 s x 2^(n-1), 0.2 s)], and a token bucket (10 tokens, 0.1 back per success)
    that stops retries while more than half the tokens are spent, so an outage's load is not
    multiplied."""

    def __init__(self, attempts: int) -> None:
        self.attempts = min(max(attempts, 1), RETRY_MAX_ATTEMPTS)
        self._tokens = _THROTTLE_MAX_TOKENS

    def succeeded(self) -> None:
        self._tokens = min(self._tokens + _THROTTLE_TOKEN_RATIO, _THROTTLE_MAX_TOKENS)

    def failed(self) -> None:
        self._tokens = max(self._tokens - 1.0, 0.0)

    def throttled(self) -> bool:
        """Whether retries are off for now (the bucket is at or under half)."""
        return self._tokens <= _THROTTLE_MAX_TOKENS / 2

    @staticmethod
    def wait(attempt: int) -> float:
        """The wait before call `attempt + 1`, after call `attempt` (1-based) failed."""
        return random.uniform(0.0, min(RETRY_INITIAL_S * RETRY_MULTIPLIER ** (attempt - 1), RETRY_MAX_S))  # noqa: S311
