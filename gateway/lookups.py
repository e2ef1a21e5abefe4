"""Lookups that concurrent callers share, and that a backend failure holds off for a back-off
window.

Used for contract discovery (GetModelMetadata): fifty requests to a model whose contract is
not known yet make one call, not fifty, and a backend that cannot answer (down, or still
loading the model) is not asked by every request while it cannot. A failure that is the
request's (a 4xx: a version the backend does not have) is shared but not remembered: the
next request asks again, so a version deployed meanwhile is answered at once.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.errors import BackendUnavailable, GatewayError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

BACKOFF_FIRST_S = 0.5  # how long the first failure is answered without asking again
BACKOFF_MAX_S = 30.0  # the window doubles with each failure in a row, up to this


@dataclass(slots=True)
class _Failure:
    error: GatewayError
    window_s: float
    until: float  # clock time at which the lookup may be tried again


@dataclass(frozen=True, slots=True, eq=False)
class ByIdentity(Generic[T]):
    """A key part that is `obj` itself, whatever its equality: it holds `obj`, so no other
    object can take its id while the key is kept."""

    obj: T

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByIdentity) and other.obj is self.obj


class SharedLookups(Generic[K, V]):
    """At most one lookup in flight per key: callers arriving meanwhile await the same one
    (a caller that gives up does not cancel it for the others), and get its failure too.
    After a backend failure (5xx), callers get `503 backend_unavailable` with `Retry-After`
    (the time left, rounded up) until the back-off window ends: `BACKOFF_FIRST_S`, doubling at
    each failure in a row up to `BACKOFF_MAX_S`, forgotten on success. A 4xx (the request's
    failure, an unknown version) is not remembered and ends the back-off: the backend answered.
    `clock` is injectable so tests need not sleep through windows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._in_flight: dict[K, asyncio.Future[V]] = {}
        self._failures: dict[K, _Failure] = {}

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        """The value of `lookup()` for `key`, shared with concurrent callers; the failure
        remembered for `key` while its window lasts, without calling `lookup`."""
        failure = self._failures.get(key)
        if failure is not None:
            left = failure.until - self.clock()
            if left > 0:
                raise _held_off(failure.error, left)
        shared = self._in_flight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._run(key, lookup))
            shared.add_done_callback(_retrieve)
            self._in_flight[key] = shared
        try:
            return await asyncio.shield(shared)
        except GatewayError as error:
            raise copy.copy(error) from None  # each caller its own, for its own traceback

    def forget(self) -> None:
        """Drop every remembered failure (the next lookup of any key asks at once)."""
        self._failures.clear()

    async def _run(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await lookup()
        except GatewayError as error:
            if error.status < 500:
                self._failures.pop(key, None)
                raise
            previous = self._failures.get(key)
            window = BACKOFF_FIRST_S if previous is None else min(previous.window_s * 2, BACKOFF_MAX_S)
            self._failures[key] = _Failure(error, window, self.clock() + window)
            if error.retry_after_s is not None:
                error.retry_after_s = math.ceil(window)
            raise
        finally:
            del self._in_flight[key]
        self._failures.pop(key, None)
        return value


def _held_off(error: GatewayError, left_s: float) -> GatewayError:
    """What a caller gets while the backend failure `error` holds a lookup off for `left_s`
    more seconds: a 503 with Retry-After."""
    if isinstance(error, BackendUnavailable):
        held = copy.copy(error)
    else:
        held = BackendUnavailable(error.message, log_detail=error.log_detail)
    held.log_detail = f"{error.log_detail or error.message}; not asked again for {left_s:.1f}s"
    held.retry_after_s = math.ceil(left_s)
    return held


def _retrieve(future: asyncio.Future[V]) -> None:
    """Mark a failed lookup's exception as seen: every caller may have given up on it."""
    if not future.cancelled():
        future.exception()
