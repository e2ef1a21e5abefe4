"""Request-log records as CloudEvents over HTTP, sent as KServe's inference logger sends them
(pkg/logger): binary mode (the attributes in `ce-*` headers, the JSON data as the body), two
events per model call, `org.kubeflow.serving.inference.request` with the call's inputs and
`org.kubeflow.serving.inference.response` with its outputs (or its error), both with the
request id as `ce-id`, the bodies Open Inference Protocol JSON (`oip.py`). Unlike KServe's
logger, the queue is bounded and delivery is counted.

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

import asyncio
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

import httpx

from gateway.manifests.types import CloudEventsSpec
from gateway.observability import Metrics
from gateway.requestlog import oip
from gateway.requestlog.call import LoggedCall
from gateway.requestlog.queue import BackgroundWriter
from gateway.requestlog.records import iso_time
from gateway.requestlog.sink import SinkHealth, sink_counters, sink_name

log = logging.getLogger("gateway.requestlog")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
COMPONENT = "predictor"  # KServe's component of a model call (its others: transformer, explainer)
BACKOFF_S = 0.1  # before the first retry; doubled for each next one
BACKOFF_MAX_S = 2.0
JITTER = 0.5  # each back-off is its pause times 1 ± JITTER: workers do not retry in lockstep
SENDERS = 4  # threads (each with its own connection) sending calls at once
_RETRIED_STATUSES = frozenset({429, *range(500, 600)})
_SENDER_PREFIX = "request-log cloudevents:"


def _not_a_sender(record: logging.LogRecord) -> bool:
    """httpx logs each request with its full URL at INFO: for a sink, a line per event with the
    credentials the URL may carry. The sink logs what matters itself, under its redacted name."""
    return not (record.threadName or "").startswith(_SENDER_PREFIX)


logging.getLogger("httpx").addFilter(_not_a_sender)


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
    request = Event({"ce-type": REQUEST_TYPE, **attributes},
                    oip.request_body(call.request_id, call.model, call.version, call.inputs))
    body = (oip.response_body(call.request_id, call.model, call.version, call.outputs)
            if call.outputs is not None else error_body(call))
    return request, Event({"ce-type": RESPONSE_TYPE, **attributes}, body)


def event_source(call: LoggedCall) -> str:
    """`ce-source`: the model route, or the application's stage, that made the call (with the
    request id, it tells apart every event of a request but the pair's own two, as in KServe)."""
    if call.application is not None:
        stage = "" if call.stage is None else f"/stages/{call.stage}"
        return f"/gateway/applications/{quote(call.application, safe='')}{stage}"
    return f"/gateway/models/{quote(call.model, safe='')}"


