"""`gateway serve|check|build|logs` (also `python -m gateway`): parses the arguments and the
configuration, then runs the command (`serve` is gateway/serving/, `logs` gateway/requestlog/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from gateway import __version__
from gateway.build import BuildError, build_model, check_model_code, interpreter_for
from gateway.errors import ConfigError
from gateway.manifests import (
    Config,
    ModelManifest,
    diff,
    load_config,
    manifest_plan,
    not_compared,
    plan_from_json,
    plan_lines,
    with_running_contracts,
)
from gateway.manifests.request_log_kind import request_log_text
from gateway.requestlog import replay, show, warmup_file
from gateway.serving.serve import serve
from gateway.settings import Settings
from gateway.warmup import check_warmups
from modelfolder.arguments import seconds
from modelfolder.warmup import MAX_RECORDS as MAX_WARMUP_RECORDS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "logs":  # reads log files, not the configuration
        return _logs(args)
    if args.command == "check" and args.api_key is not None and args.url is None:
        parser.error("check: --api-key is for --url (the API key of the running gateway)")
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
        status = _check(settings, config)
        if status == 0 and args.url is not None:
            return _compare(config, args.url, args.api_key, args.timeout)
        return status
    if args.command == "build":
        return _build(settings, config, args.model)
    return serve(settings, config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="HTTP/JSON inference gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the model runtimes and serve HTTP")
    check = commands.add_parser(
        "check", help="validate the manifests and print what they declare",
        description="Validate the manifests, import each local model's code and print each application's "
                    "plan. With --url, also compare it with the plans of a running gateway and print what "
                    "a reload would change. Exit status: 0 valid (and no breaking change), 1 a model does "
                    "not load, 2 an invalid manifest or a gateway that does not answer, 3 breaking changes "
                    "(an application or input removed, an input added, an output removed, a dtype "
                    "changed, a shape that no longer fits), 4 nothing breaking but something not compared "
                    "(an application the API key may not see, a contract only discovered when served).")
    check.add_argument("--url", help="a running gateway (http://host:port) to compare the plans with")
    check.add_argument("--api-key", help="the API key for --url when the gateway has keys (only the "
                       "applications it may call are compared)")
    check.add_argument("--timeout", type=seconds, default=10.0, help="seconds to wait for --url (default 10)")
    build = commands.add_parser("build", help="make each local model's environment with its "
                                "install-command (used by later `gateway serve`)")
    build.add_argument("--model", action="append", help="only this model (repeatable)")
    _logs_parser(commands)
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


def _logs_parser(commands: Any) -> None:
    logs = commands.add_parser("logs", help="read and replay request logs (TFRecord files of PredictionLog)",
                               description="Read the request logs a file sink wrote, or any TF Serving warmup "
                                           "file, and replay them against a running gateway.")
    actions = logs.add_subparsers(dest="logs_command", required=True)
    show_command = actions.add_parser(
        "show", help="print the records of a log file readably or as JSON lines",
        description="Print each record of FILE: a header (record number, offset and, from the index beside the "
                    "file, request id, time, status, application/stage/variant, duration), the request and the "
                    "outputs in protobuf text format, each tensor decoded (summarised). FILE may be a "
                    "`.tfrecord`, a `.tfrecord.partial` still being written (a truncated last record is left "
                    "out), a warmup file, or a directory (its `.tfrecord` and `.tfrecord.partial` files in the "
                    "order they were opened). Exit status: 0 all read, 1 a corrupt record after some were "
                    "printed, 2 nothing could be read.")
    show_command.add_argument("file", type=Path, metavar="FILE", help="log file, warmup file or log directory")
    show_command.add_argument("--limit", type=_count, metavar="N", help="only the first N records")
    show_command.add_argument("--json", action="store_true", help="one JSON object per record and line "
                              "(index fields, model_spec, inputs and outputs as native JSON values)")
    replay_command = actions.add_parser(
        "replay", help="send the logged requests to a running gateway and compare the answers",
        description="Send each record's inputs to the gateway at --url, one request at a time, at most --rate "
                    "a second: to the model route of the model and version that ran (TF Serving's REST route for a "
                    "signature other than the model's default), or with --application to that application's "
                    "route (only the records of its stage 1 when the file has an index). "
                    "Each answer's outputs are compared with the logged ones (exact for integers and "
                    "strings, numpy.isclose for floats). Exit status: 0 every request answered 2xx, 1 "
                    "otherwise (or nothing sent), 2 bad arguments or a file that cannot be read, 130 interrupted.")
    replay_command.add_argument("file", type=Path, metavar="FILE", help="log file, warmup file or log directory")
    replay_command.add_argument("--url", required=True, type=_http_url, help="the gateway, http://host:port")
    replay_command.add_argument("--rate", type=_rate, default=10.0, metavar="R",
                                help=f"requests per second at most (default 10, at most {replay.MAX_RATE:g})")
    replay_command.add_argument("--limit", type=_count, metavar="N", help="send at most N requests")
    replay_command.add_argument("--application", metavar="NAME", help="send to this application's route instead")
    replay_command.add_argument("--api-key", metavar="KEY",
                                help="API key of the gateway (sent as Authorization: Bearer)")
    replay_command.add_argument("--timeout", type=seconds, default=10.0, metavar="S",
                                help="seconds to wait for each answer (default 10)")
    warmup_command = actions.add_parser(
        "warmup", help="write a TF Serving warmup file of a model's answered calls",
        description="Write the answered calls of FILE (index status 200; every record of a file without an "
                    "index, with a warning) of one model to --out as a TF Serving warmup file (TFRecord of "
                    "PredictionLog, as assets.extra/tf_serving_warmup_requests), at most --limit of them. The "
                    "file is written as PATH.partial and renamed when complete. Exit status: 0 written, 1 "
                    "nothing to write or a corrupt record (the records before it are written), 2 bad arguments, "
                    "a file that cannot be read, or calls of several models without --model.")
    warmup_command.add_argument("file", type=Path, metavar="FILE", help="log file or log directory")
    warmup_command.add_argument("--out", required=True, type=Path, metavar="PATH", help="the warmup file to write")
    warmup_command.add_argument("--model", type=_model_choice, metavar="NAME[:VERSION]",
                                help="only this model's calls (needed when the log holds several models')")
    warmup_command.add_argument("--limit", type=_warmup_count, default=MAX_WARMUP_RECORDS, metavar="N",
                                help=f"at most N records (default and at most {MAX_WARMUP_RECORDS}, "
                                     "TF Serving's limit)")


def _logs(args: argparse.Namespace) -> int:
    if args.logs_command == "show":
        return show.show(args.file, limit=args.limit, as_json=args.json)
    if args.logs_command == "warmup":
        try:
            return warmup_file.write_warmup(args.file, args.out, model=args.model, limit=args.limit)
        except KeyboardInterrupt:  # nothing is left but the .partial file, which is removed
            return 130
    target = replay.Target(args.url, args.application, args.api_key, args.timeout)
    return replay.replay(args.file, target, rate=args.rate, limit=args.limit)


def _count(text: str) -> int:
    """A positive whole number (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _warmup_count(text: str) -> int:
    """A whole number in [1, MAX_RECORDS] (argparse type)."""
    value = _count(text)
    if value > MAX_WARMUP_RECORDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WARMUP_RECORDS} (TF Serving's limit of "
                                         f"warmup records), got {text!r}")
    return value


