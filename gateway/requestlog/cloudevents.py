"""Request-log records sent as CloudEvents over HTTP, binary mode, with KServe's logger's event
types: `org.kubeflow.serving.inference.request` then `.response` for each call, `ce-id` the
request id, the JSON body as the event's data. Sent by the sink's writer thread."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Mapping

import numpy as np
import orjson

from gateway.manifests.types import CloudEventsSpec
from gateway.observability import Metrics
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.queue import BackgroundWriter
from gateway.requestlog.sink import SinkHealth

log = logging.getLogger("gateway.requestlog")
EVENT_TYPE = "org.kubeflow.serving.inference"


class CloudEventsSink:
    """Each call as two CloudEvents POSTed to `spec.url`, each tried `spec.retries` more times."""

    def __init__(self, spec: CloudEventsSpec, *, metrics: Metrics, capacity: int, max_bytes: int) -> None:
        self.spec = spec
        self._name = f"cloudevents:{spec.url}"
        records = metrics.request_log_records
        self._written, self._dropped, self._skipped, self._failed = (
            records.labels(self._name, outcome) for outcome in ("written", "dropped", "skipped", "failed"))
        self._bytes = metrics.request_log_bytes.labels(self._name)
        self._error: str | None = None
        self._writer: BackgroundWriter[LoggedCall] = BackgroundWriter(
            self._name, self._deliver, capacity=capacity, max_bytes=max_bytes, on_drop=self._dropped.inc)

    @property
    def name(self) -> str:
        return self._name

    def offer(self, call: LoggedCall) -> bool:
        return self._writer.offer(call, call.nbytes)

    def health(self) -> SinkHealth:
        return SinkHealth(self._error is None, self._error, self._writer.queued)

    def close(self, timeout: float) -> None:
        self._writer.close(timeout)

    def _deliver(self, call: LoggedCall) -> None:
        events = [("request", _json(call.inputs))]
        if call.outputs is not None:
            events.append(("response", _json(call.outputs)))
        if any(len(body) > self.spec.max_event_bytes for _, body in events):
            self._skipped.inc()
            return
        for kind, body in events:
            if not self._send(call, kind, body):
                self._failed.inc()
                return
            self._bytes.inc(len(body))
        self._written.inc()
        self._error = None

    def _send(self, call: LoggedCall, kind: str, body: bytes) -> bool:
        headers = {"content-type": "application/json", "ce-specversion": "1.0", "ce-id": call.request_id,
                   "ce-type": f"{EVENT_TYPE}.{kind}", "ce-source": f"gateway/{call.model}"}
        for _ in range(self.spec.retries + 1):
            try:
                request = urllib.request.Request(self.spec.url, body, headers, method="POST")  # noqa: S310 - http(s) only
                with urllib.request.urlopen(request, timeout=self.spec.timeout_s):  # noqa: S310
                    return True
            except OSError as error:
                self._error = f"{type(error).__name__}: {error}"
        log.warning("request log %s: event of request %s not sent: %s", self._name, call.request_id, self._error)
        return False


def _json(arrays: Mapping[str, np.ndarray]) -> bytes:
    return orjson.dumps({name: np.asarray(array).tolist() for name, array in arrays.items()})
