"""Opt-in request coalescing: concurrent requests to one model share one backend call, their
inputs concatenated along the batch dimension.

A model whose manifest says `batching: {max_batch_size: N, max_calls: M}` (every input and
output with a leading `-1` batch dimension) sends its requests through a `Coalescer`, which
schedules calls as every `CallScheduler` does (see gateway.backends.sharing): a request goes
out at once while fewer than M calls to the model are running; otherwise it waits for the
next free call and leaves with every request that queued meanwhile (up to N rows in all),
their inputs concatenated along the first axis. The answer is split back by each request's
row count. With `max_delay_ms: D` no request leaves at once: a call leaves when the waiting
rows reach N or the oldest has waited D ms (and a call is free), for fuller batches at up to
D ms of added latency.

What it changes, beside the embedded runtime's call sharing (which keeps requests apart): the
model sees several requests' rows in one call, so it must treat rows independently (row i of
the answer depends only on row i of the inputs), and one call's failure (a model exception,
the backend's deadline) fails every request in it, except a client-class refusal
(INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE: one request's bad values, or a batch larger
than the server's own maximum), after which each request is sent alone and answered on its own.
A joined call carries the first request's id; the log (debug) lists the ids it joined.
In exchange the model runs once per group, which is what makes it faster for vectorised models,
and it works with any backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import numpy as np

from gateway.backends.base import BackendCall, NDArray, Prediction
from gateway.backends.sharing import Call, CallObserver, CallScheduler, Waiting
from gateway.errors import BackendError, BadRequest, GatewayError

log = logging.getLogger("gateway.backends")


class Coalescer(CallScheduler):
    """Runs `call(BackendCall)` for requests, sharing calls as the module docstring says."""

    def __init__(self, call: Call, target: str, max_batch_size: int, max_calls: int,
                 max_delay_s: float = 0.0, observe: CallObserver | None = None) -> None:
        super().__init__(target, max_calls, max_batch_size, max_delay_s, observe)
        self._call = call
        self.max_batch_size = max_batch_size

    def size_of(self, inputs: Mapping[str, NDArray]) -> int:
        for array in inputs.values():
            return int(array.shape[0]) if array.ndim else 1
        return 1

    async def _alone(self, call: BackendCall) -> Prediction:
        return await self._call(call)

    async def _together(self, group: list[Waiting], timeout: float) -> None:
        first = group[0].call
        try:
            joined = {name: np.concatenate([w.call.inputs[name] for w in group]) for name in first.inputs}
        except ValueError:  # inputs that do not join along a first dimension: each goes alone
            await asyncio.gather(*(self._each(w, timeout) for w in group))
            return
        log.debug("backend %s: one call for requests %s", self.target, [w.call.request_id for w in group])
        try:
            prediction = await self._call(first._replace(inputs=joined, timeout=timeout))
        except BadRequest:  # maybe one request's fault, or the batch's size: each is answered alone
            await asyncio.gather(*(self._each(w, timeout) for w in group))
            return
        total = sum(w.size for w in group)
        for name, array in prediction.outputs.items():
            rows = array.shape[0] if array.ndim else 0
            if rows != total:
                raise BackendError(f"the backend answered output {name!r} with {rows} rows "
                                   f"for a batch of {total} (batching needs one output row per "
                                   "input row)", log_detail=f"backend {self.target}")
        start = 0
        for w in group:
            end = start + w.size
            w.resolve(Prediction({name: array[start:end] for name, array in prediction.outputs.items()},
                                 prediction.spec))
            start = end

    async def _each(self, waiting: Waiting, timeout: float) -> None:
        try:
            waiting.resolve(await self._call(waiting.call._replace(timeout=timeout)))
        except GatewayError as error:
            waiting.fail(error)
