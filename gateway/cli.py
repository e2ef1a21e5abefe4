"""`gateway serve|check|build` (also `python -m gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway import __version__
from gateway.app import create_app
from gateway.build import BuildError, build_model, check_model_code, interpreter_for
from gateway.errors import ConfigError
from gateway.gc_tuning import tune_for_serving
from gateway.http_protocol import adopt_pending_connections, http_protocol
from gateway.manifests import Config, ModelManifest, load_config
from gateway.observability import multiprocess_dir
from gateway.reload import ConfigStager, Reloads
from gateway.settings import Settings
from gateway.supervisor import Supervisor, _die_with_parent
from gateway.workers import ANSWER_MARGIN_S, APPLY_TIMEOUT_S, ParentLink, WorkerReloads

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        settings = Settings.load(args.config, config.gateway.values, overrides={
            "host": getattr(args, "host", None), "port": getattr(args, "port", None),
            "log_level": getattr(args, "log_level", None),
            "access_log": getattr(args, "access_log", None), "watch_config": getattr(args, "watch", None),
            "workers": getattr(args, "workers", None)})
    except ConfigError as error:
        print(f"gateway: invalid configuration: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(settings, config)
    if args.command == "build":
        return _build(settings, config, args.model)
    return _serve(settings, config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="HTTP/JSON inference gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the model runtimes and serve HTTP")
    check = commands.add_parser("check", help="validate the manifests and print what they declare")
    build = commands.add_parser("build", help="make each local model's environment with its "
                                "install-command (used by later `gateway serve`)")
    build.add_argument("--model", action="append", help="only this model (repeatable)")
    for command in (serve, check, build):
        command.add_argument("--config", type=Path, default=Path("config"),
                             help="config directory (default: ./config)")
    serve.add_argument("--host", help="listen address (default from gateway.yaml, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default from gateway.yaml, else 8000)")
    serve.add_argument("--workers", type=int,
                       help="gateway processes sharing the port (SO_REUSEPORT; default 1)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                       help="one JSON line per request on stdout (default: on, see gateway.yaml)")
    serve.add_argument("--watch", action="store_true", default=None,
                       help="reload when a file under the config directory changes")
    return parser


def _check(settings: Settings, config: Config) -> int:
    """Print what the manifests declare and import every local model's code (in its built
    environment when there is one), as `gateway serve` would; 1 when a model does not load."""
    for model in config.models.values():
        where = model.backend.target if model.backend else f"folder {model.folder}"
        print(f"model {_label(model)} ({where}) "
              f"inputs={list(model.signature.inputs)} outputs={list(model.signature.outputs)}")
    for app in config.applications.values():
        stages = " -> ".join("|".join(str(v.model) for v in stage.variants) for stage in app.stages)
        print(f"application {app.name}: {stages}")
    errors = [error for model in config.local_models()
              if (error := check_model_code(interpreter_for(settings.envs_dir, model), model,
                                            settings.runtime_start_timeout_s)) is not None]
    for error in errors:
        print(f"gateway check: {error}", file=sys.stderr)
    if errors:
        print(f"gateway check: {len(errors)} model(s) do not load", file=sys.stderr)
        return 1
    print("configuration is valid")
    return 0


def _label(model: ModelManifest) -> str:
    """`name:N`; a TF Serving manifest without a pinned version fronts every version: `name`
    (`name@label` when it pins a label)."""
    if model.backend is not None and model.backend.version is None:
        label = model.backend.version_label
        return model.name if label is None else f"{model.name}@{label}"
    return f"{model.name}:{model.version}"


def _build(settings: Settings, config: Config, names: list[str] | None) -> int:
    models = [m for m in config.local_models() if not names or m.name in names]
    unknown = sorted(set(names or ()) - {m.name for m in models})
    if unknown:
        print(f"gateway build: no local model named {', '.join(unknown)}", file=sys.stderr)
        return 2
    failures = 0
    for model in models:
        command = model.install_command or "(no install-command)"
        print(f"building model {model.name}:{model.version}: {command}", flush=True)
        try:
            environment = build_model(settings.envs_dir, model)
        except BuildError as error:
            failures += 1
            print(f"gateway build: {error}", file=sys.stderr, flush=True)
        else:
            print(f"  ready: {environment.python}", flush=True)
    return 1 if failures else 0


class UvicornServer(uvicorn.Server):
    """uvicorn's server with signals left to the gateway, which also stops the runtimes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await adopt_pending_connections(self)  # before the listeners close, which would reset them
        await super().shutdown(sockets)


