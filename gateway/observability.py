"""Request ids, Prometheus metrics and the structured access log, as one pure ASGI middleware.

Routes and the data plane label what they learn about a request in `scope["state"]`
(`application`, `model`, `version`); the middleware counts and logs it when the answer has
been sent.
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
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}

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
    served, `end` once its answer has been sent. Used by `ObservabilityMiddleware` and by the
    predict fast path (gateway.app), which must count and log exactly alike."""

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
        """Count and log the request, labelled with what routes learned in `scope["state"]`."""
        metrics = self.metrics
        metrics.serving -= 1
        if metrics.multiprocess:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        state = scope["state"]
        route = getattr(scope.get("route"), "path", "unmatched")
        application = state.get("application", "")
        model, version = state.get("model", ""), state.get("version", "")
        children = metrics.request_children(route, application, model, version, status)
        children.requests.inc()
        children.seconds.observe(elapsed)
        children.request_bytes.inc(bytes_in)
        children.response_bytes.inc(bytes_out)
        if self.access_log is not None:
            client = scope.get("client")
            self.access_log.record({
                "time": time.time(), "request_id": state["request_id"], "method": scope["method"],
                "path": scope["path"], "status": status, "duration_ms": round(elapsed * 1000, 3),
                "bytes_in": bytes_in, "bytes_out": bytes_out, "application": application,
                "model": model, "version": version, "client": client[0] if client else None,
            })


class ObservabilityMiddleware:
    """`RequestObserver` around every HTTP request; the request id is echoed on the answer."""

    def __init__(self, app: ASGIApp, observer: RequestObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self.observer.begin(scope)
        status = 500
        sizes = [0, 0]  # request body, response body

        async def receive_counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes[0] += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)]
            elif message["type"] == "http.response.body":
                sizes[1] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_counting, send_with_id)
        finally:
            self.observer.end(scope, status, sizes[0], sizes[1], started)


def multiprocess_dir() -> str | None:
    """Where prometheus-client keeps the values of several worker processes (if it does)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")
