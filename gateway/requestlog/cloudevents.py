"""Request-log records as CloudEvents over HTTP, sent as KServe's inference logger sends them
(pkg/logger): binary mode (the attributes in `ce-*` headers, the JSON data as the body), two
events per model call, `org.kubeflow.serving.inference.request` with the call's inputs and
`org.kubeflow.serving.inference.response` with its outputs (or its error), both with the
request id as `ce-id`. Unlike KServe's logger, the queue is bounded and delivery is counted.

Headers of one event (extension names are lowercase alphanumerics, as CloudEvents requires):

    ce-specversion        1.0
    ce-id                 the request id (both events of a call)
    ce-type               org.kubeflow.serving.inference.request | .response
    ce-source             /gateway/models/<model>, or /gateway/applications/<app>/stages/<n>
    ce-time               when the call started (RFC 3339, UTC)
    content-type          application/json
    ce-inferenceservicename, ce-component   KServe's: the model's name, `predictor`
    ce-modelversion, ce-signaturename, ce-status, ce-application, ce-stage, ce-variant
                          this gateway's (each only when the call has it)
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

import httpx

from gateway.answers import native_body
from gateway.manifests.types import CloudEventsSpec
from gateway.observability import Metrics
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.queue import BackgroundWriter
from gateway.requestlog.records import iso_time
from gateway.requestlog.sink import SinkHealth
from tensorcodecs.json_codec import encode_outputs

log = logging.getLogger("gateway.requestlog")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
COMPONENT = "predictor"  # KServe's component of a model call (its others: transformer, explainer)
BACKOFF_S = 0.1  # before the first retry; doubled for each next one
BACKOFF_MAX_S = 2.0
_RETRIED_STATUSES = frozenset({429, *range(500, 600)})
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]*")


class _Failure(NamedTuple):
    reason: str  # what health reports
    logged: bool  # already logged (a refusal: once per status)


@dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent in binary mode: its HTTP headers and body."""

    headers: Mapping[str, str]
    body: bytes


def call_events(call: LoggedCall) -> tuple[Event, Event]:
    """The request and response events of `call` (pure; run in the writer thread)."""
    attributes = _attributes(call)
    request = Event({"ce-type": REQUEST_TYPE, **attributes}, encode_outputs(call.inputs))
    body = encode_outputs(call.outputs) if call.outputs is not None else error_body(call)
    return request, Event({"ce-type": RESPONSE_TYPE, **attributes}, body)


def event_source(call: LoggedCall) -> str:
    """`ce-source`: the model route, or the application's stage, that made the call (with the
    request id, it tells apart every event of a request but the pair's own two, as in KServe)."""
    if call.application is not None:
        stage = "" if call.stage is None else f"/stages/{call.stage}"
        return f"/gateway/applications/{quote(call.application, safe='')}{stage}"
    return f"/gateway/models/{quote(call.model, safe='')}"


def error_body(call: LoggedCall) -> bytes:
    """A failed call's response event: the native error object its answer had. The logged
    error is `code: message`; a text without a machine code is the message of `error`."""
    text = call.error or f"the call failed with status {call.status}"
    code, separator, message = text.partition(": ")
    if not separator or not _ERROR_CODE.fullmatch(code):
        code, message = "error", text
    return native_body(code, message)


def _attributes(call: LoggedCall) -> dict[str, str]:
    attributes = {
        "ce-specversion": "1.0",
        "ce-id": header_value(call.request_id),
        "ce-source": header_value(event_source(call)),
        "ce-time": iso_time(call.time),
        "content-type": "application/json",
        "ce-inferenceservicename": header_value(call.model),
        "ce-component": COMPONENT,
        "ce-status": str(call.status),
    }
    if call.version is not None:
        attributes["ce-modelversion"] = str(call.version)
    if call.signature_name:
        attributes["ce-signaturename"] = header_value(call.signature_name)
    if call.application is not None:
        attributes["ce-application"] = header_value(call.application)
    if call.stage is not None:
        attributes["ce-stage"] = str(call.stage)
    if call.variant is not None:
        attributes["ce-variant"] = header_value(call.variant)
    return attributes


def header_value(text: str) -> str:
    """`text` as a CloudEvents HTTP header value: space, `"`, `%` and everything outside
    printable ASCII percent-encoded as UTF-8 (the HTTP binding's rule, 3.1.3.2)."""
    if text.isascii() and text.isprintable() and not any(c in text for c in ' "%'):
        return text
    return quote(text, safe="!#$&'()*+,/:;<=>?@[\\]^_`{|}~-.")


