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

Bounds: a queue holds at most `queue_size` copies and `queue_bytes` of their arrays (inputs
and live outputs, queued or being sent); beyond either a copy is dropped. A comparison of more
than `COMPARE_INLINE_ELEMENTS` values runs in a worker thread (numpy releases the GIL), so a
big tensor never stalls the event loop live requests run on. A reload retires the queues of
shadows it removed (`keep_only`): their copies still go out for `drain_timeout_s`, then the
rest are dropped; once the gateway drains (`draining`) or stops, copies are dropped. Every
dropped copy is counted (`dropped`: over a bound; `drained`: reload, drain, shutdown).
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
from gateway.held_bytes import held_bytes
from gateway.manifests import CompareSpec
from gateway.observability import Metrics
from gateway.registry import Application, Registry, Stage, Target, Variant
from gateway.settings import Settings
from gateway.shadow_compare import OutputComparison, compare_outputs, preview
from tensorcodecs import TensorSpec

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext

log = logging.getLogger("gateway.shadow")
CLOSE_WAIT_S = 1.0  # at shutdown, how long shadow calls under way may still finish
COMPARE_INLINE_ELEMENTS = 65_536  # above this many live output values a comparison runs in a thread
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


@dataclass(eq=False, slots=True)
class _Lane:
    """One shadow's queue (its bounds kept by `submit`; None ends a worker of a retired lane)
    and the workers serving it."""

    queue: asyncio.Queue[tuple[ShadowCopy, int] | None] = field(default_factory=asyncio.Queue)  # copy, bytes
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    busy: set[asyncio.Task[None]] = field(default_factory=set)
    waiting: int = 0  # copies queued
    bytes: int = 0  # of the copies queued or being sent
    cut_at: float | None = None  # retired by a reload: when its remaining copies are dropped


