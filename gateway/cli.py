"""`gateway serve|check|build` (also `python -m gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from gateway import __version__
from gateway.app import create_app
from gateway.build import BuildError, build_model, interpreter_for
from gateway.errors import ConfigError
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from gateway.supervisor import Supervisor

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        settings = Settings.load(args.config, config.gateway.values, overrides={
            "host": getattr(args, "host", None), "port": getattr(args, "port", None),
            "log_level": getattr(args, "log_level", None)})
    except ConfigError as error:
        print(f"gateway: invalid configuration: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(config)
    if args.command == "build":
        return _build(settings, config, args.model)
    return _serve(settings, config, access_log=args.access_log)


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
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def _check(config: Config) -> int:
    for model in config.models.values():
        where = model.backend.target if model.backend else f"folder {model.folder}"
        print(f"model {model.name}:{model.version} ({where}) "
              f"inputs={list(model.signature.inputs)} outputs={list(model.signature.outputs)}")
    for app in config.applications.values():
        stages = " -> ".join("|".join(str(v.model) for v in stage.variants) for stage in app.stages)
        print(f"application {app.name}: {stages}")
    print("configuration is valid")
    return 0


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


def _serve(settings: Settings, config: Config, *, access_log: bool) -> int:
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.run(_run(settings, config, access_log))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(settings, config, access_log))


async def _run(settings: Settings, config: Config, access_log: bool) -> int:
    loop = asyncio.get_running_loop()
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
        app = create_app(settings, config.with_targets(targets), failed)
        server = UvicornServer(uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level,
            access_log=access_log, lifespan="on", server_header=False, log_config=None,
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
            ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile,
        ))
        serving = asyncio.create_task(_serve_http(server))
        scheme = "https" if settings.tls_certfile else "http"
        log.info("serving %s://%s:%s (applications: %s)", scheme, settings.host, settings.port,
                 ", ".join(sorted(config.applications)) or "none")
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            log.info("stopping: finishing requests in flight")
            server.should_exit = True
        return await serving
    finally:
        stop_wait.cancel()
        await supervisor.stop()
        log.info("stopped")


async def _serve_http(server: uvicorn.Server) -> int:
    try:
        await server.serve()
    except SystemExit as exit_:  # uvicorn exits when it cannot bind
        return int(exit_.code or 1)
    return 0 if server.started else 1
