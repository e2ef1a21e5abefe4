"""MLServer as a real peer process for the peer tests: `mlserver start DIR` from its own venv
(GATEWAY_MLSERVER_BIN, set by `make test-peers`) on loopback ports of its own, serving the models of
mlserver_models.py with their contracts in model-settings.json (what its ModelMetadata answers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.processes import alive

MLSERVER_BIN = os.environ.get("GATEWAY_MLSERVER_BIN", "")
HERE = Path(__file__).resolve().parent

# name -> (implementation, inputs = outputs): what each model's ModelMetadata declares.
MODELS = {
    "increment": ("mlserver_models.Increment", [("f", "FP32", [-1]), ("i", "INT32", [-1, 2])]),
    "shout": ("mlserver_models.Shout", [("word", "BYTES", [-1])]),
}
# The version MLServer serves each model at: the gateway's manifests pin it (and send it in every call).
MODEL_VERSION = "1"


def unused_ports() -> tuple[int, int]:
    """Two distinct unused loopback ports: MLServer's HTTP and gRPC ports."""
    while (ports := (unused_port(), unused_port()))[0] == ports[1]:
        pass
    return ports


def unused_port() -> int:
    """A loopback port nothing listens on now. MLServer's HTTP server (uvicorn) binds without
    SO_REUSEPORT, so the port cannot stay reserved for it (tests.conftest.free_port): a start that
    loses the port to another process fails with its log, it never serves someone else's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_models(folder: Path, http_port: int, grpc_port: int) -> None:
    """settings.json (loopback, no metrics server, models in the server's process) and one
    model-settings.json per model of MODELS."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_endpoint": None, "parallel_workers": 0, "load_models_at_startup": True}))
    for name, (implementation, tensors) in MODELS.items():
        specs = [{"name": tensor, "datatype": datatype, "shape": shape} for tensor, datatype, shape in tensors]
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": implementation, "parameters": {"version": MODEL_VERSION},
            "inputs": specs, "outputs": specs}))


@dataclass
class MLServer:
    """One running `mlserver start`: its process and where it serves."""

    process: subprocess.Popen[bytes]
    http_url: str
    grpc_target: str
    log: Path

    def stop(self) -> None:
        """SIGTERM to its process group (the server and anything it started), SIGKILL after 15 s
        or to whatever of the group outlived the server; reaped."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.left_running():
            os.killpg(self.process.pid, signal.SIGKILL)

    def left_running(self) -> list[int]:
        """The processes of its process group still alive (none once `stop` returned)."""
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and alive(int(entry.name)):
                try:
                    group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
                except (OSError, ValueError, IndexError):
                    continue
                if group == self.process.pid:
                    left.append(int(entry.name))
        return left


def start_mlserver(folder: Path, http_port: int, grpc_port: int, timeout: float = 90) -> MLServer:
    """`mlserver start folder` in a session of its own, waited for until every model is ready."""
    write_models(folder, http_port, grpc_port)
    log = folder / "mlserver.log"
    process = subprocess.Popen(
        [str(Path(MLSERVER_BIN) / "mlserver"), "start", str(folder)], cwd=folder, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),  # noqa: SIM115
        env={**os.environ, "PYTHONPATH": str(HERE)})
    server = MLServer(process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    deadline = time.monotonic() + timeout
    ready = [f"{server.http_url}/v2/models/{name}/ready" for name in MODELS]
    while True:
        if process.poll() is not None:
            raise AssertionError(f"mlserver exited during start-up: {log.read_text()[-2000:]}")
        try:
            if all(httpx.get(url, timeout=1).status_code == 200 for url in ready):
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"mlserver was not ready within {timeout:g} s: {log.read_text()[-2000:]}")
        time.sleep(0.2)


@contextmanager
def running_mlserver(folder: Path) -> Iterator[MLServer]:
    """An MLServer on fresh loopback ports for the block, stopped afterwards (nothing left running)."""
    server = start_mlserver(folder, *unused_ports())
    try:
        yield server
    finally:
        server.stop()
        assert server.left_running() == []


def write_gateway_config(config: Path, grpc_target: str) -> None:
    """A gateway whose models `increment` and `shout` (version 1) are MLServer's over the v2
    protocol, contracts not declared (discovered), and applications over them: `increment_app`
    (one stage), `twice` (two stages: +2) and `shout_app`."""
    (config / "models").mkdir(parents=True)
    (config / "applications").mkdir()
    (config / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults:\n  health_interval_s: 0.5\n  health_check_timeout_s: 1\n")
    for name in MODELS:
        (config / "models" / f"{name}.yaml").write_text(
            f"kind: Model\nname: {name}\nversion: {MODEL_VERSION}\n"
            f"backend: {{protocol: v2, target: '{grpc_target}', model_name: {name}}}\n")
    (config / "applications" / "increment_app.yaml").write_text(
        "kind: Application\nname: increment_app\nsingular:\n  model: increment:1\n")
    (config / "applications" / "twice.yaml").write_text(
        "kind: Application\nname: twice\npipeline:\n  - - model: increment:1\n  - - model: increment:1\n")
    (config / "applications" / "shout_app.yaml").write_text(
        "kind: Application\nname: shout_app\nsingular:\n  model: shout:1\n")
