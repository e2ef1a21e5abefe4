"""Runs one embedded-runtime process per local model and stops them all on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import itertools
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2

from gateway.backends.tfserving import HEALTH_CHECK
from gateway.manifests import ModelManifest, RuntimeAddress
from modelfolder.layout import MODEL_FILE
from modelfolder.warmup import stamp
from runtime.warmup import EVENT as WARMUP_FAILED

log = logging.getLogger("gateway.supervisor")

ModelKey = tuple[str, int]
STDERR_TAIL_LINES = 20
TAIL_IN_MESSAGES = 5
STABLE_AFTER_S = 30.0  # a runtime that ran this long restarts without back-off
READ_AFTER_EXIT_S = 1.0  # its output still in the pipes takes far less


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child (a runtime, or a worker of `--workers`) if the gateway
    dies without cleaning up (and give it the default SIGHUP action, which the gateway ignores
    while it stops)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(eq=False)  # compared and hashed by identity: one object per process
class RuntimeProcess:
    """One running `python -m runtime serve` and what it printed."""

    model: ModelManifest
    process: asyncio.subprocess.Process
    port: int = 0
    local_socket: str | None = None
    stderr_tail: list[str] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    fingerprint: tuple[tuple[str, int, int], ...] = ()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> RuntimeAddress:
        return RuntimeAddress(self.target, self.local_socket)


def fingerprint(model: ModelManifest) -> tuple[tuple[str, int, int], ...]:
    """What a reload compares to tell whether a model folder changed: every file's path,
    modification time and size (serving.yaml's: its content without `request_log`, a gateway-side
    setting: editing it restarts no runtime), and its warmup file's when that lies outside the folder."""
    if model.folder is None:
        return ()
    entries = []
    manifest = model.folder / MODEL_FILE
    versions = _version_folders(model.folder)  # a version-1 folder's numbered versions are models of their own
    for path in sorted(model.folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not any(path.is_relative_to(v) for v in versions):
            name = str(path.relative_to(model.folder))
            digest = _without_request_log(path) if path == manifest else None
            if digest is not None:
                entries.append((name, digest, -1))
            else:
                stat = path.stat()
                entries.append((name, stat.st_mtime_ns, stat.st_size))
    warmup = stamp(model.warmup)
    if warmup is not None and model.warmup is not None and not model.warmup.is_relative_to(model.folder):
        entries.append(warmup)
    return tuple(entries)


def _version_folders(folder: Path) -> list[Path]:
    """The numbered sub-folders of `folder` with a serving.yaml: versions of their own
    (modelfolder.model_folders), not files of this one."""
    return [entry for entry in folder.iterdir()
            if entry.is_dir() and entry.name.isdigit() and (entry / MODEL_FILE).is_file()]


def _without_request_log(path: Path) -> int | None:
    """A digest of `path`'s YAML documents without their `request_log`; None when unreadable."""
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    for document in documents:
        if isinstance(document, dict):
            document.pop("request_log", None)
    text = json.dumps(documents, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def runs_alike(running: ModelManifest | None, model: ModelManifest) -> bool:
    """Whether `model` is served as `running` is: equal but for `request_log` (gateway-side:
    a change of only it neither restarts a runtime nor warms a model again)."""
    return running is not None and replace(running, request_log=None) == replace(model, request_log=None)


class RuntimeStartError(Exception):
    """A runtime did not come up; the message says why, with its last stderr lines."""


@dataclass
class Staged:
    """Runtimes started for a new set of models, not serving yet: `commit` puts them in
    service, `abort` stops them."""

    models: dict[ModelKey, ModelManifest]
    started: dict[ModelKey, RuntimeProcess] = field(default_factory=dict)
    targets: dict[ModelKey, RuntimeAddress] = field(default_factory=dict)
    failed: dict[ModelKey, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Failure:
    """A model that did not start, as it was then (to tell whether it changed since)."""

    model: ModelManifest
    fingerprint: tuple[tuple[str, int, int], ...]
    reason: str


class Supervisor:
    """Starts the runtimes of local models, waits until each is healthy, restarts those that
    crash (with back-off), swaps them on reload and stops them all."""

    def __init__(self, models: Sequence[ModelManifest], start_timeout_s: float,
                 interpreter: Callable[[ModelManifest], str] | None = None,
                 backoff_s: tuple[float, float] = (0.5, 30.0), warmup_timeout_s: float = 60.0) -> None:
        self.models = list(models)
        self.start_timeout_s = start_timeout_s
        self.warmup_timeout_s = warmup_timeout_s  # added to the start timeout of a model with a warmup file
        self.interpreter = interpreter or (lambda _model: sys.executable)
        self.backoff_s = backoff_s
        self.processes: dict[ModelKey, RuntimeProcess] = {}
        self._monitors: dict[ModelKey, asyncio.Task[None]] = {}
        self._failures: dict[ModelKey, _Failure] = {}
        self._starting: set[RuntimeProcess] = set()  # launched, not yet committed or stopped
        self._handed_over: list[RuntimeProcess] = []  # set aside, waiting for `retire`
        self._stopping = False
        self._socket_dir: str | None = None  # the runtimes' Unix sockets (the local wire)
        self._socket_numbers = itertools.count(1)

    async def start(self) -> tuple[dict[ModelKey, RuntimeAddress], dict[ModelKey, str]]:
        """Start every runtime at once; return the targets that came up and, for those
        that did not, why. Runtimes that came up are restarted whenever they exit."""
        staged = await self.stage(self.models, all_or_nothing=False)
        self.commit(staged)
        return staged.targets, staged.failed

    async def stage(self, models: Sequence[ModelManifest], *, all_or_nothing: bool = True) -> Staged:
        """Start runtimes for the new and changed models among `models` (those whose manifest
        or files differ from the running runtime's) and wait until each is healthy, without
        touching the runtimes in service. With `all_or_nothing`, one that does not come up
        within the start timeout stops all those started and raises RuntimeStartError naming
        every failure; a model that failed before and is unchanged is tried again, and if it
        fails again it stays failed (it is no reason to refuse: it was not serving). Cancelling
        the call stops what it started."""
        staged = Staged({model.key: model for model in models})
        to_start: list[ModelManifest] = []
        tolerated: set[ModelKey] = set()
        for key, model in staged.models.items():
            running = self.processes.get(key)
            prints = fingerprint(model)
            failure = self._failures.get(key)
            if running is not None and runs_alike(running.model, model) and running.fingerprint == prints:
                staged.targets[key] = running.address
                continue
            if not all_or_nothing or (failure is not None and runs_alike(failure.model, model)
                                      and failure.fingerprint == prints):
                tolerated.add(key)
            to_start.append(model)
        launched: list[RuntimeProcess] = []
        try:
            results = await asyncio.gather(*(self._launch(m, started=launched) for m in to_start),
                                           return_exceptions=True)
        except BaseException:  # cancelled (the gateway is stopping): nothing started may linger
            for runtime in launched:
                self._kill_now(runtime)
            raise
        errors: dict[ModelKey, str] = {}
        for model, result in zip(to_start, results, strict=True):
            if isinstance(result, RuntimeProcess):
                staged.started[model.key] = result
                staged.targets[model.key] = result.address
            elif isinstance(result, RuntimeStartError):
                errors[model.key] = str(result)
                log.error("model %s:%s did not start: %s", model.name, model.version, result)
            else:
                await self.abort(staged)
                raise result
        refusals = {key: reason for key, reason in errors.items() if key not in tolerated}
        if refusals:
            await self.abort(staged)
            raise RuntimeStartError("; ".join(f"model {name}:{version} did not start: {reason}"
                                              for (name, version), reason in sorted(refusals.items())))
        for key, reason in errors.items():
            model = staged.models[key]
            self._failures[key] = _Failure(model, fingerprint(model), reason)
        staged.failed.update(errors)
        return staged

    def commit(self, staged: Staged) -> list[RuntimeProcess]:
        """Put the runtimes `stage` started in service (restarted whenever they exit); set
        aside the ones they replace and those of models no longer wanted, and return these
        (to `retire` once their requests have drained)."""
        before = len(self._handed_over)
        for key, runtime in staged.started.items():
            self._starting.discard(runtime)
            self._set_aside(key)
            self._failures.pop(key, None)
            self.processes[key] = runtime
            self._monitors[key] = asyncio.create_task(self._keep_running(key))
        for key in [k for k in self.processes if k not in staged.models]:
            self._set_aside(key)
        for key in [k for k in self._failures if k not in staged.models]:
            del self._failures[key]
        return self._handed_over[before:]

    async def abort(self, staged: Staged) -> None:
        """Stop the runtimes `stage` started (the reload was refused)."""
        await asyncio.gather(*(self._stop_one(r, grace=1.0) for r in staged.started.values()))
        self._starting.difference_update(staged.started.values())

    def _set_aside(self, key: ModelKey) -> None:
        monitor = self._monitors.pop(key, None)
        if monitor is not None:
            monitor.cancel()
        runtime = self.processes.pop(key, None)
        if runtime is not None:
            self._handed_over.append(runtime)

    async def retire(self, runtimes: list[RuntimeProcess], grace: float = 5.0) -> None:
        """Stop runtimes a reload replaced or removed (once their requests have drained)."""
        await asyncio.gather(*(self._stop_one(r, grace) for r in runtimes))
        self._handed_over = [r for r in self._handed_over if r not in runtimes]

    async def _keep_running(self, key: ModelKey) -> None:
        """Restart the model's runtime on its port whenever it exits, backing off while it
        keeps failing."""
        failures = 0
        while not self._stopping:
            runtime = self.processes[key]
            model = runtime.model
            started = time.monotonic()
            code = await runtime.process.wait()
            await self._finish_reading(runtime)
            failures = 0 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            log.error("model %s:%s runtime (pid %s) exited with code %s%s", model.name, model.version,
                      runtime.process.pid, code, self._tail(runtime))
            while not self._stopping:
                delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** max(failures - 1, 0))
                log.info("restarting model %s:%s in %.1fs", model.name, model.version, delay)
                await asyncio.sleep(delay)
                try:
                    self.processes[key] = await self._launch(model, runtime.port, runtime.local_socket)
                    break
                except Exception as error:  # noqa: BLE001 - its folder gone, say: try again later, never give up
                    failures += 1
                    log.error("model %s:%s did not restart: %s", model.name, model.version,
                              error if isinstance(error, RuntimeStartError) else f"{type(error).__name__}: {error}")

    async def _launch(self, model: ModelManifest, port: int = 0, local_socket: str | None = None,
                      started: list[RuntimeProcess] | None = None) -> RuntimeProcess:
        """Spawn the model's runtime, learn its port and wait until it is healthy. A restart
        keeps the port and the Unix socket of the runtime it replaces. The runtime is added to
        `started` as soon as it is spawned (so that a cancelled caller can stop it)."""
        assert model.folder is not None
        local_socket = local_socket or self._new_socket_path()
        files = fingerprint(model)  # before the spawn: a folder gone (OSError) leaves no process behind
        process = await asyncio.create_subprocess_exec(
            self.interpreter(model), "-m", "runtime", "serve", str(model.folder),
            "--host", "127.0.0.1", "--port", str(port), "--local-socket", local_socket,
            "--warmup-timeout", str(self.warmup_timeout_s),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the gateway, which stops runtimes in order
        )
        runtime = RuntimeProcess(model, process, local_socket=local_socket, fingerprint=files)
        if started is not None:
            self._starting.add(runtime)
            started.append(runtime)
        runtime.readers.append(asyncio.create_task(self._forward_stderr(runtime)))
        # The runtime warms its model before it listens: that time is part of its start.
        timeout = self.start_timeout_s + (self.warmup_timeout_s if model.warmup is not None else 0.0)
        deadline = time.monotonic() + timeout
        try:
            runtime.port = await asyncio.wait_for(self._read_port(runtime), timeout)
            await self._wait_healthy(runtime, deadline)
        except (TimeoutError, RuntimeStartError) as error:
            await self._stop_one(runtime, grace=1.0)
            self._starting.discard(runtime)
            reason = str(error) or f"not healthy within {timeout:g}s (is {model.folder} stuck loading?)"
            raise RuntimeStartError(reason + self._tail(runtime)) from None
        except BaseException:
            self._kill_now(runtime)
            raise
        runtime.readers.append(asyncio.create_task(self._forward_stdout(runtime)))
        log.info("model %s:%s runtime pid %s on %s", model.name, model.version, process.pid,
                 runtime.target)
        return runtime

    def _new_socket_path(self) -> str:
        if self._socket_dir is None:
            self._socket_dir = tempfile.mkdtemp(prefix="gateway-runtimes-")
        return f"{self._socket_dir}/{next(self._socket_numbers)}.sock"  # short: socket paths max ~100 bytes

    async def _read_port(self, runtime: RuntimeProcess) -> int:
        assert runtime.process.stdout is not None
        warmup_failure: str | None = None
        while True:
            line = await runtime.process.stdout.readline()
            if not line:
                code = await runtime.process.wait()
                await self._finish_reading(runtime)
                raise RuntimeStartError(warmup_failure or f"runtime exited with code {code}")
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "listening":
                    return int(event["port"])
                if isinstance(event, dict) and event.get("event") == WARMUP_FAILED:
                    warmup_failure = str(event.get("error"))
                    continue
            log.info("[%s] %s", runtime.model.name, line.decode(errors="replace").rstrip())

    async def _wait_healthy(self, runtime: RuntimeProcess, deadline: float) -> None:
        async with grpc.aio.insecure_channel(runtime.target) as channel:
            check = channel.unary_unary(
                HEALTH_CHECK,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            while time.monotonic() < deadline:
                if runtime.process.returncode is not None:
                    raise RuntimeStartError(f"runtime exited with code {runtime.process.returncode}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await check(health_pb2.HealthCheckRequest(), timeout=1.0,
                                         wait_for_ready=True)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.05)
        raise TimeoutError

    async def _forward_stderr(self, runtime: RuntimeProcess) -> None:
        assert runtime.process.stderr is not None
        async for line in runtime.process.stderr:
            text = line.decode(errors="replace").rstrip()
            runtime.stderr_tail = [*runtime.stderr_tail[-(STDERR_TAIL_LINES - 1):], text]
            print(f"[{runtime.model.name}] {text}", file=sys.stderr, flush=True)

    async def _forward_stdout(self, runtime: RuntimeProcess) -> None:
        assert runtime.process.stdout is not None
        async for line in runtime.process.stdout:
            log.info("[%s] %s", runtime.model.name, line.decode(errors="replace").rstrip())

    @staticmethod
    async def _finish_reading(runtime: RuntimeProcess) -> None:
        """Read what the exited runtime still printed; a process it left behind may hold its
        pipes open, so give up after READ_AFTER_EXIT_S (the restart must not wait for it)."""
        pending = [reader for reader in runtime.readers if not reader.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=READ_AFTER_EXIT_S)
            for reader in late:
                reader.cancel()
            await asyncio.gather(*runtime.readers, return_exceptions=True)

    @staticmethod
    def _tail(runtime: RuntimeProcess) -> str:
        if not runtime.stderr_tail:
            return ""
        return "; last output:\n  " + "\n  ".join(runtime.stderr_tail[-TAIL_IN_MESSAGES:])

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every runtime, wait `grace` seconds, then SIGKILL what is left (and at once
        those still starting for a reload)."""
        self._stopping = True
        monitors = list(self._monitors.values())
        for monitor in monitors:
            monitor.cancel()
        await asyncio.gather(*monitors, return_exceptions=True)
        starting = list(self._starting)
        for runtime in starting:
            self._kill_now(runtime)
        runtimes = [*self.processes.values(), *self._handed_over, *starting]
        await asyncio.gather(*(self._stop_one(r, grace) for r in runtimes))
        self.processes.clear()
        self._starting.clear()
        self._handed_over.clear()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _kill_now(self, runtime: RuntimeProcess) -> None:
        """SIGKILL a runtime without waiting (for callers being cancelled)."""
        self._starting.discard(runtime)
        if runtime.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                runtime.process.kill()
        for reader in runtime.readers:
            reader.cancel()

    @staticmethod
    async def _stop_one(runtime: RuntimeProcess, grace: float) -> None:
        process = runtime.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for reader in runtime.readers:
            reader.cancel()
        await asyncio.gather(*runtime.readers, return_exceptions=True)
