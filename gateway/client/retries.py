"""When the client tries again: after a 429 or a 503 answer, or a connection refused before
anything was sent, at most `retries` more times, waiting what `Retry-After` says (seconds or an
HTTP date; given up when it ends past the deadline) or a jittered exponential back-off without
one (shortened to leave time for a last try before the deadline).
Nothing else is retried: a request the gateway may have run is not sent twice."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from gateway.client.errors import ConnectionLost, GatewayUnreachable
from gateway.errors import GatewayError

RETRY_STATUSES = frozenset({429, 503})
BACKOFF_BASE_S = 0.1  # the first wait without Retry-After, doubled per attempt (full jitter)
BACKOFF_CAP_S = 5.0
MIN_LAST_TRY_S = 0.02  # less left than this: no time for another attempt
DEADLINE_SHARE_SENT = 0.9  # of the time left: the gateway's own 504 then arrives before the client gives up


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date, RFC 9110
    10.2.3); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retryable(error: GatewayError) -> bool:
    """Whether the request may be sent again: the gateway refused it before running it."""
    if isinstance(error, GatewayUnreachable):
        return not isinstance(error, ConnectionLost)
    return error.status in RETRY_STATUSES


@dataclass(slots=True)
class Attempts:
    """The retry state of one call: attempts made and the deadline (a `time.monotonic()` instant,
    or None for none)."""

    retries: int
    deadline_at: float | None
    made: int = 0

    @classmethod
    def start(cls, retries: int, deadline_s: float | None) -> Attempts:
        return cls(retries, None if deadline_s is None else time.monotonic() + deadline_s)

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (None without one)."""
        return None if self.deadline_at is None else self.deadline_at - time.monotonic()

    def timeout_s(self, timeout_s: float | None) -> float | None:
        """This attempt's timeout: the per-request one, cut to what is left of the deadline."""
        left = self.remaining_s()
        if left is None:
            return timeout_s
        return left if timeout_s is None else min(timeout_s, left)

    def header(self) -> str | None:
        """`x-request-timeout`: milliseconds, 90 % of what is left of the deadline (at least 1), or None."""
        left = self.remaining_s()
        return None if left is None else str(max(1, math.floor(left * DEADLINE_SHARE_SENT * 1000)))

    def wait_s(self, error: GatewayError) -> float | None:
        """How long to wait before trying again after `error`, or None to raise it: not
        retryable, no retries left, or a wait that would end past the deadline."""
        self.made += 1
        if not retryable(error) or self.made > self.retries:
            return None
        left = self.remaining_s()
        after = error.retry_after_s
        if after is not None:  # the gateway's word: not sooner, so not at all when past the deadline
            return None if left is not None and after >= left else float(after)
        wait = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self.made - 1)))  # noqa: S311 (jitter)
        if left is not None and wait >= left:  # our own guess: shortened to leave time for one more try
            return None if left < MIN_LAST_TRY_S else left / 2
        return wait
