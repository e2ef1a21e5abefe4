"""Request ids, Prometheus metrics and the structured access log, as one pure ASGI middleware.

Routes and the data plane label what they learn about a request (`application`, `model`,
`version`) in its `RequestContext.labels` (gateway.dataplane), which the route keeps in the
scope (`CONTEXT_KEY`); the middleware counts and logs the request with them once the answer
has been sent.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.answer_headers import answer_headers
from gateway.backends.sharing import TRIGGERS, CallObserver

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext

REQUEST_ID_HEADER = b"x-request-id"
# In a request's scope, set by gateway.http_protocol: the buffer its body was read into whole (a
# weak reference to a WholeBody: its bytes passed `receive` by).
WHOLE_BODY_READ_KEY = "gateway.whole_body_read"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
QUEUE_DELAY_BUCKETS = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0)
ABS_DIFFERENCE_BUCKETS = (0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
LATENCY_DIFFERENCE_BUCKETS = (-10.0, -1.0, -0.25, -0.1, -0.05, -0.01, -0.001, 0.0, 0.001, 0.01, 0.05, 0.1,
                              0.25, 1.0, 10.0)
CONTEXT_KEY = "gateway.context"  # where a route keeps the request's RequestContext in the scope
PROGRESS_KEY = "gateway.answer_progress"  # how far the answer went out, once the middleware is done
_NO_LABELS: Mapping[str, str] = {}

log = logging.getLogger("gateway")


class Metrics:
    """Every metric the gateway exports, in one registry (one per app, so tests can count)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("route", "application", "model", "version", "status")
        self.requests = Counter("gateway_requests", "HTTP requests answered", labels,
                                registry=self.registry)
        self.request_seconds = Histogram("gateway_request_duration_seconds",
                                         "Whole-request latency, from the first byte read to the last "
                                         "byte sent", ("route", "application"),
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("gateway_requests_in_flight", "HTTP requests being served",
                               registry=self.registry, multiprocess_mode="livesum")
        self.request_bytes = Counter("gateway_request_bytes", "Request body bytes received", ("route",),
                                     registry=self.registry)
        self.response_bytes = Counter("gateway_response_bytes", "Response body bytes sent", ("route",),
                                      registry=self.registry)
        self.contract_errors = Counter("gateway_contract_errors", "Requests refused by a contract",
                                       ("application",), registry=self.registry)
        self.backend_seconds = Histogram("gateway_backend_duration_seconds", "Backend call latency",
                                         ("model", "version"), buckets=LATENCY_BUCKETS,
                                         registry=self.registry)
        self.backend_errors = Counter("gateway_backend_errors", "Backend calls that failed, by gRPC code",
                                      ("model", "version", "code"), registry=self.registry)
        self.circuit_state = Gauge("gateway_circuit_state", "Backend circuit: 0 closed, 1 half-open, "
                                   "2 open", ("target",), registry=self.registry,
                                   multiprocess_mode="max")
        self.log_dropped = Counter("gateway_access_log_dropped", "Access-log lines dropped because the "
                                   "writer could not keep up", registry=self.registry)
        # Hot path: the labelled children each request updates, looked up once per label set
        # (`labels()` costs a lock and a dict lookup per metric), and the in-flight gauge read
        # from a plain counter when scraped (one process) instead of locked on every request.
        self.serving = 0
        self._request_children: dict[tuple[str, str, str, str, int], RequestChildren] = {}
        self._backend_children: dict[tuple[str, str], Any] = {}
        self.multiprocess = multiprocess_dir() is not None
        if not self.multiprocess:
            self.in_flight.set_function(lambda: self.serving)
        # Shadow variants (gateway.shadows): their calls are counted here only, never above.
        shadow = ("application", "stage", "shadow")
        self.shadow_copies = Counter("gateway_shadow_copies", "Copies of requests for shadow variants, by "
                                     "outcome: answered, failed, dropped (queue full by count or bytes), drained (a "
                                     "reload removed the shadow, the gateway drains or stops), mismatched (its "
                                     "discovered contract does not fit the stage)",
                                     (*shadow, "outcome"), registry=self.registry)
        self.shadow_seconds = Histogram("gateway_shadow_duration_seconds", "Shadow backend call latency",
                                        shadow, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.shadow_comparisons = Counter("gateway_shadow_comparisons", "Shadow outputs compared with the "
                                          "live variant's, by whether they agreed", (*shadow, "output", "agreed"),
                                          registry=self.registry)
        self.shadow_agreement = Gauge("gateway_shadow_agreement_ratio", "Share of a shadow output's "
                                      "comparisons that agreed (this process's, since it started)",
                                      (*shadow, "output"), registry=self.registry,
                                      multiprocess_mode="livemostrecent")
        self.shadow_abs_difference = Histogram("gateway_shadow_abs_difference", "max |shadow - live| of a "
                                               "numeric output, per comparison", (*shadow, "output"),
                                               buckets=ABS_DIFFERENCE_BUCKETS, registry=self.registry)
        self.shadow_latency_difference = Histogram("gateway_shadow_latency_difference_seconds",
                                                   "Shadow call latency minus the live call's (no _sum: "
                                                   "negative buckets; means from gateway_shadow_duration_"
                                                   "seconds and gateway_shadow_live_duration_seconds)", shadow,
                                                   buckets=LATENCY_DIFFERENCE_BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram("gateway_stage_duration_seconds", "An application stage's backend "
                                       "call latency, by the model version that served it", ("application", "stage",
                                                                                              "model", "version"),
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self._stage_children: dict[tuple[str, int, str, str], Any] = {}
        self.output_contract_violations = Counter("gateway_output_contract_violations", "Answers refused "
                                                  "because they broke the model's output contract "
                                                  "(validate_outputs)", ("model", "version"),
                                                  registry=self.registry)
        self.shadow_live_seconds = Histogram("gateway_shadow_live_duration_seconds", "The live backend call's "
                                             "latency for the copies a shadow answered (compare with "
                                             "gateway_shadow_duration_seconds)", shadow, buckets=LATENCY_BUCKETS,
                                             registry=self.registry)
        # Request logs (gateway.requestlog): per sink ("file:DIR", "cloudevents:URL").
        self.request_log_records = Counter("gateway_request_log_records", "Request-log records by sink and "
                                           "outcome: written (delivered), dropped (queue full by count or bytes, "
                                           "or still queued at shutdown), skipped (larger than the sink's "
                                           "limit), failed (the sink refused it after its retries)",
                                           ("sink", "outcome"), registry=self.registry)
        self.request_log_bytes = Counter("gateway_request_log_bytes", "Request-log bytes delivered, by sink",
                                         ("sink",), registry=self.registry)
        self.after_answer_errors = Counter("gateway_after_answer_errors", "Jobs run once an answer was sent "
                                           "(queueing shadow copies) that raised (logged)", registry=self.registry)
        self.batch_rows = Histogram("gateway_batch_size", "Rows per backend call of a batching model",
                                    ("model", "version"), buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.batch_queue_seconds = Histogram("gateway_batch_queue_delay_seconds", "How long a request to a "
                                             "batching model waited for its call (of those that reached one)",
                                             ("model", "version"),
                                             buckets=QUEUE_DELAY_BUCKETS, registry=self.registry)
        self.batches = Counter("gateway_batches", "Backend calls of a batching model, by what made them leave: "
                               "immediate, call_free, full, max_delay, split", ("model", "version", "trigger"),
                               registry=self.registry)

    def batch_observer(self, model: str, version: int) -> CallObserver:
        """What a batching model's scheduler reports each call to (gateway.backends.sharing)."""
        rows = self.batch_rows.labels(model, str(version))
        waits = self.batch_queue_seconds.labels(model, str(version))
        triggers = {trigger: self.batches.labels(model, str(version), trigger) for trigger in TRIGGERS}

        def observe(size: int, trigger: str, delays: Sequence[float]) -> None:
            rows.observe(size)
            triggers[trigger].inc()
            for delay in delays:
                waits.observe(delay)

        return observe

    def request_children(self, route: str, application: str, model: str, version: str,
                         status: int) -> RequestChildren:
        """The children of the per-request metrics for one label set (created on first use)."""
        key = (route, application, model, version, status)
        children = self._request_children.get(key)
        if children is None:
            children = RequestChildren(self.requests.labels(route, application, model, version, str(status)),
                                       self.request_seconds.labels(route, application),
                                       self.request_bytes.labels(route), self.response_bytes.labels(route))
            self._request_children[key] = children
        return children

    def backend_seconds_child(self, model: str, version: str) -> Any:
        """`backend_seconds` for one model version (created on first use)."""
        key = (model, version)
        child = self._backend_children.get(key)
        if child is None:
            child = self._backend_children[key] = self.backend_seconds.labels(model, version)
        return child

    def stage_seconds_child(self, application: str, stage: int, model: str, version: str) -> Any:
        """`stage_seconds` for one stage's model version (created on first use)."""
        key = (application, stage, model, version)
        child = self._stage_children.get(key)
        if child is None:
            child = self._stage_children[key] = self.stage_seconds.labels(application, str(stage), model, version)
        return child


class RequestChildren:
    """The labelled metrics one request updates."""

    __slots__ = ("request_bytes", "requests", "response_bytes", "seconds")

    def __init__(self, requests: Any, seconds: Any, request_bytes: Any, response_bytes: Any) -> None:
        self.requests = requests
        self.seconds = seconds
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes


class AccessLog:
    """One JSON line per request, written by a background thread in batches: requests only
    append a line to a bounded buffer (no lock, no thread wake-up per request); the writer
    drains it every `interval_s`. When the buffer is full a line is dropped (and counted)
    rather than slowing requests down."""

    def __init__(self, metrics: Metrics, stream: IO[str] | None = None, capacity: int = 10_000,
                 interval_s: float = 0.05) -> None:
        self.metrics = metrics
        self.stream = stream or sys.stdout
        self.capacity = capacity
        self.interval_s = interval_s
        self._lines: deque[bytes] = deque()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
        self._thread.start()

    def record(self, entry: dict[str, Any]) -> None:
        if len(self._lines) >= self.capacity:
            self.metrics.log_dropped.inc()
            return
        self._lines.append(orjson.dumps(entry))

    def _write(self) -> None:
        lines = self._lines
        while True:
            closing = self._closing.wait(self.interval_s)
            batch = [lines.popleft() for _ in range(len(lines))]
            if batch:
                try:
                    self.stream.write(b"\n".join(batch).decode() + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # a closed stream: keep draining
                    pass
            if closing and not lines:
                return

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)


_ID_PREFIX = os.urandom(12).hex()
_ID_COUNTER = itertools.count()


def new_request_id() -> bytes:
    """A new request id: 24 random hex digits per process, then a counter (unique, cheap)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}".encode()


class RequestObserver:
    """Request ids, metrics and the access log around one HTTP request: `begin` before it is
    served, `end` once its answer has been sent (`ObservabilityMiddleware`)."""

    __slots__ = ("access_log", "metrics")

    def __init__(self, metrics: Metrics, access_log: AccessLog | None) -> None:
        self.metrics = metrics
        self.access_log = access_log

    def begin(self, scope: Scope) -> bytes:
        """Choose the request's id (the client's `x-request-id` when sane, else a new one),
        keep it in `scope["state"]` (the request context takes it to backend calls); count the
        request in flight."""
        request_id = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = value if _VALID_ID.fullmatch(value) else b""
                break
        if not request_id:
            request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id.decode()
        metrics = self.metrics
        metrics.serving += 1
        if metrics.multiprocess:
            metrics.in_flight.inc()
        return request_id

    def end(self, scope: Scope, status: int, bytes_in: int, bytes_out: int, started: float) -> None:
        """Count and log the request, labelled with what its context learned (`labels_of`)."""
        metrics = self.metrics
        metrics.serving -= 1
        if metrics.multiprocess:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", "unmatched")
        labels = labels_of(scope)
        application = labels.get("application", "")
        model, version = labels.get("model", ""), labels.get("version", "")
        children = metrics.request_children(route, application, model, version, status)
        children.requests.inc()
        children.seconds.observe(elapsed)
        children.request_bytes.inc(bytes_in)
        children.response_bytes.inc(bytes_out)
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.record({
                "time": time.time(), "request_id": scope["state"]["request_id"], "method": scope["method"],
                "path": scope["path"], "status": status, "duration_ms": round(elapsed * 1000, 3),
                "bytes_in": bytes_in, "bytes_out": bytes_out, "application": application,
                "model": model, "version": version, "variants": _served(scope),
                "client": client[0] if client else None,
            })


    def begin_call(self, sent_id: str | None) -> str:
        """`begin` for a front door without an ASGI scope (gRPC): the request's id (`sent_id`
        when sane, else a new one), counted in flight."""
        request_id = sent_id if sent_id is not None and _VALID_ID.fullmatch(sent_id.encode()) else ""
        metrics = self.metrics
        metrics.serving += 1
        if metrics.multiprocess:
            metrics.in_flight.inc()
        return request_id or new_request_id().decode()

    def end_call(self, entry: CallRecord) -> None:
        """`end` for a front door without an ASGI scope: the call's metrics and access-log line."""
        metrics = self.metrics
        metrics.serving -= 1
        if metrics.multiprocess:
            metrics.in_flight.dec()
        context = entry.context
        labels = context.labels if context is not None else _NO_LABELS
        application = labels.get("application", "")
        model, version = labels.get("model", ""), labels.get("version", "")
        children = metrics.request_children(entry.route, application, model, version, entry.status)
        children.requests.inc()
        children.seconds.observe(entry.seconds)
        children.request_bytes.inc(entry.bytes_in)
        children.response_bytes.inc(entry.bytes_out)
        if self.access_log is not None:
            self.access_log.record({
                "time": time.time(), "request_id": entry.request_id, "method": entry.method,
                "path": entry.route, "status": entry.status, "grpc_status": entry.grpc_status,
                "duration_ms": round(entry.seconds * 1000, 3), "bytes_in": entry.bytes_in,
                "bytes_out": entry.bytes_out, "application": application, "model": model, "version": version,
                "variants": context.served if context is not None else [], "client": entry.client,
            })


@dataclass(slots=True)
class CallRecord:
    """What `RequestObserver.end_call` records of one call that came through no ASGI scope."""

    request_id: str
    method: str  # "GRPC"
    route: str  # the method path, /package.Service/Method: the `route` label of the metrics
    status: int  # the HTTP status of the outcome (200, else the error's), as HTTP requests are counted
    grpc_status: str  # OK, INVALID_ARGUMENT, ...
    seconds: float
    bytes_in: int
    bytes_out: int
    client: str | None
    context: RequestContext | None


def _served(scope: Scope) -> list[str]:
    """The variants that served the request, stage by stage (empty: no application ran)."""
    context: RequestContext | None = scope.get(CONTEXT_KEY)
    return context.served if context is not None else []


def labels_of(scope: Scope) -> Mapping[str, str]:
    """The labels the request's context learned (application, model, version); none before
    the route made one."""
    context: RequestContext | None = scope.get(CONTEXT_KEY)
    return context.labels if context is not None else _NO_LABELS


class ObservabilityMiddleware:
    """`RequestObserver` around every HTTP request; the request id is echoed on the answer.
    How far the answer went out is left in the scope (`PROGRESS_KEY`, an `Exchange.progress`)
    for gateway.pipeline's UnexpectedErrors, the layer above."""

    __slots__ = ("app", "observer")

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange = Exchange(receive, send, self.observer.begin(scope), scope)
        try:
            await self.app(scope, exchange.receive_counting, exchange.send_with_id)
        except BaseException:
            if exchange.progress == ENDING:  # the server's last send may be what failed: half an answer
                exchange.progress = STARTED
            raise
        finally:
            if exchange.progress == ENDING:  # the app returned, so its last send did
                exchange.progress = FINISHED
            # A number, not the exchange: the scope must not refer back to the server's
            # `send` (a reference cycle per request, left to the garbage collector).
            scope[PROGRESS_KEY] = exchange.progress
            self.observer.end(scope, exchange.status, exchange.bytes_in, exchange.bytes_out, started)
            context: RequestContext | None = scope.get(CONTEXT_KEY)
            if context is not None and context.after_answer:
                failed = context.answered()
                if failed:
                    self.observer.metrics.after_answer_errors.inc(failed)


NOT_STARTED, STARTED, FINISHED = range(3)  # how far an answer has gone out
ENDING = 3  # the last message handed to the server, not yet known to have gone (an Exchange's only)


class Exchange:
    """One request's exchange as the middleware sees it go: the body bytes each way, the
    status, how far the answer has gone out (`progress`), and the request id added to the
    answer's headers."""

    __slots__ = ("bytes_in", "bytes_out", "progress", "receive", "request_id", "scope", "send", "status")

    def __init__(self, receive: Receive, send: Send, request_id: bytes, scope: Scope) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = request_id
        self.status = 500
        self.bytes_in = 0
        self.bytes_out = 0
        self.progress = NOT_STARTED

    async def receive_counting(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.bytes_in += len(message.get("body", b""))
            if (not message.get("more_body", False) and (read := self.scope.get(WHOLE_BODY_READ_KEY)) is not None
                    and (whole := read()) is not None):
                self.bytes_in += whole.filled  # read into one buffer, past `receive`
        return message

    def send_with_id(self, message: Message) -> Awaitable[None]:
        # Not a coroutine: it hands on the server's own awaitable (one coroutine less per
        # message), so the answer counts as gone out once the app has returned after it.
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, self.request_id)]
            context: RequestContext | None = self.scope.get(CONTEXT_KEY)
            if context is not None:
                message["headers"].extend(answer_headers(context))
            self.progress = STARTED
        elif kind == "http.response.body":
            self.bytes_out += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.progress = ENDING
        return self.send(message)


def multiprocess_dir() -> str | None:
    """Where prometheus-client keeps the values of several worker processes (if it does)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")