def error_body(call: LoggedCall) -> bytes:
    """A failed call's response event: an Open Inference Protocol error, `{"error": text}`,
    the text the call's error logged (`code: message`)."""
    return oip.error_body(call.error or f"the call failed with status {call.status}")


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
    """Sends each offered call as its two events to `spec.url` from SENDERS threads of its own
    (each with its own keep-alive connection; one call's two events from one thread, request
    first): every attempt within `timeout_s` in all, up to `retries` more on a connection
    error, a timeout, a 5xx or a 429, with a jittered exponential back-off; another 4xx fails
    the call at once. A call counts `written` once both its events went, `failed` when one did
    not, `skipped` when an event is over `max_event_bytes`; the queue's drops count `dropped`.
    Retries hold only a sender: a slow or down server fills the queue, whose new calls are
    dropped, and never holds a request. The queue's writer thread hands each call to a free
    sender, so at most SENDERS calls are out of the queue at once."""

    def __init__(self, spec: CloudEventsSpec, *, metrics: Metrics, capacity: int, max_bytes: int) -> None:
        self.spec = spec
        self._name = sink_name(spec)  # shown: health, labels, logs; never the URL
        self._written, self._dropped, self._skipped, self._failed, self._bytes = sink_counters(metrics, self._name)
        self._error: str | None = None  # why the last call failed (or is being retried), until one is delivered
        self._outage_logged = False
        self._refusals_logged: set[int] = set()
        self._lock = threading.Lock()  # the senders' shared log-once state
        self._skip_logged = False
        self._deadline = math.inf  # time.monotonic() by which a closing sink stops trying
        self._closing = threading.Event()  # wakes a back-off, to bound it by the close's deadline
        self._attempts: dict[asyncio.Timeout, asyncio.AbstractEventLoop] = {}  # the POSTs under way
        self._idle = threading.Semaphore(SENDERS)
        self._calls: queue.SimpleQueue[LoggedCall | None] = queue.SimpleQueue()
        self._senders = [threading.Thread(target=self._sender, name=f"request-log {self._name} sender {n}",
                                          daemon=True) for n in range(SENDERS)]
        for thread in self._senders:
            thread.start()
        self._writer: BackgroundWriter[LoggedCall] = BackgroundWriter(
            self._name, self._dispatch, capacity=capacity, max_bytes=max_bytes,
            on_drop=self._dropped.inc, finish=self._stop_senders)

    @property
    def name(self) -> str:
        return self._name

    def offer(self, call: LoggedCall, nbytes: int | None = None) -> bool:
        """Queue `call` (charged `nbytes`, by default `call.nbytes`); False when the queue is
        full (dropped, counted)."""
        return self._writer.offer(call, call.nbytes if nbytes is None else nbytes)

    def health(self) -> SinkHealth:
        error = self._error
        return SinkHealth(ok=error is None, error=error, queued=self._writer.queued)

    def close(self, timeout: float) -> None:
        """Send what is queued within `timeout` seconds (the rest dropped, counted; a call whose
        POST is under way or retried then fails: the close's deadline cuts it), then close the
        connections. Blocks: call it in a thread."""
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        with self._lock:  # an attempt started before the close ends by its deadline too
            for scope, loop in self._attempts.items():
                loop.call_soon_threadsafe(self._cut, scope)
        self._writer.close(timeout)

    # ------------------------------------------------------------ the queue's writer thread

    def _dispatch(self, call: LoggedCall) -> None:
        while not self._idle.acquire(timeout=0.1):  # every sender busy: wait, but not past a close's deadline
            if time.monotonic() >= self._deadline:
                self._dropped.inc()
                return
        if time.monotonic() >= self._deadline:  # closing, and its time is up: still queued, so dropped
            self._idle.release()
            self._dropped.inc()
            return
        self._calls.put(call)

    def _stop_senders(self) -> None:
        for _ in self._senders:
            self._calls.put(None)
        for thread in self._senders:
            thread.join(max(0.0, min(self._deadline, time.monotonic() + 60.0) - time.monotonic()) + 1.0)

    # ------------------------------------------------------------ a sender thread

    def _sender(self) -> None:
        with asyncio.Runner() as runner:  # each attempt runs under an overall deadline
            client: httpx.AsyncClient | None = None  # made on first use: its TLS set-up takes ~30 ms
            try:
                while (call := self._calls.get()) is not None:
                    try:
                        if client is None:
                            client = httpx.AsyncClient()
                        self._deliver(call, runner, client)
                    except Exception:  # a fault of this code, not the server's: still counted
                        self._failed.inc()
                        log.exception("request log %s: request %s could not be sent", self._name, call.request_id)
                    finally:
                        self._idle.release()
            finally:
                if client is not None:
                    runner.run(client.aclose())

    def _deliver(self, call: LoggedCall, runner: asyncio.Runner, client: httpx.AsyncClient) -> None:
        if time.monotonic() >= self._deadline:
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
            failure = self._send(event, runner, client)
            if failure is not None:
                self._fail(failure)  # health first: whoever sees the count sees why
                self._failed.inc()
                return
            self._bytes.inc(len(event.body))
        self._written.inc()
        if self._error is not None:
            if self._outage_logged:
                log.info("request log %s: events delivered again", self._name)
            self._error = None
            self._outage_logged = False

    def _send(self, event: Event, runner: asyncio.Runner, client: httpx.AsyncClient) -> _Failure | None:
        """Deliver `event`, retrying what may pass; None once the server took it, else why not."""
        error = "the sink closed before the event was sent"
        for attempt in range(self.spec.retries + 1):
            if attempt:
                self._error = f"retrying: {error}"  # health says so while the call is retried
                if not self._back_off(attempt):
                    break
            budget = min(self.spec.timeout_s, self._deadline - time.monotonic())
            if budget <= 0:
                break
            try:
                response = runner.run(self._attempt(client, event, budget))
            except TimeoutError:
                error = ("the sink closed before the server answered" if time.monotonic() >= self._deadline
                         else f"no answer within {budget:.3g} s")
                continue
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = _describe(exc)
                continue
            status = response.status_code
            if 200 <= status < 300:
                return None
            error = f"the server answered {status} {response.reason_phrase}".rstrip()
            if status not in _RETRIED_STATUSES:
                with self._lock:
                    first = status not in self._refusals_logged
                    self._refusals_logged.add(status)
                if first:
                    log.warning("request log %s: %s: calls it refuses are failed, not retried (logged once "
                                "per status)", self._name, error)
                return _Failure(error, logged=True)
        return _Failure(error, logged=False)

    async def _attempt(self, client: httpx.AsyncClient, event: Event, budget: float) -> httpx.Response:
        """One POST, connecting, sending and reading the answer within `budget` seconds in all."""
        async with asyncio.timeout(budget) as scope:
            loop = asyncio.get_running_loop()
            with self._lock:
                self._attempts[scope] = loop
            try:
                self._cut(scope)  # a close since `budget` was computed: its deadline, not the budget's
                return await client.post(self.spec.url, content=event.body, headers=event.headers, timeout=budget)
            finally:
                with self._lock:
                    del self._attempts[scope]

    def _cut(self, scope: asyncio.Timeout) -> None:
        """End `scope`'s attempt by the close's deadline (runs in the attempt's loop)."""
        rest = self._deadline - time.monotonic()
        if rest == math.inf:
            return
        when = asyncio.get_running_loop().time() + max(rest, 0.0)
        current = scope.when()
        try:
            if current is None or when < current:
                scope.reschedule(when)
        except RuntimeError:  # the attempt ended meanwhile
            pass

    def _back_off(self, attempt: int) -> bool:
        """Wait before retry `attempt`; False when the sink closes meanwhile (past its deadline)."""
        pause = min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S) * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 (timing)
        end = time.monotonic() + pause
        if not self._closing.wait(pause):
            return True
        rest = min(end, self._deadline) - time.monotonic()  # closing: the rest of the pause, within its time
        if rest > 0:
            time.sleep(rest)
        return time.monotonic() < self._deadline

    def _fail(self, failure: _Failure) -> None:
        with self._lock:
            first = not self._outage_logged
            self._outage_logged = True
        if first and not failure.logged:  # once per outage, not per call
            log.warning("request log %s: events not delivered: %s (calls are counted failed until one is)",
                        self._name, failure.reason)
        self._error = failure.reason


def _describe(exc: Exception) -> str:
    """`ConnectError: [Errno 111] Connection refused`: the error, with the OS's reason when a
    cause has one (the async transport words a refused connection "All connection attempts failed")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return f"{type(exc).__name__}: [Errno {cause.errno}] {os.strerror(cause.errno)}"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
