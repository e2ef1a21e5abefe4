"""`RequestLogs`: the manifests' `request_log` specs turned into sinks, what the data plane
asks to record a call, and the sinks' health.

A sink is shared by every manifest naming it (one per file spec, one per CloudEvents spec: a
directory has one writer in a process) and kept across reloads that still name it, so its
file stays open; a reload that no longer names it closes it (queued records still written,
its file renamed) in a thread of its own. Sampling: an application's log samples requests
(all its stages' calls or none, decided once per request), a model's log samples its calls;
a call both sample goes to each sink once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.manifests.types import CloudEventsSpec, FileSinkSpec, RequestLogSpec
from gateway.observability import Metrics
from gateway.registry import Registry
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.cloudevents import CloudEventsSink
from gateway.requestlog.file_sink import FileSink
from gateway.requestlog.sink import Sink, sink_name
from gateway.settings import Settings

log = logging.getLogger("gateway.requestlog")

SinkSpec = FileSinkSpec | CloudEventsSpec


class RequestLogs:
    """Every request log of the current registry. `active` is False while no manifest names
    one: the data plane's only test per call."""

    def __init__(self, metrics: Metrics, *, capacity: int, max_bytes: int, drain_timeout_s: float = 10.0,
                 draw: Callable[[], float] = random.random) -> None:
        self.metrics = metrics
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.drain_timeout_s = drain_timeout_s
        self.draw = draw
        self.active = False
        self._sinks: dict[SinkSpec, Sink] = {}
        self._of_log: dict[RequestLogSpec, tuple[Sink, ...]] = {}
        # The registry before the last reload: its in-flight requests still find their sinks (a
        # sink closed since counts their calls dropped).
        self._previous: dict[RequestLogSpec, tuple[Sink, ...]] = {}
        self._closing: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> RequestLogs:
        return cls(metrics, capacity=settings.request_log_queue_size, max_bytes=settings.request_log_queue_bytes,
                   drain_timeout_s=settings.drain_timeout_s)

    # ------------------------------------------------------------ configuration

    def for_registry(self, registry: Registry) -> list[Sink]:
        """Make the sinks `registry`'s manifests name (reusing the ones already open); the
        sinks no longer named, to close."""
        specs = list(_specs(registry))
        sinks: dict[SinkSpec, Sink] = {}
        of_log: dict[RequestLogSpec, tuple[Sink, ...]] = {}
        for spec in specs:
            named = []
            for sink_spec in (spec.file, spec.cloudevents):
                if sink_spec is None:
                    continue
                sink = sinks.get(sink_spec) or self._sinks.get(sink_spec) or self._open(sink_spec)
                sinks[sink_spec] = sink
                named.append(sink)
            of_log[spec] = tuple(named)
        removed = [sink for key, sink in self._sinks.items() if key not in sinks]
        self._previous = self._of_log
        self._sinks, self._of_log, self.active = sinks, of_log, bool(of_log)
        return removed

    def keep_only(self, registry: Registry) -> None:
        """After a reload swapped in `registry`: sinks it no longer names are closed (what they
        queued is written within the drain timeout, then their files renamed) in a thread."""
        for sink in self.for_registry(registry):
            thread = threading.Thread(target=sink.close, args=(self.drain_timeout_s,),
                                      name=f"close {sink.name}", daemon=True)
            thread.start()
            self._closing.append(thread)
        self._closing = [thread for thread in self._closing if thread.is_alive()]

    def _open(self, spec: SinkSpec) -> Sink:
        if isinstance(spec, FileSinkSpec):
            return FileSink(spec, metrics=self.metrics, capacity=self.capacity, max_bytes=self.max_bytes)
        return CloudEventsSink(spec, metrics=self.metrics, capacity=self.capacity, max_bytes=self.max_bytes)

    # ------------------------------------------------------------ the request path

    def sampled(self, spec: RequestLogSpec | None) -> bool:
        """Whether this request (an application's log) or call (a model's) is recorded."""
        return spec is not None and (spec.sample_rate >= 1.0 or self.draw() < spec.sample_rate)

    def sinks(self, application: RequestLogSpec | None, model: RequestLogSpec | None) -> list[Sink]:
        """Where a call goes: the application's sinks when `application` is given (it sampled
        the request), the model's when its log samples this call; each sink once."""
        chosen: list[Sink] = []
        lost: set[str] = set()  # sinks of a registry two or more reloads old: closed, their calls dropped
        if application is not None:
            self._add(application, chosen, lost)
        if model is not None and self.sampled(model):
            self._add(model, chosen, lost)
        for name in lost - {sink.name for sink in chosen}:
            self.metrics.request_log_records.labels(sink=name, outcome="dropped").inc()
        return chosen

    def _add(self, spec: RequestLogSpec, chosen: list[Sink], lost: set[str]) -> None:
        found = self._of_log.get(spec)
        if found is None:
            found = self._previous.get(spec)
        if found is None:
            lost.update(sink_name(sink_spec) for sink_spec in (spec.file, spec.cloudevents) if sink_spec is not None)
            return
        chosen.extend(sink for sink in found if sink not in chosen)

    def record(self, call: LoggedCall, sinks: Iterable[Sink]) -> None:
        """Offer `call` to `sinks` (each queues or drops it, counted: never blocks), charged
        its bytes measured once."""
        nbytes: int | None = None
        for sink in sinks:
            if nbytes is None:
                nbytes = call.nbytes
            sink.offer(call, nbytes)

    # ------------------------------------------------------------ health and shutdown

    def health(self) -> dict[str, dict[str, Any]]:
        """Each sink's state, by name (`/health/ready` detail; never its status)."""
        detail: dict[str, dict[str, Any]] = {}
        for sink in self._sinks.values():
            health = sink.health()
            detail[sink.name] = {"ok": health.ok, "error": health.error, "queued": health.queued}
        return detail

    def close(self, timeout: float) -> None:
        """Shutdown: every sink writes what is queued within `timeout` seconds (the rest dropped,
        counted) and closes its file; blocks (run it in a thread)."""
        sinks, self._sinks, self._of_log, self.active = list(self._sinks.values()), {}, {}, False
        self._previous = {}
        threads = [threading.Thread(target=sink.close, args=(timeout,), name=f"close {sink.name}", daemon=True)
                   for sink in sinks]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout + 5.0
        for thread in [*threads, *self._closing]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._closing = []


def _specs(registry: Registry) -> Iterable[RequestLogSpec]:
    models: Mapping[Any, Any] = registry.models
    for model in models.values():
        if model.manifest.request_log is not None:
            yield model.manifest.request_log
    for app in registry.applications.values():
        if app.manifest.request_log is not None:
            yield app.manifest.request_log
