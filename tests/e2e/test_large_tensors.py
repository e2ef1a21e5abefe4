"""A large raw tensor through `gateway serve` and its embedded runtime: answered right, the
body kept out of the gateway's resident memory (shared with the runtime), its memory reused by
the next one, nothing in /dev/shm."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from protos.shared_memory import AVAILABLE as SHARED_MEMORY
from tests.conftest import write_app, write_model
from tests.e2e.processes import descendants, running_gateway

pytestmark = pytest.mark.skipif(not SHARED_MEMORY, reason="memfd_create is Linux's")
INCREMENT = "def predict(x):\n    return {'y': x + 1}\n"
FLOATS = ("x: {shape: [-1], type: float32}", "y: {shape: [-1], type: float32}")
BINARY = {"content-type": "application/octet-stream", "x-tensor-dtype": "float32"}  # httpx accepts gzip: not used


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def shared_bodies(pid: int) -> int:
    """How many of `pid`'s open files are the gateway's shared request bodies."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += "memfd:gateway-body" in os.readlink(f"/proc/{pid}/fd/{fd}")
    return count


def test_a_large_tensor_costs_the_gateway_its_answer_not_its_request_too(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "increment", "increment", INCREMENT, *FLOATS)
    write_app(root, "increment", "increment")
    (root / "gateway.yaml").write_text("kind: Gateway\nlimits: {max_body_bytes: 268435456, max_elements: 67108864}\n"
                                       "logging: {access_log: true}\n")
    values = np.arange(12_000_000, dtype="<f4")  # 48 MB
    shm_before = sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []
    with running_gateway(root) as (process, url), httpx.Client(base_url=url, timeout=120) as client:
        assert descendants(process.pid)  # the runtime is a process of its own
        for round_ in range(3):
            before = status_kib(process.pid, "VmRSS")
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # resets the high-water mark
            response = client.post("/gateway/applications/increment", content=values.tobytes(), headers=BINARY)
            assert response.status_code == 200, response.text
            np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), values + 1)
            peak = status_kib(process.pid, "VmHWM") - before
            print(f"round {round_}: the gateway's peak RSS rose {peak / (values.nbytes / 1024):.2f}x the tensor")
            # its answer (read from the runtime, then written to the client) and little else: the request
            # body stays in memory the gateway shares with the runtime and does not read itself
            assert peak < 1.5 * values.nbytes / 1024
        # each body let go of with its request, so the next reused its region: one region kept (for
        # the next large body, given back within 90 s), two descriptors (its own and its mapping's)
        assert shared_bodies(process.pid) <= 2
    assert (sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []) == shm_before
