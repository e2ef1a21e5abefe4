"""`gateway serve --workers N`: N processes share the port; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time

import httpx

from tests.conftest import REPO
from tests.e2e.processes import alive, command_line, descendants, running_gateway

CONFIG_DIR = REPO / "config"


def test_two_workers_share_the_port_and_stop_together() -> None:
    with running_gateway(CONFIG_DIR, "--workers", "2") as (process, url):
        tree = descendants(process.pid)
        workers = [pid for pid in tree if "spawn_main" in command_line(pid)]
        assert len(workers) == 2
        for _ in range(20):  # a new connection each time, so the kernel spreads them
            response = httpx.post(f"{url}/gateway/applications/increment_app", json={"number": [1]})
            assert response.json() == {"number": [2]}
        metrics = httpx.get(f"{url}/metrics").text  # summed over the workers
        total = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("gateway_requests_total{") and 'status="200"' in line
                    and "increment_app" in line)
        assert total == 20
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        while any(alive(pid) for pid in tree) and time.monotonic() - started < 15:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in tree)
