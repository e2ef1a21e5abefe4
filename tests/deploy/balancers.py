"""haproxy and nginx as the tests' own processes, running the committed example configs
(deploy/haproxy/haproxy.cfg, deploy/nginx/nginx.conf) with only their ports and paths rewritten:
in the foreground, their config, pid, logs and temporary files in the test's folder, on loopback
ports of the test's choosing; never the system's services.

`make test-lb` installs Debian's haproxy and nginx and points GATEWAY_HAPROXY and GATEWAY_NGINX at
them; without those the tests are skipped. Each balancer's access log tells which instance
answered each request (by the x-request-id the clients send), which is how the tests see where
the balancer sent what."""

from __future__ import annotations

import csv
import getpass
import io
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.conftest import REPO
from tests.waiting import wait_until

if TYPE_CHECKING:
    from tests.deploy.fleet import Instance

HAPROXY = os.environ.get("GATEWAY_HAPROXY", "")
NGINX = os.environ.get("GATEWAY_NGINX", "")
HAPROXY_CFG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
# The committed configs' gateway addresses, replaced by the test instances' in order.
EXAMPLE_PORTS = (8001, 8002, 8003)


def rewrite(text: str, replacements: dict[str, str]) -> str:
    """`text` with each key replaced by its value; each key must be there (a committed config
    that changed under the test fails it, rather than being run with the example's ports)."""
    for old, new in replacements.items():
        assert old in text, f"the committed config no longer has {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Attempt:
    """What a balancer logged about one request: the instance that answered it (None when none
    did), how many instances it had tried before, the status it answered, and haproxy's
    termination state (%tsc, "----" for a clean end; "" for nginx)."""

    served_by: str | None
    tried: list[str]
    status: int
    termination: str = ""

    def answer_begun(self, kind: str) -> bool:
        """Whether the balancer had begun sending the client an answer when the request failed:
        haproxy's "SD" (the server aborted during the data phase: the headers had gone out);
        nginx logs the status it sent, which is an instance's 200 only once that one's answer
        had begun (a request no instance answered is logged 502 or 504)."""
        return self.termination.startswith("SD") if kind == "haproxy" else self.status == 200


@dataclass
class Balancer:
    """One balancer process in front of `instances`; `url` is where clients reach it."""

    kind: str
    folder: Path
    port: int
    instances: list[Instance]
    process: subprocess.Popen[bytes] | None = None
    access_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.access_log = self.folder / "access.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.kind == "haproxy":
            config = self.folder / "haproxy.cfg"
            replacements = {"bind :8080": f"bind 127.0.0.1:{self.port}",
                            "/run/haproxy/gateway-admin.sock": str(self.admin_socket)}
            for instance, example in zip(self.instances, EXAMPLE_PORTS, strict=True):
                replacements[f"server {instance.name} 127.0.0.1:{example}"] = \
                    f"server {instance.name} 127.0.0.1:{instance.port}"
            config.write_text(rewrite(HAPROXY_CFG.read_text(), replacements))
            command = [HAPROXY, "-db", "-f", str(config), "-p", str(self.folder / "haproxy.pid")]
            # `log stdout`: the request lines and the server state changes, on stdout.
            stdout = open(self.access_log, "wb")  # noqa: SIM115 (the process holds it)
        else:
            config = self.folder / "nginx.conf"
            replacements = {"listen 8080;": f"listen 127.0.0.1:{self.port};",
                            "/run/nginx-gateway.pid": str(self.folder / "nginx.pid"),
                            "/var/log/nginx/gateway-error.log": str(self.folder / "error.log"),
                            "/var/log/nginx/gateway-access.log": str(self.access_log),
                            "/var/lib/nginx/gateway-": f"{self.folder}/temp-",
                            # The workers write their temporary files in the test's folder, which
                            # only the user running the test may enter (root's pytest folders are
                            # 0700): they run as that user (nginx ignores `user` unless root).
                            "user www-data;": f"user {getpass.getuser()};"}
            for example, instance in zip(EXAMPLE_PORTS, self.instances, strict=True):
                replacements[f"server 127.0.0.1:{example} "] = f"server 127.0.0.1:{instance.port} "
            config.write_text(rewrite(NGINX_CONF.read_text(), replacements))
            # -e: the log of errors before the config's error_log is read; -p: its own prefix.
            command = [NGINX, "-p", str(self.folder), "-e", str(self.folder / "startup-error.log"),
                       "-c", str(config), "-g", "daemon off;"]
            stdout = open(self.folder / "stdout.log", "wb")  # noqa: SIM115
        with stdout:
            self.process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self._listening, timeout=20, what=f"{self.kind} listening on {self.port}")

    def _listening(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"{self.kind} exited: {self.output()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def output(self) -> str:
        logs = [self.folder / name for name in ("stdout.log", "startup-error.log", "error.log")]
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in [*logs, self.access_log]
                         if path.exists())

    def stop(self) -> None:
        """SIGTERM (haproxy: stop at once; nginx: fast shutdown) to its process group, SIGKILL after
        10 s; reaped."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    # -- what it did

    @property
    def admin_socket(self) -> Path:
        return self.folder / "admin.sock"

    def states(self) -> dict[str, str]:
        """haproxy only: each server's status from its admin socket ("UP", "DOWN", "UP 1/2"...)."""
        assert self.kind == "haproxy"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "gateways" and row["svname"] not in ("BACKEND", "FRONTEND")}

    def attempts(self) -> dict[str, Attempt]:
        """Every request it logged so far, by the x-request-id the client sent."""
        text = self.access_log.read_text(errors="replace") if self.access_log.exists() else ""
        found: dict[str, Attempt] = {}
        names = {f"127.0.0.1:{instance.port}": instance.name for instance in self.instances}
        for line in text.splitlines():
            if self.kind == "haproxy":
                # "%Ts.%ms %ci:%cp %b/%s %ST %rc %tsc %Ta %hr %{+Q}r": %hr is "{<x-request-id>}",
                # %rc (retries) "+N" when the request was redispatched to another server
                match = re.match(r"^\d+\.\d+ \S+ gateways/(\S+) (-?\d+) \+?(\d+) (\S+) \S+ \{([^}]*)\}", line)
                if match is None:
                    continue
                server, status, retries, termination, request_id = match.groups()
                served_by = server if server in names.values() else None
                found[request_id] = Attempt(served_by, ["?"] * int(retries), int(status), termination)
            else:
                match = re.search(r'" (\d+) \S+ rid=(\S*) upstream=\[([^\]]*)\] upstream_status=\[([^\]]*)\]', line)
                if match is None:
                    continue
                status, request_id, upstreams, statuses = match.groups()
                # "127.0.0.1:8001, 127.0.0.1:8002" and "502, 200": every instance tried, in order
                tried = [names.get(address, address) for address in upstreams.split(", ")] if upstreams != "-" else []
                last_status = statuses.split(", ")[-1]
                served_by = tried[-1] if tried and last_status.isdigit() and last_status not in ("502", "504") else None
                found[request_id] = Attempt(served_by, tried[:-1] if served_by else tried, int(status))
        return found
