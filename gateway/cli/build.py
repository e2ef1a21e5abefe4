"""`gateway build`: make each local model's environment with its install-command (used by later
`gateway serve` and `gateway check`), with a progress line per model."""

from __future__ import annotations

import argparse
import functools
import sys

from gateway.build import BuildError, build_model
from gateway.cli.common import Commands, add_config_flag, command, load
from gateway.cli.progress import Progress
from gateway.manifests import Config
from gateway.settings import Settings

EPILOG = """examples:
  gateway build --config config/
  gateway build --config config/ --model increment_model

exit status: 0 every environment built, 1 an install-command failed (its last output is printed),
2 an invalid configuration (file:line) or no local model of a --model name"""


def add_parser(commands: Commands) -> None:
    build = command(commands, "build", "make each local model's environment with its install-command "
                    "(used by later `gateway serve`)",
                    "Create a virtual environment per local model (under build.envs_dir, default "
                    ".gateway/envs) and run the model's install-command in its folder. A progress line per "
                    "model shows the time spent (redrawn in place on a terminal).", EPILOG)
    add_config_flag(build)
    build.add_argument("--model", action="append", help="only this model (repeatable)")
    build.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    loaded = load(args)
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    return build(settings, config, args.model, Progress())


def build(settings: Settings, config: Config, names: list[str] | None, progress: Progress) -> int:
    models = [m for m in config.local_models() if not names or m.name in names]
    unknown = sorted(set(names or ()) - {m.name for m in models})
    if unknown:
        print(f"gateway build: no local model named {', '.join(unknown)}", file=sys.stderr)
        return 2
    failures = 0
    for model in models:
        command_text = model.install_command or "(no install-command)"
        try:
            environment = progress.run(f"building model {model.name}:{model.version}", command_text,
                                       functools.partial(build_model, settings.envs_dir, model))
        except BuildError as error:
            failures += 1
            print(f"gateway build: {error}", file=sys.stderr, flush=True)
        else:
            print(f"  ready: {environment.python}", flush=True)
    return 1 if failures else 0
