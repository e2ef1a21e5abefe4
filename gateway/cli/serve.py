"""`gateway serve`: start the model runtimes and serve HTTP (gateway/serving/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.common import Commands, add_config_flag, command, load
from gateway.serving.serve import serve

EPILOG = """example:
  gateway serve --config config/ --port 8000

exit status: 0 stopped by SIGTERM or Ctrl-C, 1 the gateway failed to start or stopped on a fault,
2 an invalid configuration (file:line) or option"""


def add_parser(commands: Commands) -> None:
    parser = command(commands, "serve", "start the model runtimes and serve HTTP",
                     "Start a runtime per local model, then serve the config's applications and models over "
                     "HTTP until SIGTERM or Ctrl-C (which drain requests in flight first).", EPILOG)
    add_config_flag(parser)
    parser.add_argument("--host", help="listen address (default from gateway.yaml, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default from gateway.yaml, else 8000)")
    parser.add_argument("--grpc-port", type=int,
                        help="also serve the gRPC APIs on this port: TF Serving's, Hydrosphere's and the Open "
                             "Inference Protocol's (inference.GRPCInferenceService) (default: off)")
    parser.add_argument("--workers", type=int, help="gateway processes sharing the port (SO_REUSEPORT; default 1)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                        help="one JSON line per request on stdout (default: on, see gateway.yaml)")
    parser.add_argument("--auth-file", type=Path,
                        help="read the API keys and admin tokens from this YAML file (the keys of gateway.yaml's "
                             "auth section; default: GATEWAY_AUTH_FILE, else gateway.yaml)")
    parser.add_argument("--watch", action="store_true", default=None,
                        help="reload when a file under the config directory changes")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    loaded = load(args, {"host": args.host, "port": args.port, "log_level": args.log_level,
                         "access_log": args.access_log, "watch_config": args.watch, "workers": args.workers,
                         "grpc_port": args.grpc_port, "auth_file": args.auth_file})
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    return serve(settings, config)
