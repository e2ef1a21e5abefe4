"""Opt-in request coalescing: concurrent requests to one model share one backend call.

A model whose manifest says `batching: {max_batch_size: N, max_calls: M}` (every input and
output with a leading `-1` batch dimension) sends its requests through a `Coalescer`. A
request goes out at once while fewer than M calls to the model are running; otherwise it
waits for the next free call and leaves with every request that queued meanwhile (up to N
rows in all), their inputs concatenated along the first axis. The answer is split back by
each request's row count. Nothing is delayed on purpose: an unloaded gateway sends every
request alone, exactly as without batching.

Why: one gRPC call costs the gateway's process ~170 µs of CPU whatever it carries (see
docs/PERFORMANCE.md), so under load most of a core goes to calls; sharing them is the one
way past that cost. What it changes: the model sees several requests' rows in one call, so
it must treat rows independently (row i of the answer depends only on row i of the inputs),
and one call's failure (a model exception, a deadline) fails every request in it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from gateway.backends.base import NDArray, Prediction
from gateway.errors import BackendError, DeadlineExceeded, GatewayError

Call = Callable[[Mapping[str, NDArray], float], Awaitable[Prediction]]


class _Waiting:
    __slots__ = ("deadline", "future", "inputs", "rows")

    def __init__(self, inputs: Mapping[str, NDArray], rows: int, deadline: float,
                 future: asyncio.Future[Prediction]) -> None:
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.future = future


class Coalescer:
    """Runs `call(inputs, timeout)` for requests, sharing calls as the module docstring says."""

    def __init__(self, call: Call, target: str, max_batch_size: int, max_calls: int) -> None:
        self._call = call
        self.target = target
        self.max_batch_size = max_batch_size
        self.max_calls = max_calls
        self.running = 0
        self._waiting: deque[_Waiting] = deque()
        self.calls = 0  # backend calls made (for tests and metrics)

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> Prediction:
        if self.running < self.max_calls and not self._waiting:
            self.running += 1
            self.calls += 1
            try:
                return await self._call(inputs, timeout)
            finally:
                self.running -= 1
                self._start_next()
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(inputs, _rows(inputs), time.monotonic() + timeout, future))
        self._start_next()
        return await future

    def _start_next(self) -> None:
        """Start calls for the waiting requests while calls are free."""
        while self._waiting and self.running < self.max_calls:
            batch = [self._waiting.popleft()]
            rows = batch[0].rows
            while self._waiting and rows + self._waiting[0].rows <= self.max_batch_size:
                item = self._waiting.popleft()
                rows += item.rows
                batch.append(item)
            self.running += 1
            self.calls += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            live = [w for w in batch if not w.future.done()]  # callers that went away are dropped
            if not live:
                return
            timeout = min(w.deadline for w in live) - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded("the request's deadline passed before the answer was ready")
            if len(live) == 1:
                _settle(live[0].future, await self._call(live[0].inputs, timeout))
                return
            joined = {name: np.concatenate([w.inputs[name] for w in live]) for name in live[0].inputs}
            prediction = await self._call(joined, timeout)
            total = sum(w.rows for w in live)
            for name, array in prediction.outputs.items():
                rows = array.shape[0] if array.ndim else 0
                if rows != total:
                    raise BackendError(f"backend {self.target} answered output {name!r} with {rows} rows "
                                       f"for a batch of {total} (batching needs one output row per "
                                       "input row)")
            start = 0
            for w in live:
                end = start + w.rows
                _settle(w.future, Prediction({name: array[start:end]
                                              for name, array in prediction.outputs.items()},
                                             prediction.spec))
                start = end
        except (GatewayError, asyncio.CancelledError) as error:  # never leave a caller waiting
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self.running -= 1
            self._start_next()


def _settle(future: asyncio.Future[Prediction], prediction: Prediction) -> None:
    if not future.done():
        future.set_result(prediction)


def _rows(inputs: Mapping[str, NDArray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
