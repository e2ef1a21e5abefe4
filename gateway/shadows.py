"""Shadow traffic: copies of a stage's requests for its shadow variants, their answers compared
with the live variant's and never returned.

Once a stage's live variant answered, `ShadowTraffic.copy` leaves one job per shadow (drawn
by its `sample` share) in the request context's `after_answer`, which the front door runs
once the caller's answer was sent: the copy then joins that shadow's bounded queue (one per
application, stage and shadow; a full queue drops it), served by `concurrency` workers. A
shadow is called through its model's unguarded backend (`Model.shadow_backend`: no circuit
breaker, no call scheduler), outside the data plane's concurrency limits and live metrics,
with the application's deadline (else the gateway's request timeout). Its answer is compared
with the live one (gateway.shadow_compare) into the `gateway_shadow_*` metrics and, for a
sampled share of disagreements, one JSON line on the `gateway.shadow` logger. A copy holds
the variant it was made for, so copies queued before a reload still reach that variant.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from gateway.backends import BackendCall, NDArray, Prediction
from gateway.errors import GatewayError
from gateway.manifests import CompareSpec
from gateway.observability import Metrics
from gateway.registry import Application, Stage, Target, Variant
from gateway.settings import Settings
from gateway.shadow_compare import OutputComparison, compare_outputs, preview
from tensorcodecs import TensorSpec

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext

log = logging.getLogger("gateway.shadow")
CLOSE_WAIT_S = 1.0  # at shutdown, how long shadow calls under way may still finish
InputsOf = Callable[[Target], Mapping[str, TensorSpec] | None]  # the discovered input specs of a target


@dataclass(frozen=True, slots=True)
class ShadowCopy:
    """One request of a stage as its shadow gets it, with the live answer to compare against."""

    application: str
    stage: int
    shadow: Variant
    live: str  # the live variant that answered, as answers name it
    inputs: Mapping[str, NDArray]
    live_outputs: Mapping[str, NDArray]
    live_seconds: float
    request_id: str
    timeout_s: float
    compare: CompareSpec
    specs: Mapping[str, TensorSpec] | None = None

    @property
    def labels(self) -> tuple[str, str, str]:
        """application, stage, shadow: the labels of its metrics and the key of its queue."""
        return self.application, str(self.stage), self.shadow.name


@dataclass(slots=True)
class _Lane:
    """One shadow's bounded queue and the workers serving it."""

    queue: asyncio.Queue[ShadowCopy]
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    busy: set[asyncio.Task[None]] = field(default_factory=set)


