"""`gateway build`: one virtual environment per local model, made by its install-command.

Each environment lives in `<envs_dir>/<name>-<version>-<folder hash>/` (one per model folder,
so two config directories with a model of the same name do not share one), sees the gateway's
own packages (so the runtime can run in it) after its own, and is used by `gateway serve` once
the install-command has succeeded.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.manifests import ModelManifest

BUILT_MARKER = ".gateway-built"
OUTPUT_TAIL_LINES = 20
MAX_LINE_CHARS = 4096  # an output line longer than this is cut (a progress bar without newlines)
INSTALL_POLL_S = 0.05  # how often a running install-command's deadline and stop are checked

log = logging.getLogger("gateway.build")
_warned: set[Path] = set()  # environments a warning was logged for (a runtime restart asks again)
CHECK_POLL_S = 0.02


class BuildError(Exception):
    """A model's environment could not be made; the message names the model and shows why."""


@dataclass(frozen=True, slots=True)
class ModelEnvironment:
    """Where a model's environment lives and whether it is ready."""

    path: Path

    @classmethod
    def of(cls, envs_dir: Path, model: ModelManifest) -> ModelEnvironment:
        assert model.folder is not None
        folder = hashlib.sha256(str(model.folder.resolve()).encode()).hexdigest()[:12]
        return cls(envs_dir.resolve() / f"{model.name}-{model.version}-{folder}")

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def built(self) -> bool:
        return (self.path / BUILT_MARKER).is_file() and self.python.exists()


def interpreter_for(envs_dir: Path, model: ModelManifest) -> str:
    """The Python that runs the model: its built environment's, else the gateway's own (with a
    warning, once, when environments built for this model elsewhere exist: a moved config
    folder, or one built by an older gateway, needs `gateway build` again)."""
    environment = ModelEnvironment.of(envs_dir, model)
    if environment.built:
        return str(environment.python)
    others = _built_elsewhere(environment, model)
    if others and environment.path not in _warned:
        _warned.add(environment.path)
        log.warning("model %s:%s has no environment built for its folder %s: looked for %s, found only %s "
                    "(environments are per model folder: after moving the config folder, run `gateway build` "
                    "again); it runs with the gateway's own Python", model.name, model.version, model.folder,
                    environment.path, ", ".join(others))
    return sys.executable


def _built_elsewhere(environment: ModelEnvironment, model: ModelManifest) -> list[str]:
    """Environments built for a model of this name and version, but not for its folder."""
    prefix = f"{model.name}-{model.version}"
    if not environment.path.parent.is_dir():
        return []
    return sorted(str(path) for path in environment.path.parent.iterdir()
                  if (path.name == prefix or path.name.startswith(f"{prefix}-")) and (path / BUILT_MARKER).is_file())


def build_model(envs_dir: Path, model: ModelManifest, timeout_s: float = 1800, *, workdir: Path | None = None,
                on_output: Callable[[str], None] | None = None,
                stop: threading.Event | None = None) -> ModelEnvironment:
    """(Re)create the model's environment and run its install-command in the model folder.

    The environment is keyed by `model.folder`; the command runs in `workdir` when given (an
    upload builds in its staging folder the environment of the folder it will become).
    `on_output` gets each line of the command's output as it comes (from this thread); setting
    `stop` ends the command (its whole process group) with BuildCancelled, as `timeout_s` does
    with a BuildError."""
    assert model.folder is not None
    environment = ModelEnvironment.of(envs_dir, model)
    label = f"model {model.name}:{model.version}"
    venv.EnvBuilder(with_pip=True, clear=True, symlinks=True).create(environment.path)
    _see_gateway_packages(environment)
    if stop is not None and stop.is_set():
        raise BuildCancelled(f"{label}: the build was stopped")
    if model.install_command:
        env = dict(os.environ, VIRTUAL_ENV=str(environment.path),
                   PATH=f"{environment.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("PYTHONHOME", None)
        run = _run_install(model.install_command, workdir or model.folder, env, timeout_s, on_output, stop)
        if run.outcome == "stopped":
            raise BuildCancelled(f"{label}: install-command {model.install_command!r} was stopped")
        if run.outcome == "timeout":
            raise BuildError(f"{label}: install-command {model.install_command!r} did not finish "
                             f"within {timeout_s:g}s")
        if run.returncode != 0:
            tail = "\n  ".join(run.tail)
            raise BuildError(f"{label}: install-command {model.install_command!r} failed with exit "
                             f"code {run.returncode}; last output:\n  {tail}")
    (environment.path / BUILT_MARKER).write_text(f"{model.install_command or ''}\n")
    return environment


class BuildCancelled(BuildError):
    """The build was stopped by its caller (an upload whose client went away)."""


@dataclass(frozen=True, slots=True)
class _InstallRun:
    outcome: str  # "exited" | "timeout" | "stopped"
    returncode: int
    tail: list[str]


def _run_install(command: str, cwd: Path, env: dict[str, str], timeout_s: float,
                 on_output: Callable[[str], None] | None, stop: threading.Event | None) -> _InstallRun:
    """Run `command` in a shell, in a process group of its own (killed whole on timeout or stop),
    its output read line by line."""
    process = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,  # noqa: S602
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ended = threading.Event()
    outcome: list[str] = []

    def watch() -> None:  # ends the command at the deadline or when asked to stop
        deadline = time.monotonic() + timeout_s
        while not ended.wait(INSTALL_POLL_S):
            reason = "stopped" if stop is not None and stop.is_set() else \
                "timeout" if time.monotonic() > deadline else None
            if reason is not None:
                outcome.append(reason)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, name="install-command watch", daemon=True)
    watcher.start()
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")[:MAX_LINE_CHARS]
            tail.append(line)
            if on_output is not None:
                on_output(line)
        returncode = process.wait()
    finally:
        ended.set()
        watcher.join()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # what the command left running in its group
        process.wait()
    while tail and not tail[-1].strip():
        tail.pop()
    return _InstallRun(outcome[0] if outcome else "exited", returncode, list(tail))


def check_model_code(python: str, model: ModelManifest, timeout_s: float) -> str | None:
    """Import the model's function in a subprocess running `python` (its environment's) as its
    runtime would; None when it loads, else why (file:line for syntax and import errors, and for
    a sys.exit at import). The check runs in a process group of its own, killed at the end, so a
    process the model starts at import neither outlives the check nor holds it up."""
    assert model.folder is not None
    label = f"model {model.name}:{model.version}"
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([python, "-m", "runtime", "check", str(model.folder)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
        try:
            finished = _wait_unreaped(process.pid, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group is still ours: its leader is not reaped
            code = process.wait()
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").strip().splitlines()
    if not finished:
        return f"{label}: importing {model.folder / 'src' / 'func_main.py'} did not finish within {timeout_s:g}s"
    if code == 0:
        return None
    return f"{label}: {lines[-1] if lines else f'the import check exited with code {code}'}"


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until child `pid` exits, leaving it a zombie (so its pid and process group stay
    reserved); False if `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(CHECK_POLL_S)
    return True


def _see_gateway_packages(environment: ModelEnvironment) -> None:
    """A .pth file that appends the gateway's site-packages (with their own .pth files)."""
    purelib = subprocess.run(
        [str(environment.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    Path(purelib, "_gateway_packages.pth").write_text("\n".join(lines) + "\n")
