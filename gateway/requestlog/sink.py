"""What every request-log sink offers the log that feeds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from prometheus_client import Counter

from gateway.manifests.request_log_kind import redacted_url
from gateway.manifests.types import CloudEventsSpec, FileSinkSpec
from gateway.observability import Metrics
from gateway.requestlog.call import LoggedCall


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """A sink's state for `/health/ready` (detail only: a sink that is down never makes the
    gateway unready). `error` is the last failure while `ok` is False."""

    ok: bool
    error: str | None = None
    queued: int = 0


def sink_name(spec: FileSinkSpec | CloudEventsSpec) -> str:
    """The name of the sink `spec` makes: `file:DIR`, `cloudevents:URL` (shown redacted, never the URL)."""
    if isinstance(spec, FileSinkSpec):
        return f"file:{spec.dir}"
    return f"cloudevents:{redacted_url(spec.url)}"


class SinkCounters(NamedTuple):
    """A sink's series of `gateway_request_log_records_total` (one per outcome) and of
    `gateway_request_log_bytes_total`."""

    written: Counter
    dropped: Counter
    skipped: Counter
    failed: Counter
    bytes: Counter


def sink_counters(metrics: Metrics, name: str) -> SinkCounters:
    records = metrics.request_log_records
    return SinkCounters(records.labels(sink=name, outcome="written"), records.labels(sink=name, outcome="dropped"),
                        records.labels(sink=name, outcome="skipped"), records.labels(sink=name, outcome="failed"),
                        metrics.request_log_bytes.labels(sink=name))


class Sink(Protocol):
    """Where records go: `offer` only queues (never blocks, never raises; False: dropped and
    counted), a writer of the sink's own delivers them."""

    @property
    def name(self) -> str:
        """The metrics' and health detail's name: `file:DIR`, `cloudevents:URL`."""
        ...

    def offer(self, call: LoggedCall, nbytes: int | None = None) -> bool:
        """Queue `call` for writing, charged `nbytes` (its log computes `call.nbytes` once for
        every sink; None: the sink does); False when the queue is full (dropped, counted)."""
        ...

    def health(self) -> SinkHealth: ...

    def close(self, timeout: float) -> None:
        """Deliver what is queued within `timeout` seconds (the rest dropped, counted), then
        close: a file sink renames its `.partial` file. Runs in a thread (it blocks)."""
        ...
