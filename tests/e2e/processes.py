"""Helpers for tests that run `gateway serve` as a subprocess."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import REPO

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


# What `gateway serve` logs at INFO once it serves: one process, or the parent of workers. Only the
# serving process's own lines: a worker names its logger `gateway[pid]`, the parent plain `gateway`.
_SERVING = re.compile(rb" INFO gateway: (?:serving https?://\S+:(\d+) \(applications"
                      rb"|started \d+ workers on port (\d+) )")


def spawn_gateway(config_dir: Path, *extra: str, log: Path,
                  env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`gateway serve --config config_dir --port 0` (the kernel picks a port no other process
    holds, so nothing can take it before the gateway binds it) at log level INFO (whatever its
    gateway.yaml says: `served_port` reads an INFO line), its log appended to `log`, which no other
    gateway should write to. Returns the process and where its log starts in `log` (for `served_port`)."""
    if "--log-level" in extra:
        raise ValueError("the test gateway logs at INFO: served_port reads the port from an INFO line")
    offset = log.stat().st_size if log.exists() else 0
    process = subprocess.Popen(
        [str(GATEWAY), "serve", "--config", str(config_dir), "--port", "0", "--log-level", "info", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, env=short_grace(config_dir, env), stderr=open(log, "ab"),  # noqa: SIM115
    )
    return process, offset


TEST_SHUTDOWN_GRACE_S = "0.2"


def short_grace(config_dir: Path, env: dict[str, str] | None) -> dict[str, str]:
    """`env` (the test's own environment by default) with a short `shutdown_grace_s` unless the
    test chose one, in the environment or in its gateway.yaml: the default 2 s of readiness 503
    after SIGTERM would be spent at the end of every test that stops a gateway, and only the
    tests about the grace need one (they set it)."""
    env = dict(os.environ if env is None else env)
    gateway_yaml = config_dir / "gateway.yaml"
    chosen = "GATEWAY_SHUTDOWN_GRACE_S" in env or (
        gateway_yaml.is_file() and "shutdown_grace_s" in gateway_yaml.read_text())
    if not chosen:
        env["GATEWAY_SHUTDOWN_GRACE_S"] = TEST_SHUTDOWN_GRACE_S
    return env


def served_port(process: subprocess.Popen[bytes], log: Path, offset: int = 0, timeout: float = 60) -> int:
    """The port a gateway started by `spawn_gateway` bound, read from its log (from `offset` on)
    once it serves (after its runtimes started); fail if it exits first."""
    deadline = time.monotonic() + timeout
    while (found := _SERVING.search(log.read_bytes()[offset:])) is None:
        assert process.poll() is None, "gateway exited during start-up"
        assert time.monotonic() < deadline, f"the gateway did not say which port it serves within {timeout:g} s"
        time.sleep(0.05)
    return int(found.group(1) or found.group(2))


@contextmanager
def running_gateway(config_dir: Path, *extra: str, ready_path: str = "/health/ready",
                    env: dict[str, str] | None = None, scheme: str = "http",
                    verify: ssl.SSLContext | bool = True,
                    log: Path | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`gateway serve --config config_dir` on a port of its own, stopped (and reaped) afterwards.

    It relies on the gateway's own log file (`log` when given, else a temporary one; never shared
    with another gateway) and on the INFO line the serving process writes there once it serves
    ("serving <url>" or "started N workers on port P"; `spawn_gateway` forces INFO): the port
    comes from that line, then `ready_path` is polled until it answers 200."""
    with tempfile.TemporaryDirectory(prefix="gateway-log-") as folder:
        own_log = log or Path(folder) / "gateway.log"
        process, offset = spawn_gateway(config_dir, *extra, log=own_log, env=env)
        try:
            url = f"{scheme}://127.0.0.1:{served_port(process, own_log, offset)}"
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
            # GATEWAY_TEST_LOG=file keeps the logs of the gateways a test run starts, one after the other.
            if log is None and (kept := os.environ.get("GATEWAY_TEST_LOG")):
                with open(kept, "ab") as file:
                    file.write(f"--- gateway serve --config {config_dir} (pid {process.pid})\n".encode())
                    file.write(own_log.read_bytes())
