"""Helpers for tests that run `gateway serve` as a subprocess."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port

GATEWAY = Path(sys.executable).parent / "gateway"


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def local_socket_of(pid: int) -> str:
    """The Unix socket a runtime serves the local wire on (its --local-socket argument)."""
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return arguments[arguments.index("--local-socket") + 1]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60, status: int = 200,
             verify: ssl.SSLContext | bool = True) -> None:
    """Poll GET `url` until it answers `status`; fail if the gateway exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "gateway exited during start-up"
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status}")


@contextmanager
def running_gateway(config_dir: Path, *extra: str, ready_path: str = "/health/ready",
                    env: dict[str, str] | None = None, scheme: str = "http",
                    verify: ssl.SSLContext | bool = True,
                    log: Path | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`gateway serve --config config_dir` on a free port, stopped (and reaped) afterwards;
    its log goes to `log` when given."""
    port = free_port()
    process = subprocess.Popen(
        [str(GATEWAY), "serve", "--config", str(config_dir), "--port", str(port), *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, env=env,
        # GATEWAY_TEST_LOG=file keeps the gateway's log when a test needs looking into.
        stderr=open(log or os.environ.get("GATEWAY_TEST_LOG", os.devnull), "ab"),  # noqa: SIM115
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_for(url + ready_path, process, verify=verify)
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
