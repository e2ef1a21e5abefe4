"""`gateway serve`: bind the port, start the model runtimes, serve HTTP in this process (or
through a pool of worker processes), and at SIGINT/SIGTERM drain and stop the runtimes. The
gateway owns the signals (uvicorn's own handlers are off) so that a shutdown always stops the runtimes."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import signal
import sys

from gateway.app import create_app
from gateway.build import interpreter_for
from gateway.grpc_api.server import port_problem as grpc_port_problem
from gateway.manifests import Config, RuntimeAddress
from gateway.reload import ConfigStager
from gateway.serving.process import hold_sighup, run_on_uvloop, stop_on_signals
from gateway.serving.server import bound_socket, serve_app
from gateway.serving.worker_pool import run_workers
from gateway.serving.worker_reloads import WorkerReloads
from gateway.settings import Settings
from gateway.supervisor import ModelKey, Supervisor
from gateway.warmup import warm_remotes
from runtime.gc_tuning import tune_for_serving

log = logging.getLogger("gateway")


def serve(settings: Settings, config: Config) -> int:
    """Serve `config` until SIGINT/SIGTERM; the exit code of the command."""
    hold_sighup()
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = run_on_uvloop(_run(settings, config))
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
    if (problem := grpc_port_problem(settings)) is not None:
        listener.close()
        print(f"gateway: {problem}", file=sys.stderr)
        return 1
    stopping = stop_on_signals(loop)
    supervisor = Supervisor(config.local_models(), settings.runtime_start_timeout_s,
                            interpreter=functools.partial(interpreter_for, settings.envs_dir),
                            warmup_timeout_s=settings.warmup_timeout_s)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        starting = asyncio.create_task(_start_models(settings, config, supervisor))
        await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        targets, failed = starting.result()
        bound = config.with_targets(targets)
        if settings.workers > 1:
            reloads = WorkerReloads(ConfigStager(settings, bound, supervisor, failed), failed,
                                    settings.drain_timeout_s)
            return await run_workers(settings, reloads, stopping, listener)
        app = create_app(settings, bound, failed, supervisor)
        tune_for_serving()
        return await serve_app(settings, app, sorted(config.applications), stopping, stop_wait, [listener])
    finally:
        listener.close()
        stop_wait.cancel()
        hold_sighup(loop)
        await supervisor.stop()
        log.info("stopped")


async def _start_models(settings: Settings, config: Config,
                        supervisor: Supervisor) -> tuple[dict[ModelKey, RuntimeAddress], dict[ModelKey, str]]:
    """Start the runtimes (each warms its model) and warm the remote models that name a warmup
    file, at once (a remote server not up yet is waited for); the runtimes' targets and the
    models not served, with why. A fault in one half cancels the other."""
    try:
        async with asyncio.TaskGroup() as group:
            starting = group.create_task(supervisor.start())
            warming = group.create_task(warm_remotes(config.models.values(), settings.warmup_timeout_s,
                                                     max_elements=settings.max_elements, wait_for_server=True))
    except BaseExceptionGroup as faults:
        raise faults.exceptions[0] from None
    targets, failed = starting.result()
    return targets, {**failed, **warming.result()}
