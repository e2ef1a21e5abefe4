"""Request scheduling around any backend: the calls of requests that ask for the same model
spec and contract go through one call scheduler (gateway.backends.sharing), which makes
requests arriving while every call is busy leave together.

`scheduled(inner, ...)` decides, once per backend, whether and how: a `Coalescer` when the
model opts in to `batching:` (only for contracts whose every input has a leading -1
dimension), else a `Multiplexer` when the inner backend offers PredictMany (the embedded
runtime), else `inner` as it is. It keeps a scheduler per model spec
sent, keyed on the values (selector, signature, input specs): the pinned one's, and one per
version, label or signature asked for (an application naming `model:N` of a floating model, a
contract discovered per version), up to MAX_SCHEDULERS (idle ones give way); each has its own
call limit. Everything but `predict` is the inner backend's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

from gateway.backends.base import Backend, BackendCall, Prediction, Selector
from gateway.backends.capabilities import PredictsMany, offered
from gateway.backends.coalesce import Coalescer
from gateway.backends.sharing import Call, CallObserver, CallScheduler, Multiplexer
from gateway.manifests import BatchingSpec
from tensorcodecs import Signature, TensorSpec

MAX_SCHEDULERS = 16  # model specs (versions, labels, signatures) with a call scheduler each
MAX_SPEC_KEYS = 64  # input contracts whose value key is kept (hashing one costs a few µs)
SchedulerKey = tuple[Selector | None, str, Hashable]
# Makes a call scheduler over one backend's `predict` (and its target, for logs).
SchedulerFactory = Callable[[Call, str], CallScheduler]


class ScheduledBackend:
    """`inner` with its predictions scheduled by the schedulers `make` makes (see the module
    docstring; `scheduled` decides which). `signature_name` and `specs` are what a call naming
    neither asks `inner` for (the pinned model spec); `batches`: only contracts with a batch
    dimension get a scheduler."""

    def __init__(self, inner: Backend, signature_name: str, specs: Mapping[str, TensorSpec],
                 make: SchedulerFactory, batches: bool) -> None:
        self.inner = inner
        self.signature_name = signature_name
        self.specs = specs
        self._make = make
        self._batches = batches
        self._schedulers: dict[SchedulerKey, CallScheduler] = {}
        self._spec_keys: dict[int, tuple[Mapping[str, TensorSpec], Hashable]] = {}
        self._pinned_key: SchedulerKey = (None, signature_name, self._specs_key(specs))
        pinned = self._scheduler_for(None, signature_name, specs)
        self.scheduler = pinned  # the pinned model spec's (None: its contract cannot be batched)

    @property
    def target(self) -> str:
        return self.inner.target

    @property
    def describes(self) -> bool:
        return self.inner.describes

    async def predict(self, call: BackendCall) -> Prediction:
        signature_name = call.signature_name
        if (call.selector is None and (call.specs is None or call.specs is self.specs)
                and (signature_name is None or signature_name == self.signature_name)):
            scheduler = self.scheduler  # the pinned spec: no key to compute
        else:
            scheduler = self._scheduler_for(call.selector, signature_name,
                                            self.specs if call.specs is None else call.specs)
        if scheduler is None:
            return await self.inner.predict(call)
        return await scheduler.predict(call)

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        return await self.inner.describe(selector, timeout, request_id)

    async def healthy(self, timeout: float) -> bool:
        return await self.inner.healthy(timeout)

    def _scheduler_for(self, selector: Selector | None, signature_name: str | None,
                       specs: Mapping[str, TensorSpec]) -> CallScheduler | None:
        """The call scheduler of what a request sends (model spec, input contract), made on
        first use; an idle one makes room when there are MAX_SCHEDULERS; None: the call goes
        alone (a contract without a batch dimension, or every scheduler busy)."""
        key = (selector, signature_name or self.signature_name, self._specs_key(specs))
        scheduler = self._schedulers.get(key)
        if scheduler is not None:
            return scheduler
        if self._batches and not (specs and all(spec.shape and spec.shape[0] == -1
                                                             for spec in specs.values())):
            return None  # an unknown contract, or one without a batch dimension: no joining
        if len(self._schedulers) >= MAX_SCHEDULERS:
            idle = next((k for k, other in self._schedulers.items() if other.idle and k != self._pinned_key), None)
            if idle is None:
                return None
            del self._schedulers[idle]
        # A call that names no signature or specs asks the inner backend for the same (this
        # wrapper's defaults are its own), so the calls go to it as they come.
        scheduler = self._schedulers[key] = self._make(self.inner.predict, self.inner.target)
        return scheduler

    def _specs_key(self, specs: Mapping[str, TensorSpec]) -> Hashable:
        """The value of an input contract, as a dict key (TensorSpec is a frozen, hashable
        value; a frozenset keeps its hash), remembered per contract object: requests send the
        same few again and again."""
        known = self._spec_keys.get(id(specs))
        if known is not None and known[0] is specs:  # the object is kept: its id is its own
            return known[1]
        key = frozenset(specs.items())
        if len(self._spec_keys) >= MAX_SPEC_KEYS:
            self._spec_keys.clear()
        self._spec_keys[id(specs)] = (specs, key)
        return key


def scheduled(inner: Backend, signature_name: str, specs: Mapping[str, TensorSpec],
              batching: BatchingSpec | None, shared_calls: int | None,
              observe: CallObserver | None = None) -> Backend:
    """`inner`, scheduled when the model batches or its backend shares calls (PredictMany): the
    one place that decides. A batching model's calls are reported to `observe`."""
    if batching is not None:
        size, calls, delay = batching.max_batch_size, batching.max_calls, batching.max_delay_ms / 1000
        return ScheduledBackend(inner, signature_name, specs,
                                lambda one, target: Coalescer(one, target, size, calls, delay, observe),
                                batches=True)
    many = offered(inner, PredictsMany)
    if many is None or shared_calls is None:
        return inner
    limit, predict_many = shared_calls, many.predict_many
    return ScheduledBackend(inner, signature_name, specs,
                            lambda one, target: Multiplexer(one, predict_many, target, limit), batches=False)
