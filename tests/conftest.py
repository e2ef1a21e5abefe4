"""Shared fixtures: the example config, free loopback ports, a real uvicorn and runtime."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from gateway.backends.pool import ChannelPool
from gateway.http_protocol import http_protocol
from gateway.manifests import Config, RuntimeAddress, load_config
from gateway.manifests.types import RequestLogSpec
from gateway.serving.server import UvicornServer
from gateway.settings import Settings
from runtime.server import ModelServer
from tests.tfserving_server import FakeTFServing

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
INCREMENT_MODEL = CONFIG_DIR / "models" / "increment_model"


_reserved_ports: list[socket.socket] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, reserved until the test ends.

    A socket stays bound to it without listening: connections to the port are refused, and the
    kernel hands the port to nobody else except an explicit SO_REUSEPORT bind by this user
    (`bind` to port 0 and outgoing connections skip it), so nothing else can start listening
    there behind the test's back. It has SO_REUSEPORT, as gRPC servers do, so a grpc server of
    the test can still bind the port later on. Never pass it to `gateway serve --workers N`: its
    workers bind with SO_REUSEPORT, as would any other SO_REUSEPORT server of this user, so the
    reservation protects nothing there; start gateways with `--port 0` (tests/e2e/processes.py)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    _reserved_ports.append(sock)
    return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _release_reserved_ports() -> Iterator[None]:
    yield
    while _reserved_ports:
        _reserved_ports.pop().close()


def loopback_socket() -> socket.socket:
    """A socket bound to 127.0.0.1 on a port the kernel picked, for a server in this process to
    listen on (`uvicorn.Server.serve(sockets=[sock])`): the port is never free between being
    picked and being listened on, so no other process can take it. Made with IPPROTO_TCP, as
    uvicorn's own sockets are: asyncio sets TCP_NODELAY on accepted connections only then
    (otherwise every answer waits ~40 ms on Nagle's algorithm and the client's delayed ACK)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def runtimes_for(config: Config, *, local_wire: bool = True) -> Iterator[Config]:
    """`config` with every local model bound to a real runtime server in this process, reached
    as `gateway serve` reaches it (gRPC, plus its Unix socket unless `local_wire` is False)."""
    with tempfile.TemporaryDirectory(prefix="rt-") as sockets:
        paths = {model.key: f"{sockets}/{number}.sock" if local_wire else None
                 for number, model in enumerate(config.local_models())}
        servers = {model.key: ModelServer.for_folder(model.folder, chdir=False, local_socket=paths[model.key])
                   for model in config.local_models() if model.folder is not None}
        for server in servers.values():
            server.start()
        try:
            yield config.with_targets({key: RuntimeAddress(f"127.0.0.1:{server.port}", paths[key])
                                       for key, server in servers.items()})
        finally:
            for server in servers.values():
                server.stop(0).wait()


@pytest.fixture(autouse=True)
def _backend_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """With GATEWAY_BACKEND_CLIENT set (the parity run: `GATEWAY_BACKEND_CLIENT=inloop pytest ...`)
    every channel pool a test makes calls its backends with that client, whatever the test's
    settings say (gateways the tests start as processes read the variable themselves)."""
    client = os.environ.get("GATEWAY_BACKEND_CLIENT")
    if not client:
        return
    made = ChannelPool.__init__

    def forced(pool: ChannelPool, *args: Any, **kwargs: Any) -> None:
        made(pool, *args, **{**kwargs, "client": client})

    monkeypatch.setattr(ChannelPool, "__init__", forced)


@pytest.fixture
async def tfs() -> AsyncIterator[FakeTFServing]:
    """A fake TF Serving model server (tests/tfserving_server.py) on a loopback port."""
    server = FakeTFServing()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def example_config(tmp_path: Path) -> Iterator[Config]:
    """The example config with every local model bound to a real runtime in this process, its
    request logs written under `tmp_path` (not into the checkout)."""
    with runtimes_for(logs_under(load_config(CONFIG_DIR), tmp_path / "request-logs")) as config:
        yield config


def logs_under(config: Config, root: Path) -> Config:
    """`config` with every request log's file sink moved into `root` (its directory's name kept)."""
    def moved(spec: RequestLogSpec | None) -> RequestLogSpec | None:
        if spec is None or spec.file is None:
            return spec
        return dataclasses.replace(spec, file=dataclasses.replace(spec.file, dir=root / spec.file.dir.name))

    applications = {name: dataclasses.replace(app, request_log=moved(app.request_log))
                    for name, app in config.applications.items()}
    models = {key: dataclasses.replace(model, request_log=moved(model.request_log))
              for key, model in config.models.items()}
    return dataclasses.replace(config, applications=applications, models=models)


def write_model(config_dir: Path, folder: str, name: str, source: str,
                inputs: str = "x: {shape: [-1], type: int32}",
                outputs: str = "y: {shape: [-1], type: int32}", extra: str = "") -> Path:
    """A model folder `config_dir/models/<folder>` with a one-file numpy-style function."""
    path = config_dir / "models" / folder
    (path / "src").mkdir(parents=True)
    (path / "serving.yaml").write_text(
        f"kind: Model\nname: {name}\n{extra}\ncontract:\n  inputs:\n    {inputs}\n"
        f"  outputs:\n    {outputs}\n")
    (path / "src" / "func_main.py").write_text(source)
    return path


def write_app(config_dir: Path, name: str, model: str, extra: str = "") -> None:
    """An application `name` with one stage served by `model`."""
    (config_dir / "applications").mkdir(parents=True, exist_ok=True)
    (config_dir / "applications" / f"{name}.yaml").write_text(
        f"kind: Application\nname: {name}\nsingular:\n  model: {model}\n{extra}\n")


class _PromptlyStopped(UvicornServer):
    """The gateway's server, its shutdown begun as soon as a test stops it: uvicorn looks at
    `should_exit` every 0.1 s, a wait hundreds of in-process servers would each pay at their end."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exiting = asyncio.Event()

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:  # uvicorn's loop, with its 0.1 s sleep cut short by `exiting`
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exiting.wait(), 0.1)
            should_exit = await self.on_tick(counter)


@contextlib.asynccontextmanager
async def serve_app(app: Starlette, settings: Settings | None = None,
                    sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Run `app` under a real uvicorn listening on `sock` (a free loopback port by default),
    with the gateway's HTTP protocol (its timeouts from `settings`); yield its base URL."""
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    server = _PromptlyStopped(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                             access_log=False, lifespan="on",
                                             http=http_protocol(settings or Settings())))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before starting")
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.exiting.set()
        await task