class CloudEventsSink:
    """Sends each offered call as its two events to `spec.url`, from a writer thread of its own
    (one keep-alive connection): every attempt within `timeout_s`, up to `retries` more on a
    connection error, a timeout, a 5xx or a 429, with an exponential back-off; another 4xx
    fails the call at once. A call counts `written` once both its events went, `failed` when
    one did not, `skipped` when an event is over `max_event_bytes`; the queue's drops count
    `dropped`. Retries hold only the writer thread: a slow or down server fills the queue,
    whose new calls are dropped, and never holds a request."""

    def __init__(self, spec: CloudEventsSpec, *, metrics: Metrics, capacity: int, max_bytes: int) -> None:
        self.spec = spec
        self._name = f"cloudevents:{spec.url}"
        records = metrics.request_log_records
        self._written = records.labels(sink=self._name, outcome="written")
        self._dropped = records.labels(sink=self._name, outcome="dropped")
        self._skipped = records.labels(sink=self._name, outcome="skipped")
        self._failed = records.labels(sink=self._name, outcome="failed")
        self._bytes = metrics.request_log_bytes.labels(sink=self._name)
        self._client: httpx.Client | None = None  # made by the writer thread: its TLS set-up takes ~30 ms
        self._error: str | None = None  # the last call's failure, until a call is delivered
        self._refusals_logged: set[int] = set()
        self._skip_logged = False
        self._deadline = math.inf  # time.monotonic() by which a closing sink stops trying
        self._closing = threading.Event()  # wakes a back-off, to bound it by the close's deadline
        self._writer: BackgroundWriter[LoggedCall] = BackgroundWriter(
            self._name, self._deliver, capacity=capacity, max_bytes=max_bytes,
            on_drop=self._dropped.inc, finish=self._close_client)

    @property
    def name(self) -> str:
        return self._name

    def offer(self, call: LoggedCall) -> bool:
        """Queue `call` (charged its arrays' bytes); False when the queue is full (dropped, counted)."""
        return self._writer.offer(call, call.nbytes)

    def health(self) -> SinkHealth:
        return SinkHealth(ok=self._error is None, error=self._error, queued=self._writer.queued)

    def close(self, timeout: float) -> None:
        """Send what is queued within `timeout` seconds (the rest dropped, counted; a call still
        being retried then fails), then close the connection. Blocks: call it in a thread."""
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._writer.close(timeout)

    # ------------------------------------------------------------ the writer thread

    def _deliver(self, call: LoggedCall) -> None:
        if time.monotonic() >= self._deadline:  # closing, and its time is up: still queued, so dropped
            self._dropped.inc()
            return
        try:
            events = call_events(call)
        except Exception:  # a value JSON cannot carry: this call's fault, not the server's
            self._failed.inc()
            log.exception("request log %s: request %s could not be written as events", self._name, call.request_id)
            return
        largest = max(len(event.body) for event in events)
        if largest > self.spec.max_event_bytes:
            self._skipped.inc()
            if not self._skip_logged:
                self._skip_logged = True
                log.warning("request log %s: request %s skipped: an event of %d bytes is over max_event_bytes (%d); "
                            "further skipped calls are counted, not logged",
                            self._name, call.request_id, largest, self.spec.max_event_bytes)
            return
        for event in events:
            failure = self._send(event)
            if failure is not None:
                self._failed.inc()
                self._fail(failure)
                return
            self._bytes.inc(len(event.body))
        self._written.inc()
        if self._error is not None:
            log.info("request log %s: events delivered again", self._name)
            self._error = None

    def _send(self, event: Event) -> _Failure | None:
        """Deliver `event`, retrying what may pass; None once the server took it, else why not."""
        error = "the sink closed before the event was sent"
        for attempt in range(self.spec.retries + 1):
            if attempt and not self._back_off(attempt):
                break
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._client is None:
                self._client = httpx.Client(timeout=self.spec.timeout_s)
            try:
                response = self._client.post(self.spec.url, content=event.body, headers=event.headers,
                                             timeout=min(self.spec.timeout_s, remaining))
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            status = response.status_code
            if 200 <= status < 300:
                return None
            error = f"the server answered {status} {response.reason_phrase}".rstrip()
            if status not in _RETRIED_STATUSES:
                if status not in self._refusals_logged:
                    self._refusals_logged.add(status)
                    log.warning("request log %s: %s: calls it refuses are failed, not retried (logged once "
                                "per status)", self._name, error)
                return _Failure(error, logged=True)
        return _Failure(error, logged=False)

    def _back_off(self, attempt: int) -> bool:
        """Wait before retry `attempt`; False when the sink closes meanwhile (past its deadline)."""
        pause = min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
        end = time.monotonic() + pause
        if not self._closing.wait(pause):
            return True
        rest = min(end, self._deadline) - time.monotonic()  # closing: the rest of the pause, within its time
        if rest > 0:
            time.sleep(rest)
        return time.monotonic() < self._deadline

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()

    def _fail(self, failure: _Failure) -> None:
        if self._error is None and not failure.logged:  # once per outage, not per call
            log.warning("request log %s: events not delivered: %s (calls are counted failed until one is)",
                        self._name, failure.reason)
        self._error = failure.reason