class ShadowTraffic:
    """Every shadow copy of one gateway process, from the request that made it to its comparison."""

    def __init__(self, metrics: Metrics | None = None, *, queue_size: int = 100, queue_bytes: int = 64 << 20,
                 concurrency: int = 2, log_sample: float = 0.01, timeout_s: float = 30.0,
                 drain_timeout_s: float = 30.0, draw: Callable[[], float] = random.random) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.concurrency = concurrency
        self.log_sample = log_sample
        self.timeout_s = timeout_s
        self.drain_timeout_s = drain_timeout_s  # how long a reload lets removed shadows' copies go out
        self.draw = draw  # uniform in [0, 1): samples copies and disagreement log lines
        self.draining: Callable[[], bool] = lambda: False  # the gateway drains: copies are dropped
        self.closed = False
        self._lanes: dict[tuple[str, str, str], _Lane] = {}
        self._retired: dict[_Lane, asyncio.Task[None]] = {}  # lanes a reload removed, until they end
        self._current: set[tuple[str, str, str]] | None = None  # the shadows the registry names (None: any)
        self._agreement: dict[tuple[str, str, str, str], list[int]] = {}  # [agreed, compared]
        self._unbacked: set[str] = set()  # shadow models without a shadow backend, logged once

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None) -> ShadowTraffic:
        return cls(metrics, queue_size=settings.shadow_queue_size, queue_bytes=settings.shadow_queue_bytes,
                   concurrency=settings.shadow_concurrency, log_sample=settings.shadow_log_sample,
                   timeout_s=settings.request_timeout_s, drain_timeout_s=settings.drain_timeout_s)

    # ------------------------------------------------------------ making copies

    def copy(self, app: Application, stage: Stage, live: Variant, inputs: Mapping[str, NDArray],
             prediction: Prediction, live_seconds: float, context: RequestContext, inputs_of: InputsOf) -> None:
        """Leave a copy of this stage's request for each of its shadows (drawn by its `sample`)
        in `context.after_answer`: it is queued once the caller's answer was sent. Never
        raises: a shadow that cannot get its copy is logged and counted `failed`."""
        timeout = app.manifest.timeout_s or self.timeout_s
        for shadow in stage.shadows:
            try:
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
            except Exception:
                log.exception("request %s: no copy for shadow %s of application %s", context.request_id,
                              shadow.name, app.name)
                if self.metrics is not None:
                    self.metrics.shadow_copies.labels(app.name, str(stage.number), shadow.name, "failed").inc()

    def submit(self, copy: ShadowCopy) -> None:
        """Queue `copy` for its shadow: dropped and counted when its queue is full (by count or
        bytes), and when the gateway drains or stops or a reload removed the shadow."""
        if self.closed or self.draining():
            self._count(copy, "drained")
            return
        lane = self._lanes.get(copy.labels)
        if lane is None:
            if self._current is not None and copy.labels not in self._current:
                self._count(copy, "drained")  # made before a reload that removed its shadow
                return
            lane = self._lanes[copy.labels] = _Lane()
            lane.workers = [asyncio.create_task(self._serve(lane), name=f"shadow {'/'.join(copy.labels)}")
                            for _ in range(self.concurrency)]
        size = copy_bytes(copy)
        if lane.waiting >= self.queue_size or lane.bytes + size > self.queue_bytes:
            self._count(copy, "dropped")
            return
        lane.bytes += size
        lane.waiting += 1
        lane.queue.put_nowait((copy, size))

    def pending(self) -> int:
        """Copies queued or being sent."""
        return sum(lane.waiting + len(lane.busy) for lane in (*self._lanes.values(), *self._retired))

    def keep_only(self, registry: Registry) -> None:
        """After a reload swapped in `registry`: the queues of shadows it no longer names are
        retired (their workers end once their queue is empty, their copies still go out for
        `drain_timeout_s`, then the rest are dropped, counted `drained`)."""
        self._current = {(app.name, str(stage.number), shadow.name) for app in registry.applications.values()
                         for stage in app.stages for shadow in stage.shadows}
        for labels in [labels for labels in self._lanes if labels not in self._current]:
            lane = self._lanes.pop(labels)
            lane.cut_at = time.monotonic() + self.drain_timeout_s
            for _ in lane.workers:
                lane.queue.put_nowait(None)
            self._retired[lane] = asyncio.create_task(self._retire(lane), name=f"retire shadow {'/'.join(labels)}")

    async def _retire(self, lane: _Lane) -> None:
        try:
            _, late = await asyncio.wait(lane.workers, timeout=self.drain_timeout_s)
            if late:
                self._drain(lane)
                for worker in late:
                    worker.cancel()  # a call under way is counted `drained`
                await asyncio.gather(*late, return_exceptions=True)
        finally:
            self._retired.pop(lane, None)

    # ------------------------------------------------------------ sending them

    async def _serve(self, lane: _Lane) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self.closed:
            item = await lane.queue.get()
            if item is None:  # its lane was retired and is empty
                return
            copy, size = item
            lane.waiting -= 1
            lane.busy.add(task)
            try:
                await self._send(copy, lane)
            finally:
                lane.busy.discard(task)
                lane.bytes -= size

    async def _send(self, copy: ShadowCopy, lane: _Lane) -> None:
        shadow = copy.shadow
        backend = shadow.model.shadow_backend
        if backend is None:  # the registry gives every shadow model one: never the live path's
            self._count(copy, "failed")
            if shadow.model.label not in self._unbacked:
                self._unbacked.add(shadow.model.label)
                log.error("shadow %s of application %s has no shadow backend: its copies fail", shadow.name,
                          copy.application)
            return
        call = BackendCall(copy.inputs, copy.timeout_s, copy.request_id, shadow.selector, None, copy.specs)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(copy.timeout_s):
                prediction = await backend.predict(call)
        except asyncio.CancelledError:
            self._count(copy, "drained")
            raise
        except (GatewayError, TimeoutError) as error:
            self._count(copy, _failed(lane))
            log.debug("request %s: shadow %s of application %s failed: %s", copy.request_id, shadow.name,
                      copy.application, getattr(error, "message", "its deadline passed"))
            return
        except Exception:
            self._count(copy, _failed(lane))
            log.exception("request %s: shadow %s of application %s failed", copy.request_id, shadow.name,
                          copy.application)
            return
        elapsed = time.perf_counter() - started
        self._count(copy, "answered")
        try:
            await self._compare(copy, prediction.outputs, elapsed)
        except Exception:
            log.exception("request %s: comparing shadow %s of application %s failed", copy.request_id,
                          shadow.name, copy.application)

    async def _compare(self, copy: ShadowCopy, outputs: Mapping[str, NDArray], elapsed: float) -> None:
        if sum(array.size for array in copy.live_outputs.values()) > COMPARE_INLINE_ELEMENTS:
            comparisons = await asyncio.to_thread(compare_outputs, copy.live_outputs, outputs, copy.compare)
        else:
            comparisons = compare_outputs(copy.live_outputs, outputs, copy.compare)
        metrics = self.metrics
        if metrics is not None:
            labels = copy.labels
            metrics.shadow_seconds.labels(*labels).observe(elapsed)
            metrics.shadow_live_seconds.labels(*labels).observe(copy.live_seconds)
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

    def _drain(self, lane: _Lane) -> None:
        """Drop the copies still queued in `lane` (counted `drained`)."""
        while not lane.queue.empty():
            item = lane.queue.get_nowait()
            if item is not None:
                lane.waiting -= 1
                lane.bytes -= item[1]
                self._count(item[0], "drained")

    # ------------------------------------------------------------ stopping

    async def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop: queued copies are dropped (counted `drained`), calls under way get `wait_s`
        to finish, then are cancelled (counted `drained` too); copies made later are dropped."""
        self.closed = True
        lanes = [*self._lanes.values(), *self._retired]
        busy: set[asyncio.Task[None]] = set()
        for lane in lanes:
            self._drain(lane)
            for worker in lane.workers:
                if worker not in lane.busy:
                    worker.cancel()
            busy |= lane.busy
        if busy:
            await asyncio.wait(busy, timeout=wait_s)
        workers = [worker for lane in lanes for worker in lane.workers]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, *self._retired.values(), return_exceptions=True)
        self._lanes.clear()


def _failed(lane: _Lane) -> str:
    """How a failed call counts: `drained` once a reload removed its shadow and its time ran
    out (its channel is closed then), else `failed`."""
    return "drained" if lane.cut_at is not None and time.monotonic() >= lane.cut_at else "failed"


def copy_bytes(copy: ShadowCopy) -> int:
    """The bytes a queued copy keeps alive: its inputs and the live outputs (a view of a larger
    buffer, such as a raw tensor of a large body, charged all of that buffer: `held_bytes`)."""
    return held_bytes([*copy.inputs.values(), *copy.live_outputs.values()])


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
