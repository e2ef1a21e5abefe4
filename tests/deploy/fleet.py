"""Gateway instances behind a load balancer, and the clients that load it, for tests/deploy.

A balancer's config names its backends by host:port, so an instance keeps its port across
restarts (unlike tests/e2e/processes.py's gateways, which take a fresh `--port 0` each time).
Those ports are taken below the kernel's ephemeral range: between an instance's exit and its
restart the port is free, and only an explicit bind can take a port there, never the outgoing
connections the balancer keeps opening (health checks, upstream connections), whose local ports
come from that range."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import CONFIG_DIR, REPO
from tests.deploy.balancers import Attempt, Balancer
from tests.e2e.processes import GATEWAY, alive, descendants, wait_for

# The example config's application: {"number": [n]} -> {"number": [n + 1]}.
APPLICATION = "increment_app"


def stable_port() -> int:
    """A loopback TCP port below the ephemeral range that nothing is bound to now."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@dataclass
class Instance:
    """One `gateway serve` of the example config on its own fixed port, started again as often as
    a test likes. Each run (a "life") writes its own stderr log and access log (stdout) in
    `folder`, which is also its working directory (the request logs it writes go there)."""

    name: str
    port: int
    folder: Path
    env: dict[str, str]
    lives: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"gateway-{self.lives}.log"

    @property
    def access_log(self) -> Path:
        return self.folder / f"access-{self.lives}.log"

    def start(self) -> None:
        self.lives += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as errors, open(self.access_log, "wb") as access:
            self.process = subprocess.Popen(
                [str(GATEWAY), "serve", "--config", str(CONFIG_DIR), "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "info"],
                cwd=self.folder, stdout=access, stderr=errors, env=self.env)

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        wait_for(self.url + "/health/ready", self.process, timeout=timeout)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: the gateway first, then the runtimes it
        had started (which a killed gateway cannot stop)."""
        assert self.process is not None
        runtimes = descendants(self.process.pid)
        self.process.kill()
        self.process.wait()
        for pid in runtimes:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and reap; SIGKILL if it has not exited within 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def logged(self, text: str) -> float | None:
        """When this life's log first says `text` (wall clock, from the line's own time stamp)."""
        for line in self.log.read_text(errors="replace").splitlines():
            if text in line and (stamp := _LOG_TIME.match(line)):
                return time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000
        return None

    def served(self, life: int) -> list[dict[str, object]]:
        """The access log entries of one life (flushed by the gateway as it goes and at its exit)."""
        path = self.folder / f"access-{life}.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


@dataclass
class Outcome:
    """One client request: its id (sent as x-request-id), when it was sent and answered
    (wall clock), and what went wrong, if anything ("" for the right 200)."""

    request_id: str
    sent: float
    done: float
    status: int | None
    problem: str


@dataclass
class Load:
    """`clients` threads, each with its own keep-alive httpx client, posting the example
    application through `url`, each at most one request per `pause_s` and for at most
    `limit_s` in all (it stops by itself), checking that every answer is the right 200. Each
    request carries `numbers` numbers (about 7 bytes each in JSON)."""

    url: str
    clients: int = 6
    pause_s: float = 0.02
    limit_s: float = 300
    numbers: int = 1
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(target=self._client, args=(number,), name=f"load-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a load client did not stop"
        return self.so_far()

    def so_far(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def _client(self, number: int) -> None:
        end = time.monotonic() + self.limit_s
        path = f"/gateway/applications/{APPLICATION}"
        with httpx.Client(base_url=self.url, timeout=10) as client:
            sequence = 0
            while not self._stop.is_set() and time.monotonic() < end:
                sequence += 1
                request_id = f"lb-{number}-{sequence}"
                value = number * 10_000_000 + sequence * 100_000
                values = list(range(value, value + self.numbers))
                sent = time.time()
                status: int | None = None
                try:
                    response = client.post(path, json={"number": values}, headers={"x-request-id": request_id})
                    status = response.status_code
                    if status != 200:
                        problem = f"{status} {response.text[:200]}"
                    elif response.json() != {"number": [v + 1 for v in values]}:
                        problem = f"wrong answer {response.text[:200]}"
                    else:
                        problem = ""
                except httpx.HTTPError as error:
                    problem = f"{type(error).__name__}: {error}"
                with self._lock:
                    self.outcomes.append(Outcome(request_id, sent, time.time(), status, problem))
                self._stop.wait(self.pause_s)


# Where a failed run's logs are copied (tmp_path is rotated by pytest; CI keeps build/).
KEPT_LOGS = REPO / "build" / "lb-logs"


@dataclass
class Fleet:
    """Three instances behind one balancer, and the load that goes through it (not started)."""

    instances: list[Instance]
    balancer: Balancer
    load: Load

    def served_by(self, outcome: Outcome, attempts: dict[str, Attempt]) -> str | None:
        attempt = attempts.get(outcome.request_id)
        return attempt.served_by if attempt is not None else None


@contextmanager
def running(root: Path, kind: str, env: dict[str, str], clients: int = 6) -> Iterator[Fleet]:
    """Three instances of the example config in `root`, ready, behind a `kind` balancer. On the
    way out, whatever happened, the load is stopped and the balancer and every instance are
    stopped (killed if they do not stop); when an exception comes out (a failed assertion), the
    logs of the whole fleet are first copied to build/lb-logs/<root's name>-<time>/."""
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(stable_port())
    front, *backends = sorted(ports)
    instances = [Instance(f"gw{number}", port, root / f"gw{number}", env)
                 for number, port in enumerate(backends, start=1)]
    balancer = Balancer(kind, root / kind, front, instances)
    load = Load(balancer.url, clients=clients)
    with ExitStack() as stack:
        # Run last to first, each even when one before it raised.
        for instance in instances:
            stack.callback(instance.stop)
        stack.callback(_terminate_all, instances)  # all draining at once, not one after the other
        stack.callback(balancer.stop)
        stack.callback(load.stop)
        try:
            for instance in instances:
                instance.start()
            for instance in instances:
                instance.wait_ready()
            balancer.start()
            yield Fleet(instances, balancer, load)
        except BaseException:
            keep_logs(root)
            raise


def _terminate_all(instances: list[Instance]) -> None:
    for instance in instances:
        if instance.process is not None and instance.process.poll() is None:
            instance.terminate()


def keep_logs(root: Path) -> Path:
    """Copy the logs under `root` (regular files only: no sockets) to build/lb-logs/."""
    kept = KEPT_LOGS / f"{root.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.copytree(root, kept, dirs_exist_ok=True,
                    ignore=lambda folder, names: [name for name in names
                                                  if not (Path(folder, name).is_file() or Path(folder, name).is_dir())])
    print(f"\nlogs of the failed run kept in {kept}")
    return kept
