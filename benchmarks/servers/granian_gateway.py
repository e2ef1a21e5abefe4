"""The gateway served by granian (a Rust HTTP server, `pip install granian`) instead of uvicorn, for
the `http_servers` benchmark section only: the same config, the same embedded runtimes started by
the gateway's own supervisor, the same ASGI app (`gateway.app.create_app`, access log and metrics
included), in granian's embedded server on this process's event loop (uvloop), HTTP/1.1 only.

What `gateway serve` adds around uvicorn (header and body timeouts, `Connection: close` while
draining, the drain itself, workers, the gRPC front door) is not here: this measures the HTTP
server's cost per request, not a way to run the gateway.

usage: python servers/granian_gateway.py --config configs/embedded --port 8903
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import sys
from pathlib import Path

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

from gateway.app import create_app
from gateway.build import interpreter_for
from gateway.cli.common import load
from gateway.serving.process import run_on_uvloop
from gateway.supervisor import Supervisor
from runtime.gc_tuning import tune_for_serving


async def main(config_dir: Path, port: int) -> int:
    loaded = load(argparse.Namespace(config=config_dir), {"port": port})
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    supervisor = Supervisor(config.local_models(), settings.runtime_start_timeout_s,
                            interpreter=functools.partial(interpreter_for, settings.envs_dir),
                            warmup_timeout_s=settings.warmup_timeout_s)
    try:
        targets, failed = await supervisor.start()
        app = create_app(settings, config.with_targets(targets), failed, supervisor)
        tune_for_serving()
        server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
                        log_access=False, backlog=1024)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
        await server.serve()
    finally:
        await supervisor.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8903)
    args = parser.parse_args()
    sys.exit(run_on_uvloop(main(args.config, args.port)))
