"""`gateway predict`: send one request's inputs (JSON) to an application or model of a running
gateway and print the answer as JSON; the exit status says what failed (exits.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import orjson

from gateway.cli import exits
from gateway.cli.common import Commands, add_client_flags, client_url, command
from gateway.client import Client
from gateway.client.errors import describe
from gateway.errors import GatewayError

EPILOG = f"""examples:
  gateway predict increment_app --json '{{"number": [1]}}'
  echo '{{"number": [1]}}' | gateway predict increment_app -
  gateway predict --model increment_model:1 --file request.json --pretty

{exits.EPILOG}"""


def add_parser(commands: Commands) -> None:
    predict = command(commands, "predict", "send inputs to an application or model and print the answer",
                      "Send one request to APP (POST /gateway/applications/APP), or with --model to a model "
                      "(POST /gateway/models/NAME[/versions/V|/labels/L]), and print the outputs as one line of "
                      "JSON. The inputs are a JSON object {\"input\": value, ...} given with --json, read from --file, "
                      "or from stdin with -. A request refused before it ran (429, 503, see the Python client's "
                      "retries) is tried again, honouring Retry-After, within --timeout.", EPILOG)
    predict.add_argument("target", nargs="*", metavar="APP",
                         help="the application (none with --model); '-' reads the inputs from stdin")
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--json", metavar="TEXT", help="the inputs as a JSON object")
    source.add_argument("--file", metavar="F", help="a file holding the inputs as a JSON object")
    predict.add_argument("--model", metavar="NAME[:VERSION|@LABEL]",
                         help="call this model's route (at a version or label) instead of an application")
    predict.add_argument("--pretty", action="store_true", help="print the answer indented")
    add_client_flags(predict)
    predict.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        app, stdin = _target(args.target, args.model)
        inputs = _inputs(args.json, args.file, stdin)
        model = _model(args.model) if args.model else None
    except _Usage as error:
        print(f"gateway predict: {error}", file=sys.stderr)
        return exits.USAGE
    try:
        with Client(client_url(args), api_key=args.api_key, timeout=args.timeout, deadline=args.timeout) as client:
            if model is None:
                answer = client.predict(app, inputs, as_lists=True)
            else:
                answer = client.predict_model(model[0], inputs, version=model[1], label=model[2], as_lists=True)
    except GatewayError as error:
        print(f"gateway predict: {describe(error)}", file=sys.stderr)
        return exits.exit_status(error)
    if args.pretty:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print(orjson.dumps(answer).decode())
    return exits.OK


class _Usage(Exception):
    pass


def _target(words: list[str], model: str | None) -> tuple[str, bool]:
    """The application named and whether the inputs come from stdin."""
    stdin = bool(words) and words[-1] == "-"
    names = words[:-1] if stdin else words
    if model is not None:
        if names:
            raise _Usage(f"give an application or --model, not both (got {names[0]!r} and --model {model})")
        return "", stdin
    if len(names) != 1:
        raise _Usage("name one application (or a model with --model NAME[:VERSION|@LABEL])" if not names
                     else f"one application at a time, got {' '.join(names)}")
    return names[0], stdin


def _model(text: str) -> tuple[str, int | None, str | None]:
    """`NAME`, `NAME:VERSION` or `NAME@LABEL` as the name, version and label."""
    if "@" in text:
        name, _, label = text.partition("@")
        if name and label:
            return name, None, label
    else:
        name, _, version = text.partition(":")
        if name and (not version or version.isdigit()):
            return name, int(version) if version else None, None
    raise _Usage(f"--model takes NAME, NAME:VERSION (a whole number) or NAME@LABEL, got {text!r}")


def _inputs(text: str | None, path: str | None, stdin: bool) -> dict[str, Any]:
    if sum(given for given in (text is not None, path is not None, stdin)) != 1:
        raise _Usage("give the inputs with one of --json TEXT, --file F or - (stdin)")
    where = "--json"
    if path is not None:
        where = path
        try:
            with open(path, "rb") as file:
                text = file.read().decode()
        except (OSError, UnicodeDecodeError) as error:
            raise _Usage(f"cannot read {path}: {error}") from None
    elif stdin:
        where = "stdin"
        text = sys.stdin.read()
    try:
        inputs = json.loads(text or "")  # the stdlib's: it reads NaN and Infinity as the gateway does
    except json.JSONDecodeError as error:
        raise _Usage(f"the inputs in {where} are not JSON: {error}") from None
    if not isinstance(inputs, dict):
        raise _Usage(f'the inputs in {where} must be a JSON object {{"input": value, ...}}')
    return inputs
