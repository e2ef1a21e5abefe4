"""Call sharing: when every call to a model is busy, the requests that arrive meanwhile leave
together in the next call.

Why: one gRPC call costs the gateway's process ~170 µs of CPU whatever it carries (see
docs/PERFORMANCE.md), so under load most of a core goes to calls; sharing them is the one
way past that cost. Nothing is delayed on purpose: while fewer than `max_calls` calls run,
a request goes out at once and alone, exactly as without sharing, so an unloaded gateway
answers as fast as ever.

`CallScheduler` decides who travels together; two ways of carrying them:

- `Multiplexer` (the embedded runtime, always on): the requests travel as independent items
  of one PredictMany call. The model still sees each request alone and each is answered, or
  fails, on its own. Its call limit adapts to the time the runtime says it spends per request:
  a quick model (under a millisecond) gets two calls at once, so that more requests share each
  one; a slow one gets as many calls as its runtime runs at once, so that a request does not
  wait behind a long call while the runtime could have started it.
- `Coalescer` (`gateway.backends.coalesce`, opt-in `batching:`): their inputs are concatenated
  along the batch dimension into one Predict call.

Deadlines stay per request: a shared call may run until the latest deadline among its
requests, and each request whose own deadline passes first is answered 504 at that moment.

A scheduler given `max_delay_s` (batching's `max_delay_ms`) waits on purpose: a request does not
leave alone at once, but when `max_size` is reached or its oldest waiting request has waited that
long (and a call is free), for fuller calls at a known latency cost. Given `observe`, each call
that leaves reports its size, what made it leave (`TRIGGERS`) and each request's wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

from gateway.backends.base import BackendCall, NDArray, Prediction
from gateway.backends.capabilities import SharedAnswer
from gateway.errors import DeadlineExceeded

Call = Callable[[BackendCall], Awaitable[Prediction]]
CallMany = Callable[[Sequence[BackendCall], float], Awaitable[SharedAnswer]]

# What made a call leave: a call was free and nobody waited (`immediate`); requests waited for a
# busy call (`call_free`); the waiting requests filled `max_size` (`full`); the oldest had waited
# `max_delay_s` (`max_delay`).
IMMEDIATE, CALL_FREE, FULL, MAX_DELAY = "immediate", "call_free", "full", "max_delay"
TRIGGERS = (IMMEDIATE, CALL_FREE, FULL, MAX_DELAY)
# observe(size, trigger, waits): one call left, carrying `size` (rows, or requests), after each of
# its requests waited `waits` seconds.
CallObserver = Callable[[int, str, Sequence[float]], None]


class Waiting:
    """A request waiting for a call: its call (inputs, request id), its deadline and how it
    will be answered."""

    __slots__ = ("arrived", "call", "deadline", "future", "size", "timer")

    def __init__(self, call: BackendCall, size: int) -> None:
        loop = asyncio.get_running_loop()
        timeout = call.timeout
        self.call = call
        self.size = size
        self.arrived = time.monotonic()
        self.deadline = self.arrived + timeout
        self.future: asyncio.Future[Prediction] = loop.create_future()
        self.timer = loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        self.fail(DeadlineExceeded("the request's deadline passed before the answer was ready"))

    def resolve(self, prediction: Prediction) -> None:
        self.timer.cancel()
        if not self.future.done():
            self.future.set_result(prediction)

    def fail(self, error: BaseException) -> None:
        self.timer.cancel()
        if not self.future.done():
            self.future.set_exception(error)


class CallScheduler:
    """At most `max_calls` calls at once; waiting requests leave together, up to `max_size`
    (counted by `size_of`) per call, after at most `max_delay_s` (see the module docstring).
    Subclasses say how one request and a group travel."""

    def __init__(self, target: str, max_calls: int, max_size: int, max_delay_s: float = 0.0,
                 observe: CallObserver | None = None) -> None:
        self.target = target
        self.max_calls = max_calls
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.observe = observe
        self.running = 0
        self.calls = 0  # backend calls made (for tests)
        self._waiting: deque[Waiting] = deque()
        self._queued = 0  # the size of the requests waiting
        self._timer: asyncio.TimerHandle | None = None  # the oldest waiting request's max_delay_s

    def call_limit(self) -> int:
        """How many calls may run at once now."""
        return self.max_calls

    @property
    def idle(self) -> bool:
        """Whether no call runs and no request waits."""
        return self.running == 0 and not self._waiting

    async def predict(self, call: BackendCall) -> Prediction:
        if self.running < self.call_limit() and not self._waiting and not self.max_delay_s:
            self.running += 1
            self.calls += 1
            if self.observe is not None:
                self.observe(self.size_of(call.inputs), IMMEDIATE, (0.0,))
            try:
                return await self._alone(call)
            finally:
                self.running -= 1
                self._start_next()
        waiting = Waiting(call, self.size_of(call.inputs))
        self._waiting.append(waiting)
        self._queued += waiting.size
        self._start_next()
        return await waiting.future

    def size_of(self, inputs: Mapping[str, NDArray]) -> int:
        """How much of a call's `max_size` a request takes (1: counted in requests)."""
        return 1

    async def _alone(self, call: BackendCall) -> Prediction:
        """One request's call."""
        raise NotImplementedError

    async def _together(self, group: list[Waiting], timeout: float) -> None:
        """One call for `group` (two or more requests), answering each of them."""
        raise NotImplementedError

    def _start_next(self) -> None:
        """Start calls for the waiting requests while calls are free (with `max_delay_s`, once
        they fill a call or the oldest has waited that long)."""
        while self._waiting and self.running < self.call_limit():
            trigger = CALL_FREE
            if self._queued >= self.max_size:
                trigger = FULL
            elif self.max_delay_s:
                wait = self._waiting[0].arrived + self.max_delay_s - time.monotonic()
                if wait > 0:
                    if self._timer is None:
                        self._timer = asyncio.get_running_loop().call_later(wait, self._delay_over)
                    return
                trigger = MAX_DELAY
            group = [self._waiting.popleft()]
            size = group[0].size
            while self._waiting and size + self._waiting[0].size <= self.max_size:
                item = self._waiting.popleft()
                size += item.size
                group.append(item)
            self._queued -= size
            self.running += 1
            self.calls += 1
            asyncio.get_running_loop().create_task(self._run(group, trigger))

    def _delay_over(self) -> None:
        self._timer = None
        self._start_next()

    async def _run(self, group: list[Waiting], trigger: str) -> None:
        try:
            live = [w for w in group if not w.future.done()]  # callers that went away or timed out
            if not live:
                return
            now = time.monotonic()
            if self.observe is not None:
                self.observe(sum(w.size for w in live), trigger, [now - w.arrived for w in live])
            timeout = max(w.deadline for w in live) - now
            if timeout <= 0:
                raise DeadlineExceeded("the request's deadline passed before the answer was ready")
            if len(live) == 1:
                live[0].resolve(await self._alone(live[0].call._replace(timeout=timeout)))
            else:
                await self._together(live, timeout)
        except (Exception, asyncio.CancelledError) as error:  # never leave a caller waiting
            for w in group:
                w.fail(error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self.running -= 1
            self._start_next()


QUICK_REQUEST_S = 0.001  # a runtime spending less than this per request shares calls sooner
FEW_CALLS = 2


class Multiplexer(CallScheduler):
    """Shares calls by sending the waiting requests as independent items of one call."""

    def __init__(self, call: Call, call_many: CallMany, target: str, max_calls: int,
                 max_items: int = 256) -> None:
        super().__init__(target, max_calls, max_items)
        self._call = call
        self._call_many = call_many
        # What the runtime last said it spends per request. Until it says, the model is taken
        # for quick: the first call that carries several requests tells (a slow model's first
        # burst waits behind two calls once; a quick one shares from the start).
        self.seconds_per_request = 0.0

    def call_limit(self) -> int:
        if self.seconds_per_request < QUICK_REQUEST_S:
            return min(FEW_CALLS, self.max_calls)
        return self.max_calls

    async def _alone(self, call: BackendCall) -> Prediction:
        return await self._call(call)

    async def _together(self, group: list[Waiting], timeout: float) -> None:
        outcomes, seconds = await self._call_many([w.call for w in group], timeout)
        if seconds is not None:
            self.seconds_per_request = seconds
        for waiting, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Prediction):
                waiting.resolve(outcome)
            else:
                waiting.fail(outcome)
