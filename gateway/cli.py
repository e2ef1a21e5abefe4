"""`gateway serve|check|build` (also `python -m gateway`): parses the arguments and the
configuration, then runs the command (`serve` is gateway/serving/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import __version__
from gateway.build import BuildError, build_model, check_model_code, interpreter_for
from gateway.errors import ConfigError
from gateway.manifests import Config, ModelManifest, load_config
from gateway.serving.serve import serve
from gateway.settings import Settings


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
    return serve(settings, config)


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
