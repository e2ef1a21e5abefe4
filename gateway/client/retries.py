"""When the client tries again, at most `retries` more times, only where the request did not run:

- a connection refused or a connect timeout (nothing was sent);
- `429 too_many_requests`, `503 overloaded`, `503 not_ready` (and its `application_contract_mismatch`):
  the gateway refuses these before running anything;
- a backend's `503 backend_unavailable` or `429 resource_exhausted`, on a model route or an
  application of one stage only: that stage's model did not run it. In a pipeline an earlier
  stage may have run, so these are not retried there.

Each retry waits what `Retry-After` says (seconds, a decimal allowed, or an HTTP date) or a jittered
exponential back-off without one (shortened to leave time for a last try before the deadline); a
wait that would end past the deadline, or past `timeout` when there is no deadline, raises the
error at once. Nothing else is retried: a request the gateway may have run is not sent twice."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

from gateway.client.errors import ConnectionLost, GatewayUnreachable
from gateway.errors import GatewayError

BEFORE_RUNNING = frozenset({"too_many_requests", "overloaded", "not_ready", "application_contract_mismatch"})
BACKEND_REFUSALS = frozenset({"backend_unavailable", "resource_exhausted"})  # the failing stage did not run it
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
    if text.replace(".", "", 1).isdigit():  # RFC delay-seconds, or a decimal some proxies send
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retryable(error: GatewayError, pipeline: bool = False) -> bool:
    """Whether the request may be sent again: nothing of it ran (`pipeline`: the target has
    several stages, so a backend's refusal may come after an earlier stage ran)."""
    if isinstance(error, GatewayUnreachable):
        return not isinstance(error, ConnectionLost)
    if error.status not in (429, 503):
        return False
    return error.code in BEFORE_RUNNING or (error.code in BACKEND_REFUSALS and not pipeline)


@dataclass(slots=True)
class Attempts:
    """The retry state of one call: attempts made and the deadline (a `time.monotonic()` instant,
    or None for none)."""

    retries: int
    deadline_at: float | None
    made: int = 0
    longest_wait_s: float | None = None  # without a deadline: the client's timeout
    pipeline: bool = False  # the target has several stages (see `retryable`)

    @classmethod
    def start(cls, retries: int, deadline_s: float | None, timeout_s: float | None = None) -> Attempts:
        return cls(retries, None if deadline_s is None else time.monotonic() + deadline_s,
                   longest_wait_s=timeout_s if deadline_s is None else None)

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
        retryable, no retries left, or a wait that would end past the deadline (without one, a
        `Retry-After` longer than the timeout)."""
        self.made += 1
        if not retryable(error, self.pipeline) or self.made > self.retries:
            return None
        left = self.remaining_s()
        longest = self.longest_wait_s if left is None else None  # no deadline: waits bounded by the timeout
        after = error.retry_after_s
        if after is not None:  # the gateway's word: not sooner, so not at all when past the limit
            if (left is not None and after >= left) or (longest is not None and after > longest):
                return None
            return float(after)
        wait = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self.made - 1)))  # noqa: S311 (jitter)
        if left is not None and wait >= left:  # our own guess: shortened to leave time for one more try
            return None if left < MIN_LAST_TRY_S else left / 2
        return wait if longest is None else min(wait, longest)