class ShadowTraffic:
    """Every shadow copy of one gateway process, from the request that made it to its comparison."""

    def __init__(self, metrics: Metrics | None = None, *, queue_size: int = 100, concurrency: int = 2,
                 log_sample: float = 0.01, timeout_s: float = 30.0,
                 draw: Callable[[], float] = random.random) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.log_sample = log_sample
        self.timeout_s = timeout_s
        self.draw = draw  # uniform in [0, 1): samples copies and disagreement log lines
        self.closed = False
        self._lanes: dict[tuple[str, str, str], _Lane] = {}
        self._agreement: dict[tuple[str, str, str, str], list[int]] = {}  # [agreed, compared]

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None) -> ShadowTraffic:
        return cls(metrics, queue_size=settings.shadow_queue_size, concurrency=settings.shadow_concurrency,
                   log_sample=settings.shadow_log_sample, timeout_s=settings.request_timeout_s)

    # ------------------------------------------------------------ making copies

    def copy(self, app: Application, stage: Stage, live: Variant, inputs: Mapping[str, NDArray],
             prediction: Prediction, live_seconds: float, context: RequestContext, inputs_of: InputsOf) -> None:
        """Leave a copy of this stage's request for each of its shadows (drawn by its `sample`)
        in `context.after_answer`: it is queued once the caller's answer was sent."""
        timeout = app.manifest.timeout_s or self.timeout_s
        for shadow in stage.shadows:
            manifest = shadow.manifest
            sample, compare = (manifest.sample, manifest.compare) if manifest is not None else (1.0, CompareSpec())
            if sample < 1.0 and self.draw() >= sample:
                continue
            if shadow.name in app.disabled_shadows:  # its discovered contract does not fit the stage
                self._count_labels((app.name, str(stage.number), shadow.name), "mismatched")
                continue
            copy = ShadowCopy(app.name, stage.number, shadow, live.name, inputs, prediction.outputs,
                              live_seconds, context.request_id, timeout, compare, inputs_of(shadow.target))
            context.after_answer.append(functools.partial(self.submit, copy))

    def submit(self, copy: ShadowCopy) -> None:
        """Queue `copy` for its shadow (dropped and counted when the queue is full or the
        gateway stops)."""
        if self.closed:
            self._count(copy, "drained")
            return
        lane = self._lanes.get(copy.labels)
        if lane is None:
            lane = self._lanes[copy.labels] = _Lane(asyncio.Queue(self.queue_size))
            lane.workers = [asyncio.create_task(self._serve(lane), name=f"shadow {'/'.join(copy.labels)}")
                            for _ in range(self.concurrency)]
        try:
            lane.queue.put_nowait(copy)
        except asyncio.QueueFull:
            self._count(copy, "dropped")

    def pending(self) -> int:
        """Copies queued or being sent."""
        return sum(lane.queue.qsize() + len(lane.busy) for lane in self._lanes.values())

    # ------------------------------------------------------------ sending them

    async def _serve(self, lane: _Lane) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self.closed:
            copy = await lane.queue.get()
            lane.busy.add(task)
            try:
                await self._send(copy)
            finally:
                lane.busy.discard(task)

    async def _send(self, copy: ShadowCopy) -> None:
        shadow = copy.shadow
        backend = shadow.model.shadow_backend or shadow.model.backend
        call = BackendCall(copy.inputs, copy.timeout_s, copy.request_id, shadow.selector, None, copy.specs)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(copy.timeout_s):
                prediction = await backend.predict(call)
        except asyncio.CancelledError:
            self._count(copy, "drained")
            raise
        except (GatewayError, TimeoutError) as error:
            self._count(copy, "failed")
            log.debug("request %s: shadow %s of application %s failed: %s", copy.request_id, shadow.name,
                      copy.application, getattr(error, "message", "its deadline passed"))
            return
        except Exception:
            self._count(copy, "failed")
            log.exception("request %s: shadow %s of application %s failed", copy.request_id, shadow.name,
                          copy.application)
            return
        elapsed = time.perf_counter() - started
        self._count(copy, "answered")
        try:
            self._compare(copy, prediction.outputs, elapsed)
        except Exception:
            log.exception("request %s: comparing shadow %s of application %s failed", copy.request_id,
                          shadow.name, copy.application)

    def _compare(self, copy: ShadowCopy, outputs: Mapping[str, NDArray], elapsed: float) -> None:
        comparisons = compare_outputs(copy.live_outputs, outputs, copy.compare)
        metrics = self.metrics
        if metrics is not None:
            labels = copy.labels
            metrics.shadow_seconds.labels(*labels).observe(elapsed)
            metrics.shadow_latency_difference.labels(*labels).observe(elapsed - copy.live_seconds)
            for comparison in comparisons:
                metrics.shadow_comparisons.labels(*labels, comparison.output, str(comparison.agreed).lower()).inc()
                counts = self._agreement.setdefault((*labels, comparison.output), [0, 0])
                counts[0] += comparison.agreed
                counts[1] += 1
                metrics.shadow_agreement.labels(*labels, comparison.output).set(counts[0] / counts[1])
                if comparison.abs_difference is not None:
                    metrics.shadow_abs_difference.labels(*labels, comparison.output).observe(
                        comparison.abs_difference)
        disagreed = [comparison for comparison in comparisons if not comparison.agreed]
        if disagreed and self.log_sample > 0 and self.draw() < self.log_sample:
            log.info("%s", disagreement_line(copy, outputs, disagreed))

    def _count(self, copy: ShadowCopy, outcome: str) -> None:
        self._count_labels(copy.labels, outcome)

    def _count_labels(self, labels: tuple[str, str, str], outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.shadow_copies.labels(*labels, outcome).inc()

    # ------------------------------------------------------------ stopping

    async def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop: queued copies are dropped (counted `drained`), calls under way get `wait_s`
        to finish, then are cancelled (counted `drained` too); copies made later are dropped."""
        self.closed = True
        busy: set[asyncio.Task[None]] = set()
        for lane in self._lanes.values():
            while not lane.queue.empty():
                self._count(lane.queue.get_nowait(), "drained")
            for worker in lane.workers:
                if worker not in lane.busy:
                    worker.cancel()
            busy |= lane.busy
        if busy:
            await asyncio.wait(busy, timeout=wait_s)
        workers = [worker for lane in self._lanes.values() for worker in lane.workers]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._lanes.clear()


def disagreement_line(copy: ShadowCopy, outputs: Mapping[str, NDArray],
                      disagreed: list[OutputComparison]) -> str:
    """The JSON log line of a shadow that disagreed: who, both answers (cut), the differences."""
    return orjson.dumps({
        "event": "shadow_disagreement", "request_id": copy.request_id, "application": copy.application,
        "stage": copy.stage, "shadow": copy.shadow.name, "live": copy.live,
        "outputs": [comparison.output for comparison in disagreed],
        "differences": {comparison.output: {"reason": comparison.reason,
                                            "max_abs_difference": comparison.abs_difference}
                        for comparison in disagreed},
        "live_answer": {comparison.output: preview(copy.live_outputs[comparison.output])
                        for comparison in disagreed},
        "shadow_answer": {comparison.output: preview(outputs[comparison.output])
                          for comparison in disagreed if comparison.output in outputs},
    }, option=orjson.OPT_SERIALIZE_NUMPY).decode()
