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
import importlib.util
import logging
import os
import re
import select
import shutil
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
from modelfolder import absolute

BUILT_MARKER = ".gateway-built"
OUTPUT_TAIL_LINES = 20
MAX_LINE_CHARS = 4096  # an output line longer than this is cut (a progress bar without newlines)
INSTALL_POLL_S = 0.05  # how often a running install-command's deadline and stop are checked
INSTALL_GRACE_S = 1.0  # how long output is still read after the shell's exit (or its kill)
READ_CHUNK = 65536
_LINE_END = re.compile(rb"\r\n|\r|\n")

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
        folder = hashlib.sha256(str(absolute(model.folder)).encode()).hexdigest()[:12]
        return cls(envs_dir.resolve() / f"{model.name}-{model.version}-{folder}")

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def built(self) -> bool:
        return (self.path / BUILT_MARKER).is_file() and self.python.exists()

    def built_for(self, model: ModelManifest) -> bool:
        """Built, by `model`'s install-command (an environment another install-command made at
        this path, a deleted version's say, is not used; an upload clears its path first)."""
        try:
            written = (self.path / BUILT_MARKER).read_text()
        except OSError:
            return False
        return self.python.exists() and written.splitlines()[:1] == [model.install_command or ""]

    def remove(self) -> None:
        """No environment is left at this path (blocking)."""
        shutil.rmtree(self.path, ignore_errors=True)


def interpreter_for(envs_dir: Path, model: ModelManifest) -> str:
    """The Python that runs the model: its built environment's, else the gateway's own (with a
    warning, once, when environments built for this model elsewhere exist: a moved config
    folder, or one built by an older gateway, needs `gateway build` again)."""
    environment = ModelEnvironment.of(envs_dir, model)
    if environment.built_for(model):
        return str(environment.python)
    if environment.built:
        log.warning("model %s:%s: the environment %s was built for another install-command or an older "
                    "folder at this path (run `gateway build` again); it runs with the gateway's own Python",
                    model.name, model.version, environment.path)
        return sys.executable
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
    own_pip = importlib.util.find_spec("pip") is None  # else the gateway's pip serves it (ensurepip: seconds)
    venv.EnvBuilder(with_pip=own_pip, clear=True, symlinks=True).create(environment.path)
    _see_gateway_packages(environment)
    if not own_pip:
        _pip_commands(environment)
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
    """Run `command` in a shell, in a session and process group of its own. The shell's exit (not
    the pipe's end) ends the run: then, or at the deadline or a stop, the whole group is killed,
    and so is any process still holding the output pipe (a daemon that left the group); the
    output is read in a thread, in bounded chunks, for at most INSTALL_GRACE_S more, then the
    pipe is closed, so nothing the command left behind holds the build."""
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,  # noqa: S602
                                   stdout=write_fd, stderr=write_fd, start_new_session=True)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    pipe = os.stat(read_fd).st_ino
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
    closing = threading.Event()

    def emit(line: str) -> None:
        tail.append(line)
        if on_output is not None:
            on_output(line)

    reader = threading.Thread(target=_read_lines, args=(read_fd, closing, emit), name="install-command output",
                              daemon=True)
    reader.start()
    outcome = "exited"
    deadline = time.monotonic() + timeout_s
    try:
        while not _wait_unreaped(process.pid, INSTALL_POLL_S):
            if stop is not None and stop.is_set():
                outcome = "stopped"
                break
            if time.monotonic() > deadline:
                outcome = "timeout"
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the group is still ours: its leader is not reaped
        returncode = process.wait()
        reader.join(INSTALL_GRACE_S)
        if reader.is_alive():  # a process outside the group holds the pipe: kill it where we can
            left = _kill_pipe_holders(pipe)
            reader.join(INSTALL_GRACE_S)
            closing.set()
            reader.join()
            log.warning("install-command %r left %s running with its output open; %s", command,
                        f"processes {left}" if left else "a process",
                        "killed" if left else "its output is no longer read")
        os.close(read_fd)
    while tail and not tail[-1].strip():
        tail.pop()
    return _InstallRun(outcome, returncode, list(tail))


def _read_lines(fd: int, closing: threading.Event, emit: Callable[[str], None]) -> None:
    """Read `fd` in chunks until its end or `closing`, giving each line (ended by \\n or \\r, cut at
    MAX_LINE_CHARS, bytes that are not UTF-8 replaced) to `emit`; memory stays bounded whatever
    the output."""
    partial = bytearray()
    dropping = False  # the current line passed MAX_LINE_CHARS: its rest is skipped
    limit = MAX_LINE_CHARS * 4  # bytes (a character is at most 4 of them)
    while not closing.is_set():
        ready, _, _ = select.select([fd], [], [], INSTALL_POLL_S)
        if not ready:
            continue
        try:
            chunk = os.read(fd, READ_CHUNK)
        except OSError:
            break
        if not chunk:
            break
        start = 0
        for match in _LINE_END.finditer(chunk):
            if not dropping:
                partial += chunk[start:match.start()][:max(0, limit - len(partial))]
            emit(_decode(partial))
            partial.clear()
            dropping = False
            start = match.end()
        if not dropping:
            partial += chunk[start:][:max(0, limit - len(partial))]
            if len(partial) >= limit:
                emit(_decode(partial))
                partial.clear()
                dropping = True
    if partial:
        emit(_decode(partial))


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode(errors="replace")[:MAX_LINE_CHARS]


def _kill_pipe_holders(inode: int) -> list[int]:
    """Kill (SIGKILL, with their process groups) the processes of this user that hold pipe
    `inode` open; their pids."""
    killed: list[int] = []
    target = f"pipe:[{inode}]"
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            holds = any(os.readlink(fd) == target for fd in (entry / "fd").iterdir())
        except OSError:
            continue
        if holds:
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


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


def _pip_commands(environment: ModelEnvironment) -> None:
    """`pip`, `pip3` and `pip3.X` in the environment's bin/, running the pip the gateway's
    packages hold (seen through the .pth file) with the environment's Python: it installs into
    the environment, as its own pip would."""
    script = (f"#!{environment.python}\nimport sys\nfrom pip._internal.cli.main import main\n"
              "sys.exit(main())\n")
    for name in ("pip", "pip3", f"pip{sys.version_info.major}.{sys.version_info.minor}"):
        path = environment.path / "bin" / name
        path.write_text(script)
        path.chmod(0o755)


def _see_gateway_packages(environment: ModelEnvironment) -> None:
    """A .pth file that appends the gateway's site-packages (with their own .pth files)."""
    purelib = subprocess.run(
        [str(environment.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    Path(purelib, "_gateway_packages.pth").write_text("\n".join(lines) + "\n")
