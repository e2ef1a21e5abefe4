"""`python -m runtime serve MODEL_DIR --port N`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from modelfolder import RUNTIME_THREADS, ConfigError, WarmupError
from modelfolder.arguments import seconds
from runtime.gc_tuning import tune_for_serving
from runtime.model import ENTRY_POINT, _user_line, load_model
from runtime.server import ModelServer
from runtime.warmup import end_runtime, warm

log = logging.getLogger("runtime")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m runtime",
                                     description="Serve one model folder over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve MODEL_DIR (serving.yaml + src/func_main.py)")
    serve.add_argument("model_dir", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    serve.add_argument("--local-socket", metavar="PATH",
                       help="also serve Predict and PredictMany on this Unix socket (the local wire)")
    serve.add_argument("--threads", type=int, default=RUNTIME_THREADS,
                       help=f"calls run at once (default {RUNTIME_THREADS}, at least 2 per worker)")
    serve.add_argument("--grace", type=float, default=5.0,
                       help="seconds in-flight calls get on shutdown (default 5)")
    serve.add_argument("--warmup-timeout", type=seconds, default=60.0,
                       help="seconds the model's warmup records may take before it serves (default 60)")
    check = commands.add_parser("check", help="import MODEL_DIR's function and exit: 0 when it "
                                "loads, else 2 with the error (file:line) as the last line on stderr")
    check.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s runtime: %(message)s")
    if args.command == "check":
        return _check(args.model_dir)
    return _serve(args.model_dir, args.host, args.port, args.threads, args.grace, args.local_socket,
                  args.warmup_timeout)


def _check(model_dir: Path) -> int:
    try:
        load_model(model_dir.resolve())
    except ConfigError as error:
        print(error, file=sys.stderr, flush=True)
        return 2
    except (SystemExit, KeyboardInterrupt) as error:  # `serve` would not come up either
        print(_ended_at_import(error, model_dir), file=sys.stderr, flush=True)
        return 2
    return 0


def _ended_at_import(error: SystemExit | KeyboardInterrupt, model_dir: Path) -> str:
    """file:line and what the model's import did to end the process."""
    source = model_dir.resolve() / ENTRY_POINT
    what = f"called sys.exit({error.code!r})" if isinstance(error, SystemExit) else "raised KeyboardInterrupt"
    return f"{source}:{_user_line(error, source)}: the model {what} while importing: its runtime cannot start"


def _serve(model_dir: Path, host: str, port: int, threads: int, grace: float, local_socket: str | None,
           warmup_timeout: float) -> int:
    try:
        server = ModelServer.for_folder(model_dir.resolve(), host=host, port=port, threads=threads,
                                        local_socket=local_socket)
    except ConfigError as error:
        print(f"runtime: cannot load {model_dir}: {error}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exit_:  # the process ends with its code, as the model asked, and says where
        print(f"runtime: cannot load {model_dir}: {_ended_at_import(exit_, model_dir)}", file=sys.stderr,
              flush=True)
        raise
    try:  # before listening: nothing reaches the model until its warmup is done
        warm(server, warmup_timeout)
    except WarmupError as error:
        end_runtime(error)
    try:
        bound = server.start()
    except OSError as error:
        print(f"runtime: {error}", file=sys.stderr, flush=True)
        return 2

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        server.stop(grace)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tune_for_serving()
    manifest = server.manifest
    # The supervisor reads this line to learn the port.
    print(json.dumps({"event": "listening", "model": manifest.name, "version": manifest.version,
                      "port": bound}), flush=True)
    log.info("serving %s:%s (%s) on %s:%s", manifest.name, manifest.version,
             manifest.signature.name, host, bound)
    server.wait()
    return 0
