"""`gateway build`: per-model environments made by the install-command, used by `gateway serve`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.build import BuildError, ModelEnvironment, build_model, check_model_code, interpreter_for
from gateway.manifests import load_model_manifest
from tests.e2e.processes import GATEWAY, running_gateway

# Installs a module that exists only in the model's environment.
INSTALL = (
    "python -c \"import sys, sysconfig, pathlib; "
    "pathlib.Path(sysconfig.get_paths()['purelib'], 'only_here.py')"
    ".write_text('PREFIX = ' + repr(sys.prefix))\""
)
MODEL = """kind: Model
name: {name}
install-command: {command}
contract:
  inputs:
    x: {{shape: [-1], type: int32}}
  outputs:
    y: {{shape: [-1], type: int32}}
"""
SOURCE = "import only_here\n\ndef predict(x):\n    return x + 1\n"


def make_config(root: Path, name: str, command: str) -> Path:
    folder = root / "config" / "models" / name
    (folder / "src").mkdir(parents=True)
    (folder / "serving.yaml").write_text(MODEL.format(name=name, command=json.dumps(command)))
    (folder / "src" / "func_main.py").write_text(SOURCE)
    (root / "config" / "applications").mkdir()
    (root / "config" / "applications" / "app.yaml").write_text(
        f"kind: Application\nname: app\nsingular:\n  model: {name}\n")
    return root / "config"


def test_build_makes_an_environment_that_also_sees_the_gateway(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, "needs_pkg", INSTALL)
    model = load_model_manifest(config / "models" / "needs_pkg")
    envs = tmp_path / "envs"
    assert interpreter_for(envs, model) == sys.executable  # the gateway's own, before building
    unbuilt = check_model_code(interpreter_for(envs, model), model, timeout_s=60)
    assert unbuilt is not None
    assert f"{config / 'models' / 'needs_pkg' / 'src' / 'func_main.py'}:1" in unbuilt
    assert "No module named 'only_here'" in unbuilt
    environment = build_model(envs, model)
    assert interpreter_for(envs, model) == str(environment.python)
    probe = subprocess.run(
        [str(environment.python), "-c", "import only_here, sys, gateway, numpy; print(only_here.PREFIX)"],
        capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip() == str(environment.path)
    # `gateway check` imports the model in its environment, where the package is.
    assert check_model_code(interpreter_for(envs, model), model, timeout_s=60) is None
    # A model of the same name and version in another config directory has its own environment.
    other = load_model_manifest(make_config(tmp_path / "other", "needs_pkg", INSTALL) / "models" / "needs_pkg")
    assert ModelEnvironment.of(envs, other).path != environment.path
    with caplog.at_level(logging.WARNING, logger="gateway.build"):
        assert interpreter_for(envs, other) == sys.executable
    # ... and `serve` says where it looked, as when the config folder moved since `gateway build`.
    assert f"looked for {ModelEnvironment.of(envs, other).path}, found only {environment.path}" in caplog.text
    assert "run `gateway build` again" in caplog.text


def test_a_failed_install_names_the_model_and_shows_the_output(tmp_path: Path) -> None:
    failing = "python -c \"print('resolving numpy==0.0'); raise SystemExit(3)\""
    config = make_config(tmp_path, "wont_build", failing)
    model = load_model_manifest(config / "models" / "wont_build")
    with pytest.raises(BuildError) as caught:
        build_model(tmp_path / "envs", model)
    message = str(caught.value)
    assert message.startswith("model wont_build:1: install-command")
    assert "exit code 3" in message
    assert "resolving numpy==0.0" in message
    assert interpreter_for(tmp_path / "envs", model) == sys.executable


def test_serve_runs_the_model_in_its_built_environment(tmp_path: Path) -> None:
    config = make_config(tmp_path, "needs_pkg", INSTALL)
    env = dict(os.environ, GATEWAY_ENVS_DIR=str(tmp_path / "envs"))
    built = subprocess.run([str(GATEWAY), "build", "--config", str(config)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "building model needs_pkg:1" in built.stdout
    with running_gateway(config, env=env) as (_, url):
        response = httpx.post(f"{url}/gateway/applications/app", json={"x": [1]}, timeout=10)
        assert response.json() == {"y": [2]}


def _run(command: str, tmp_path: Path, timeout_s: float = 30, stop: object = None) -> tuple[object, list[str], float]:
    from gateway.build import _run_install
    lines: list[str] = []
    started = time.monotonic()
    run = _run_install(command, tmp_path, dict(os.environ), timeout_s, lines.append, stop)  # type: ignore[arg-type]
    return run, lines, time.monotonic() - started


def test_a_background_child_or_a_daemon_holding_the_output_does_not_hold_the_build(tmp_path: Path) -> None:
    run, lines, took = _run("echo hi; sleep 30 &", tmp_path)
    assert (run.outcome, run.returncode, lines[:1]) == ("exited", 0, ["hi"])  # type: ignore[attr-defined]
    assert took < 10
    pidfile = tmp_path / "daemon.pid"
    run, _, took = _run(f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & sleep 0.3", tmp_path)
    assert (run.outcome, run.returncode) == ("exited", 0)  # type: ignore[attr-defined]
    assert took < 10
    time.sleep(0.2)
    assert not Path(f"/proc/{pidfile.read_text().strip()}").exists() or \
        Path(f"/proc/{pidfile.read_text().strip()}/stat").read_text().split()[2] == "Z"  # killed
    run, _, took = _run("setsid sleep 30 & sleep 30", tmp_path, timeout_s=0.5)
    assert run.outcome == "timeout"  # type: ignore[attr-defined]
    assert took < 10


def test_output_lines_are_bounded_while_read_and_end_at_cr_or_lf(tmp_path: Path) -> None:
    from gateway.build import MAX_LINE_CHARS
    _, lines, _ = _run("printf 'a\\rb\\nc\\377d\\n'; head -c 50000000 /dev/zero | tr '\\0' x; echo; echo end",
                         tmp_path)
    assert lines[:3] == ["a", "b", "c\ufffdd"]
    assert len(lines[3]) == MAX_LINE_CHARS
    assert set(lines[3]) == {"x"}
    assert lines[-1] == "end"
    assert all(len(line) <= MAX_LINE_CHARS for line in lines)


def test_an_environment_for_another_install_command_is_not_used(tmp_path: Path) -> None:
    config = make_config(tmp_path, "stale", "true")
    model = load_model_manifest(config / "models" / "stale")
    environment = ModelEnvironment.of(tmp_path / "envs", model)
    (environment.path / "bin").mkdir(parents=True)
    (environment.path / "bin" / "python").write_text("")
    (environment.path / ".gateway-built").write_text("pip install old\n")  # a deleted version's
    assert interpreter_for(tmp_path / "envs", model) == sys.executable
    (environment.path / ".gateway-built").write_text("true\n")
    assert interpreter_for(tmp_path / "envs", model) == str(environment.python)
    (model.folder / "notes.txt").write_text("a file added later does not make it stale")  # type: ignore[operator]
    assert interpreter_for(tmp_path / "envs", model) == str(environment.python)