def _model_choice(text: str) -> warmup_file.ModelChoice:
    try:
        return warmup_file.model_choice(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _http_url(text: str) -> str:
    """An http:// or https:// URL with a host (argparse type)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL with a host, got {text!r}")
    return text


def _rate(text: str) -> float:
    try:
        return replay.rate_per_second(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _check(settings: Settings, config: Config) -> int:
    """Print what the manifests declare and import every local model's code (in its built
    environment when there is one), as `gateway serve` would; 1 when a model does not load."""
    for model in config.models.values():
        where = model.backend.target if model.backend else f"folder {model.folder}"
        print(f"model {_label(model)} ({where}) "
              f"inputs={list(model.signature.inputs)} outputs={list(model.signature.outputs)}")
        if model.request_log is not None:
            print(f"  {request_log_text(model.request_log)}")
    for app in config.applications.values():
        stages = " -> ".join("|".join(str(v.model) for v in stage.variants) for stage in app.stages)
        print(f"application {app.name}: {stages}")
        for line in plan_lines(manifest_plan(app, config.models)):
            print(f"  {line}")
        if app.request_log is not None:
            print(f"  {request_log_text(app.request_log)}")
    warmups, errors = check_warmups(config.models.values(), _label)
    for line in warmups:
        print(line)
    errors += [error for model in config.local_models()
               if (error := check_model_code(interpreter_for(settings.envs_dir, model), model,
                                             settings.runtime_start_timeout_s)) is not None]
    for error in errors:
        print(f"gateway check: {error}", file=sys.stderr)
    if errors:
        print(f"gateway check: {len(errors)} model(s) do not load or warm up", file=sys.stderr)
        return 1
    print("configuration is valid")
    return 0


NOT_COMPARED = 4  # `gateway check --url`: nothing breaking found, but something could not be compared


def _compare(config: Config, url: str, api_key: str | None, timeout: float) -> int:
    """Print what swapping the gateway at `url` to `config` would change; 3 when a change
    breaks callers, 4 when none does but some could not be compared (an application the API
    key may not see, a contract neither side knows), 2 when the gateway does not answer its plans."""
    address = f"{url.rstrip('/')}/gateway/applications"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    listed = _plans_answer(address, headers, timeout)
    if isinstance(listed, int):
        return listed
    plans = {name: manifest_plan(app, config.models) for name, app in config.applications.items()}
    hidden = []
    try:
        running = {plan.application: plan for plan in map(plan_from_json, listed["applications"])}
        for name in sorted(plans.keys() - running.keys()):  # added, or one the key may not see
            where = f"{address}/{quote(name, safe='')}"
            one = _plans_answer(where, headers, timeout, missing=(403, 404))
            if isinstance(one, int):
                return one
            if "error" not in one:
                running[name] = plan_from_json(one)
            elif one["error"]["code"] == "permission_denied":
                hidden.append(name)
                del plans[name]
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # not a gateway's plans
        print(f"gateway check: {address} did not answer application plans: {error!r}", file=sys.stderr)
        return 2
    changes = diff(running, with_running_contracts(running, plans))
    changes.extend(not_compared(name, "the API key may not see it") for name in hidden)
    changes.sort(key=lambda change: change.application)  # stable: each application's order kept
    print(f"changes against {url}:" if changes else f"no changes against {url}")
    for change in changes:
        print(f"  {change}")
    if api_key:
        print("note: only the applications the API key may call are listed: a removed one it may not call is "
              "not seen")
    breaking = sum(change.breaking for change in changes)
    if breaking:
        print(f"gateway check: {breaking} breaking change(s) against {url}", file=sys.stderr)
        return 3
    uncompared = sum(not change.compared for change in changes)
    if uncompared:
        print(f"gateway check: {uncompared} thing(s) not compared against {url}", file=sys.stderr)
        return NOT_COMPARED
    return 0


def _plans_answer(address: str, headers: dict[str, str], timeout: float,
                  missing: tuple[int, ...] = ()) -> dict[str, Any] | int:
    """The JSON object `address` answers (also for a status in `missing`: its error), else 2
    once said why."""
    try:
        response = httpx.get(address, headers=headers, timeout=timeout)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        print(f"gateway check: {address} does not answer: {error or type(error).__name__}", file=sys.stderr)
        return 2
    if response.status_code != 200 and response.status_code not in missing:
        print(f"gateway check: {address} answered {response.status_code}: {response.text[:500]}", file=sys.stderr)
        return 2
    try:
        answer = response.json()
    except ValueError as error:
        print(f"gateway check: {address} did not answer application plans: {error!r}", file=sys.stderr)
        return 2
    if not isinstance(answer, dict):
        print(f"gateway check: {address} did not answer application plans: {answer!r:.200}", file=sys.stderr)
        return 2
    return answer


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
