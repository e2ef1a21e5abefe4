"""The serve lifecycle's clean-up contracts (gateway/serving/): a worker pool that cannot start
all its workers leaves none running, and a start-up that fails still stops the model runtimes."""

from __future__ import annotations

import gc
import logging
import multiprocessing.process
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.manifests import load_config
from gateway.reload import ConfigStager
from gateway.serving import serve
from gateway.serving.process import run_on_uvloop
from gateway.serving.server import bound_socket
from gateway.serving.worker_pool import WorkerPool
from gateway.serving.worker_reloads import WorkerReloads
from gateway.settings import Settings
from tests.conftest import free_port, write_app, write_model
from tests.e2e.processes import alive


class SecondSpawnFails(WorkerPool):
    """A pool whose second worker cannot be started (as when the system is out of processes)."""

    def spawn(self, index: int) -> multiprocessing.process.BaseProcess:
        if index == 1:
            raise OSError("cannot start worker 1")
        return super().spawn(index)


async def test_a_pool_that_cannot_start_its_second_worker_kills_the_first(tmp_path: Path) -> None:
    root = tmp_path / "config"
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy.yaml").write_text(
        f"kind: Model\nname: toy\nbackend: {{protocol: tensorflow-serving, target: 127.0.0.1:{free_port()}}}\n")
    write_app(root, "app", "toy")
    probe = bound_socket("127.0.0.1", 0)  # as `gateway serve --workers` holds its port
    settings = Settings(config_dir=root, host="127.0.0.1", port=probe.getsockname()[1], access_log=False,
                        workers=2)
    reloads = WorkerReloads(ConfigStager(settings, load_config(root), None), {}, settings.drain_timeout_s)
    pool = SecondSpawnFails(settings, reloads)
    try:
        with pytest.raises(OSError, match="cannot start worker 1"):
            pool.start(2)
        [first] = pool.workers
        assert not first.is_alive()
        assert first.exitcode == -signal.SIGKILL
    finally:
        pool.kill()
        await reloads.close()
        probe.close()


@pytest.fixture
def process_state() -> Iterator[None]:
    """The signal handlers and GC settings `serve._run` sets for a serving process, restored."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("process_state")
def test_a_start_up_that_fails_after_the_runtimes_started_stops_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    root = tmp_path / "config"
    write_model(root, "m", "m", "def predict(x):\n    return x + 1\n")
    write_app(root, "app", "m")
    # The certificate is read when uvicorn starts, after the runtimes and the app: that start fails.
    settings = Settings(config_dir=root, host="127.0.0.1", port=0, access_log=False,
                        tls_certfile=tmp_path / "missing.pem", tls_keyfile=tmp_path / "missing.key")
    with pytest.raises(FileNotFoundError):
        run_on_uvloop(serve._run(settings, load_config(root)))
    started = re.search(r"model m:1 runtime pid (\d+)", caplog.text)
    assert started is not None, "the runtime did not start"
    assert not alive(int(started.group(1)))
    assert "stopped" in [record.getMessage() for record in caplog.records]
