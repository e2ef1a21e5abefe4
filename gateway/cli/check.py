"""`gateway check`: validate the manifests, import each local model's code, print each
application's plan; with `--url`, what a reload of the running gateway to this config would change."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

import httpx

from gateway.build import check_model_code, interpreter_for
from gateway.cli.common import Commands, add_config_flag, client_api_key, client_url, command, load, seconds
from gateway.client import DEFAULT_URL
from gateway.manifests import (
    Config,
    ModelManifest,
    diff,
    manifest_plan,
    not_compared,
    plan_from_json,
    plan_lines,
    with_running_contracts,
)
from gateway.manifests.request_log_kind import request_log_text
from gateway.settings import Settings
from gateway.warmup import check_warmups

DESCRIPTION = ("Validate the manifests, import each local model's code and print each application's "
               "plan. With --url, also compare it with the plans of a running gateway and print what "
               "a reload would change.")
EPILOG = """examples:
  gateway check --config config/
  gateway check --config config/ --url http://127.0.0.1:8000

exit status: 0 valid (and no breaking change), 1 a model does not load, 2 an invalid manifest or
a gateway that does not answer, 3 breaking changes (an application or input removed, an input
added, an output removed, a dtype changed, a shape that no longer fits), 4 nothing breaking but
something not compared (an application the API key may not see, a contract only discovered when
served)"""


def add_parser(commands: Commands) -> None:
    check = command(commands, "check", "validate the manifests and print what they declare", DESCRIPTION, EPILOG)
    add_config_flag(check)
    check.add_argument("--url", nargs="?", const="", default=None,
                       help=f"compare the plans with a running gateway: this one, or with --url alone "
                            f"$GATEWAY_URL, else {DEFAULT_URL}")
    check.add_argument("--api-key", metavar="KEY", help="the API key for --url when the gateway has keys (only the "
                       "applications it may call are compared; default: $GATEWAY_API_KEY)")
    check.add_argument("--timeout", type=seconds, default=10.0, help="seconds to wait for --url (default 10)")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.api_key is not None and args.url is None:
        args.parser.error("check: --api-key is for --url (the API key of the running gateway)")
    loaded = load(args)
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    status = _check(settings, config)
    if status == 0 and args.url is not None:
        return _compare(config, args.url or client_url(args), client_api_key(args), args.timeout)
    return status


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
    for line in shared_name_warnings(config):
        print(f"gateway check: warning: {line}", file=sys.stderr)
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


def shared_name_warnings(config: Config) -> list[str]:
    """One line per application that shares its name with a model, or with the name a TF
    Serving backend serves a model as (what TF clients send, `-m Toy`): the REST routes tell
    them apart, gRPC's `model_spec.name` cannot (the application is served, the model is not)."""
    models = {name for name, _ in config.models}
    served = {model.backend.model_name: model.name for model in config.models.values()
              if model.backend is not None and model.backend.model_name not in models}
    lines = [f"application {name} and model {name} share a name: gRPC Predict with model_spec.name "
             f"{name!r} serves the application, never the model (GetModelStatus, GetModelMetadata, "
             "Classify and Regress name the model); rename one to call both over gRPC"
             for name in sorted(models & set(config.applications))]
    lines += [f"application {name} shares its name with the backend model {name} (served as model "
              f"{served[name]}): gRPC Predict with model_spec.name {name!r} serves the application, never "
              f"the model; rename the application for TF Serving clients that name the model {name!r}"
              for name in sorted(set(served) & set(config.applications))]
    return lines


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

