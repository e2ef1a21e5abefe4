"""The fuzz suite's gateway and client: a real uvicorn serving the example config with real
embedded runtimes plus TF Serving models (tests/tfserving_server.py), run on its own event loop
in a background thread so that hypothesis drives it from plain synchronous tests; and a raw
HTTP/1.1 client that keeps one connection, so the oracle can tell a reset from an answer."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.app import create_app
from gateway.manifests import load_config
from gateway.settings import Settings
from tests.conftest import CONFIG_DIR, runtimes_for, serve_app, write_app, write_model
from tests.tfserving_server import FakeTFServing

# TF Serving models behind the gateway: a floating manifest with a label of its own, one with a
# double output, one with strings (the Errors model is left out: it raises on purpose).
REMOTE_MODELS = {
    "toy": "  model_name: Toy\nversion_labels: {stable: 1}\n",
    "toy_double": "  model_name: Toy_double\n",
    "echo": "  model_name: Echo\n",
}
REMOTE_APPLICATIONS = {"toy_app": "toy@stable", "echo_app": "echo"}
# A local model of any rank (the example models fix theirs), for shapes only headers can give.
MATRIX_SOURCE = "def predict(x):\n    return {'y': -x}\n"
REQUEST_TIMEOUT_S = 20.0  # no answer within this is a hang


def examples(default: int) -> int:
    """The example count per property: `default`, or `FUZZ_EXAMPLES` when set (longer runs)."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


class LogTail(logging.Handler):
    """Keeps the gateway's recent warnings and errors (tracebacks included) for failure reports."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[str] = deque(maxlen=20)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))

    def take(self) -> list[str]:
        lines = list(self.records)
        self.records.clear()
        return lines


@dataclass
class FuzzGateway:
    """The gateway under test, on its own loop in a background thread."""

    config_dir: Path
    url: str = ""
    port: int = 0
    log: LogTail = field(default_factory=LogTail)

    def __post_init__(self) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz-gateway", daemon=True)

    def start(self) -> None:
        logging.getLogger().addHandler(self.log)
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("the gateway did not start within 120 s")
        if self._error is not None:
            raise RuntimeError("the gateway failed to start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        logging.getLogger().removeHandler(self.log)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tfs = FakeTFServing(typed=True)
        await tfs.start()
        try:
            write_config(self.config_dir, tfs.target)
            with runtimes_for(load_config(self.config_dir)) as config:
                async with serve_app(create_app(Settings(access_log=False), config)) as url:
                    self.url, self.port = url, int(url.rsplit(":", 1)[1])
                    self._ready.set()
                    await self._stop.wait()
        finally:
            await tfs.stop()


def write_config(directory: Path, tfs_target: str) -> None:
    """The example config plus TF Serving models (and applications over them) at `tfs_target`."""
    shutil.copytree(CONFIG_DIR, directory)
    for name, extra in REMOTE_MODELS.items():
        (directory / "models" / f"{name}.yaml").write_text(
            f"kind: Model\nname: {name}\nbackend:\n  protocol: tensorflow-serving\n  target: {tfs_target}\n{extra}")
    write_model(directory, "matrix_model", "matrix_model", MATRIX_SOURCE,
                inputs="x: {shape: [-1, -1], type: float32}", outputs="y: {shape: [-1, -1], type: float32}")
    write_app(directory, "matrix_app", "matrix_model")
    for name, model in REMOTE_APPLICATIONS.items():
        (directory / "applications" / f"{name}.yaml").write_text(
            f"kind: Application\nname: {name}\nsingular:\n  model: {model}\n")


@contextlib.contextmanager
def running_gateway(config_dir: Path) -> Iterator[FuzzGateway]:
    gateway = FuzzGateway(config_dir)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # already percent-encoded where needed
    headers: tuple[tuple[str, bytes], ...] = ()
    body: bytes | None = None

    def describe(self) -> str:
        body = self.body if self.body is None or len(self.body) <= 600 else self.body[:600] + b"..."
        return f"{self.method} {self.path}\nheaders: {list(self.headers)}\nbody: {body!r}"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    kept_alive: bool  # the same connection answered a following request
    follow_up: str  # what happened to the following request, when it failed


class Connection:
    """One keep-alive HTTP/1.1 connection to the gateway, replaced only after a failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
            self._conn.connect()
        return self._conn

    def exchange(self, request: Request) -> Answer:
        """Send `request`, read its answer, then GET /health/live on the same connection.
        Raises on a reset, a timeout (a hang) or a malformed answer."""
        conn = self._connection()
        try:
            status, headers, body = _send(conn, request)
            sock = conn.sock
            if sock is None:  # the server answered `Connection: close`
                return Answer(status, headers, body, False, "the server closed the connection")
            try:
                live, _, _ = _send(conn, Request("GET", "/health/live"))
            except (OSError, http.client.HTTPException) as error:
                return Answer(status, headers, body, False, f"{type(error).__name__}: {error}")
            same = conn.sock is sock
            return Answer(status, headers, body, same and live == 200,
                          "" if same and live == 200 else f"follow-up answered {live} (same socket: {same})")
        except BaseException:
            self.close()
            raise
        finally:
            if self._conn is not None and self._conn.sock is None:
                self.close()


def _send(conn: http.client.HTTPConnection, request: Request) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn.putrequest(request.method, request.path, skip_accept_encoding=True)
    for name, value in request.headers:
        conn.putheader(name, value)
    if request.body is not None:
        conn.putheader("Content-Length", str(len(request.body)))
    conn.endheaders(request.body)
    response = conn.getresponse()
    return response.status, response.headers, response.read()


