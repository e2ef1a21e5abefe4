"""`gateway serve --workers N`: N spawned gateway processes serving HTTP on one port, each on its
own SO_REUSEPORT socket; the model runtimes stay with the parent. The pool starts them, replaces
one that dies (on the current config), forwards SIGTERM (each worker drains) and joins them. A
reload (SIGHUP, --watch, or `POST /admin/reload` to any worker) is staged by the parent and applied
by every worker (worker_reloads.py). Metrics are summed over the workers (prometheus-client's
multiprocess mode, in a temporary directory unless PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection

from gateway.app import create_app
from gateway.manifests import Config
from gateway.observability import multiprocess_dir
from gateway.serving.config_watch import ReloadTrigger, watch_config
from gateway.serving.process import hold_sighup, run_on_uvloop, stop_on_signals
from gateway.serving.server import bound_socket, serve_app
from gateway.serving.worker_reloads import ANSWER_MARGIN_S, APPLY_TIMEOUT_S, ParentLink, WorkerReloads
from gateway.settings import Settings
from gateway.supervisor import die_with_parent
from runtime.gc_tuning import tune_for_serving

log = logging.getLogger("gateway")

CHECK_INTERVAL_S = 0.5  # how soon a worker that died is replaced
KILL_WAIT_S = 5.0  # a SIGKILLed worker is gone far sooner


class WorkerPool:
    """The worker processes of one `gateway serve --workers N`, indexed 0..N-1."""

    def __init__(self, settings: Settings, reloads: WorkerReloads) -> None:
        self.reloads = reloads
        # Workers do not watch: the parent does, and reloads them all.
        self.worker_settings = dataclasses.replace(settings, watch_config=False)
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.process.BaseProcess] = []

    def start(self, count: int) -> None:
        """Start workers 0..count-1; if one cannot be started, those already started are
        killed (and reaped) before the error goes on."""
        try:
            for index in range(count):
                self.workers.append(self.spawn(index))
        except BaseException:
            self.kill()
            self.join(KILL_WAIT_S)
            raise

    def spawn(self, index: int) -> multiprocessing.process.BaseProcess:
        """Start worker `index` on the current config, with a new link to the parent."""
        link = self.reloads.attach(index)
        process = self.context.Process(target=_worker_main, args=(self.worker_settings, self.reloads.config,
                                                                  self.reloads.failed, link),
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

    def replace_dead(self) -> None:
        """Start another worker, on the current config, in the place of each that has exited."""
        for index, worker in enumerate(self.workers):
            if not worker.is_alive():
                log.error("worker %s exited with code %s; starting another", worker.pid, worker.exitcode)
                self.workers[index] = self.spawn(index)

    def forward(self, signum: int) -> None:
        """Send `signum` to every worker still running."""
        for worker in self.workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signum)

    def join(self, limit: float) -> None:
        """Wait up to `limit` seconds in all for every worker to exit (blocking)."""
        deadline = time.monotonic() + limit
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def kill(self) -> None:
        """SIGKILL the workers still running (the last resort once the drain is over)."""
        for worker in self.workers:
            if worker.is_alive():
                worker.kill()


async def run_workers(settings: Settings, reloads: WorkerReloads, stopping: asyncio.Event,
                      probe: socket.socket) -> int:
    """Run `settings.workers` gateway processes on the port until `stopping`, then stop them all."""
    loop = asyncio.get_running_loop()
    own_dir = None
    if not multiprocess_dir():
        own_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    pool = WorkerPool(settings, reloads)
    triggers = ReloadTrigger(lambda: reloads)
    watching = None
    try:
        # `probe` stays bound (never listening, so it gets no connection) until the pool stops:
        # with --port 0 nobody else can take the port while a worker is spawning or replaced.
        pool.start(settings.workers)
        log.info("started %d workers on port %s (pids %s)", len(pool.workers), settings.port,
                 " ".join(str(w.pid) for w in pool.workers))
        loop.add_signal_handler(signal.SIGHUP, triggers.trigger)
        if settings.watch_config:
            watching = asyncio.create_task(watch_config(settings.config_dir, triggers))
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=CHECK_INTERVAL_S)
            if not stopping.is_set():
                pool.replace_dead()
        pool.forward(signal.SIGTERM)
        triggers.abandon()  # a reload under way stops what it started; its caller gets 503
        await reloads.close()
        await loop.run_in_executor(None, pool.join, settings.shutdown_grace_s + settings.drain_timeout_s + 5)
        return 0
    finally:
        if watching is not None:
            watching.cancel()
        hold_sighup(loop)
        pool.kill()
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _worker_main(settings: Settings, config: Config, failed: Mapping[tuple[str, int], str],
                 link: Connection) -> None:  # pragma: no cover - a child process
    """One worker process: the HTTP server on its own SO_REUSEPORT socket, reloaded by the
    parent over `link`."""
    die_with_parent()
    hold_sighup()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by the parent until now
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    code = run_on_uvloop(_worker_run(settings, config, failed, link))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # to the end: Python resets its own handlers at exit
    sys.exit(code)


async def _worker_run(settings: Settings, config: Config, failed: Mapping[tuple[str, int], str],
                      link: Connection) -> int:
    loop = asyncio.get_running_loop()
    stopping = stop_on_signals(loop)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        app = create_app(settings, config, failed, None)
        reload_timeout_s = settings.runtime_start_timeout_s + APPLY_TIMEOUT_S + ANSWER_MARGIN_S
        # A change starts a runtime and warms remote models (an upload's build ran in this worker before).
        change_timeout_s = reload_timeout_s + settings.warmup_timeout_s
        app.state.reload_via = ParentLink(link, app, reload_timeout_s, change_timeout_s=change_timeout_s)
        tune_for_serving()
        return await serve_app(settings, app, sorted(config.applications), stopping, stop_wait,
                               [bound_socket(settings.host, settings.port)])
    finally:
        stop_wait.cancel()