def _hold_sighup(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """While the gateway starts or stops (no reload to be had) SIGHUP is logged and ignored,
    rather than ending the gateway (its default action)."""
    if loop is not None:
        loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, _sighup_ignored)


def _sighup_ignored(_signum: int, _frame: FrameType | None) -> None:
    log.warning("SIGHUP ignored: the gateway is starting or stopping (a reload needs it serving)")


def _serve(settings: Settings, config: Config) -> int:
    _hold_sighup()
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        code = asyncio.run(_run(settings, config))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(_run(settings, config))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # to the end: Python resets its own handlers at exit
    return code


async def _run(settings: Settings, config: Config) -> int:
    loop = asyncio.get_running_loop()
    # The port first: a busy one fails the command before any runtime is started.
    try:
        listener = bound_socket(settings.host, settings.port, reuse_port=settings.workers > 1)
    except OSError as error:
        print(f"gateway: cannot listen on {settings.host}:{settings.port}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    if settings.port == 0:
        settings = dataclasses.replace(settings, port=listener.getsockname()[1])
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    supervisor = Supervisor(config.local_models(), settings.runtime_start_timeout_s,
                            interpreter=functools.partial(interpreter_for, settings.envs_dir))
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        starting = asyncio.create_task(supervisor.start())
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        targets, failed = starting.result()
        bound = config.with_targets(targets)
        if settings.workers > 1:
            reloads = WorkerReloads(ConfigStager(settings, bound, supervisor), failed, settings.drain_timeout_s)
            return await _run_workers(settings, reloads, stopping, listener)
        app = create_app(settings, bound, failed, supervisor)
        tune_for_serving()
        return await _serve_app(settings, app, sorted(config.applications), stopping, stop_wait, [listener])
    finally:
        listener.close()
        stop_wait.cancel()
        _hold_sighup(loop)
        await supervisor.stop()
        log.info("stopped")


async def _serve_app(settings: Settings, app: Starlette, applications: list[str], stopping: asyncio.Event,
                     stop_wait: asyncio.Task[bool], sockets: list[socket.socket] | None = None) -> int:
    """Serve `app` until `stopping`, then drain; SIGHUP (and --watch) reload it."""
    loop = asyncio.get_running_loop()
    server = UvicornServer(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        access_log=False, lifespan="on", server_header=False, log_config=None,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile, http=http_protocol(settings),
    ))
    serving = asyncio.create_task(_serve_http(server, sockets))
    scheme = "https" if settings.tls_certfile else "http"
    log.info("serving %s://%s:%s (applications: %s)", scheme, settings.host, settings.port,
             ", ".join(applications) or "none")
    reloads = _Reloads(lambda: getattr(app.state, "reload_via", None) or getattr(app.state, "reloader", None))
    loop.add_signal_handler(signal.SIGHUP, reloads.trigger)
    watching = None
    if settings.watch_config:
        watching = asyncio.create_task(_watch(settings.config_dir, reloads))
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        reloads.abandon()  # a reload waiting on a runtime that hangs must not hold up the drain
        if stopping.is_set() and not serving.done():
            # Load balancers see /health/ready turn 503 and stop sending; requests that still
            # arrive during the grace period are served. Then uvicorn stops accepting and gives
            # requests in flight up to drain_timeout_s.
            app.state.draining = True
            log.info("draining: ready is 503, new connections accepted for %gs more",
                     settings.shutdown_grace_s)
            await asyncio.wait({serving}, timeout=settings.shutdown_grace_s)
            log.info("stopping: finishing requests in flight (up to %gs)", settings.drain_timeout_s)
            server.should_exit = True
        if watching is not None:
            watching.cancel()
        return await serving
    finally:
        _hold_sighup(loop)


# ---------------------------------------------------------------- --workers N


def bound_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A bound TCP socket; with SO_REUSEPORT (`reuse_port`) each worker binds its own on the
    same port and the kernel spreads new connections over them. Not inheritable (Python's
    default): the runtimes started after it must not hold the port open once the gateway closes it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _run_workers(settings: Settings, reloads: WorkerReloads, stopping: asyncio.Event,
                       probe: socket.socket) -> int:
    """Run `settings.workers` gateway processes on the port (the model runtimes stay with this
    process); restart a worker that dies; on SIGTERM stop them all (each drains). A reload
    (SIGHUP, --watch, or `POST /admin/reload` to any worker) is staged here and applied by every
    worker (gateway/workers.py). Metrics are summed over the workers (prometheus-client's
    multiprocess mode, in a temporary directory unless PROMETHEUS_MULTIPROC_DIR is set)."""
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    own_dir = None
    if not multiprocess_dir():
        own_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    # Workers do not watch: the parent does, and reloads them all.
    worker_settings = dataclasses.replace(settings, watch_config=False)

    def spawn(index: int) -> multiprocessing.process.BaseProcess:
        link = reloads.attach(index)
        process = context.Process(target=_worker_main, args=(worker_settings, reloads.config,
                                                             reloads.failed, link),
                                  name=f"gateway-worker-{index}", daemon=False)
        # SIGHUP blocked from before the worker exists until it ignores SIGHUP itself (the mask
        # is inherited across exec): a SIGHUP while it starts is not the end of it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        link.close()  # the worker has its own copy
        return process

    workers = [spawn(i) for i in range(settings.workers)]
    probe.close()  # bound (SO_REUSEPORT) since before the runtimes started; each worker has its own now
    log.info("started %d workers on port %s (pids %s)", len(workers), settings.port,
             " ".join(str(w.pid) for w in workers))

    def forward(signum: int) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    triggers = _Reloads(lambda: reloads)
    loop.add_signal_handler(signal.SIGHUP, triggers.trigger)
    watching = None
    if settings.watch_config:
        watching = asyncio.create_task(_watch(settings.config_dir, triggers))
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=0.5)
            for index, worker in enumerate(workers):
                if not worker.is_alive() and not stopping.is_set():
                    log.error("worker %s exited with code %s; starting another", worker.pid, worker.exitcode)
                    workers[index] = spawn(index)
        forward(signal.SIGTERM)
        triggers.abandon()  # a reload under way stops what it started; its caller gets 503
        await reloads.close()
        limit = settings.shutdown_grace_s + settings.drain_timeout_s + 5
        await loop.run_in_executor(None, _join_all, workers, limit)
        return 0
    finally:
        if watching is not None:
            watching.cancel()
        _hold_sighup(loop)
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _join_all(workers: list[multiprocessing.process.BaseProcess], limit: float) -> None:
    deadline = time.monotonic() + limit
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))


def _worker_main(settings: Settings, config: Config, failed: Mapping[tuple[str, int], str],
                 link: Connection) -> None:  # pragma: no cover - a child process
    """One worker process: the HTTP server on its own SO_REUSEPORT socket, reloaded by the
    parent over `link`."""
    _die_with_parent()
    _hold_sighup()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by the parent until now
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(_worker_run(settings, config, failed, link))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # to the end: Python resets its own handlers at exit
    sys.exit(code)


async def _worker_run(settings: Settings, config: Config, failed: Mapping[tuple[str, int], str],
                      link: Connection) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        app = create_app(settings, config, failed, None)
        app.state.reload_via = ParentLink(link, app, settings.runtime_start_timeout_s + APPLY_TIMEOUT_S
                                          + ANSWER_MARGIN_S)
        tune_for_serving()
        return await _serve_app(settings, app, sorted(config.applications), stopping, stop_wait,
                                [bound_socket(settings.host, settings.port)])
    finally:
        stop_wait.cancel()


class _Reloads:
    """Reloads asked for by SIGHUP or the file watcher, run one after the other by what
    `reloads` returns (None before the gateway serves)."""

    def __init__(self, reloads: Callable[[], Reloads | None]) -> None:
        self.reloads = reloads
        self.tasks: set[asyncio.Task[None]] = set()

    def trigger(self) -> None:
        task = asyncio.create_task(self._reload())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abandon(self) -> None:
        """The gateway is stopping: reloads under way give up."""
        reloads = self.reloads()
        if reloads is not None:
            reloads.abandon()

    async def _reload(self) -> None:
        reloads = self.reloads()
        if reloads is None:
            log.warning("reload asked for before the gateway started serving; ignored")
            return
        result = await reloads.reload()
        if not result.applied:
            log.error("reload refused: %s", result.error)


async def _watch(config_dir: Path, reloads: _Reloads, interval_s: float = 1.0) -> None:
    """Reload when any file under the config directory changes (polled)."""
    seen = _snapshot(config_dir)
    while True:
        await asyncio.sleep(interval_s)
        current = _snapshot(config_dir)
        if current != seen:
            seen = current
            log.info("config directory changed; reloading")
            reloads.trigger()


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    snapshot = {}
    for path in directory.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            stat = path.stat()
            snapshot[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return snapshot


async def _serve_http(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> int:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exit_:  # uvicorn exits when it cannot bind
        return int(exit_.code or 1)
    return 0 if server.started else 1
