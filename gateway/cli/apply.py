"""`gateway apply -f FILE|-`: send YAML documents (kinds Application and remote Model) to a running
gateway, which validates them as at start-up and applies them in one atomic switch with a hot
reload; `--dry-run` prints what would change, breaking changes marked, and changes nothing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from gateway.cli.common import (
    ADMIN_EXITS,
    Commands,
    add_admin_flags,
    admin_exit_status,
    admin_token,
    client_url,
    command,
)
from gateway.cli.exits import OK, REFUSED, USAGE
from gateway.client.admin import AdminClient
from gateway.client.errors import describe
from gateway.errors import GatewayError

STDIN_NAME = "<stdin>"
EPILOG = f"""examples:
  gateway apply -f increment_app.yaml
  gateway apply -f increment_app.yaml --dry-run
  gateway apply -f - <<EOF
  kind: Application
  name: increment_app
  singular:
    model: increment_model:1
  EOF

{ADMIN_EXITS};
with --dry-run, 3 also when a change would break callers (an application or input removed, an input
added, an output removed, a dtype changed, a shape that no longer fits)"""


def add_parser(commands: Commands) -> None:
    apply = command(commands, "apply", "apply application and model manifests to a running gateway",
                    "Send the YAML documents of FILE (- reads stdin), separated by ---, of kinds Application and "
                    "Model (a remote model: backend:), to the gateway. It validates them as it does at start-up "
                    "(errors name FILE:line and the field), refuses an application naming a model version it does "
                    "not have, and applies them all at once with a hot reload, or none. Prints each document's "
                    "action and what changed; with --dry-run what would change, and each application's plan.",
                    EPILOG)
    apply.add_argument("-f", "--filename", required=True, metavar="FILE",
                       help="the YAML file to apply, or - for stdin")
    apply.add_argument("--dry-run", action="store_true",
                       help="validate and print the plan and the changes (BREAKING marked); change nothing")
    add_admin_flags(apply)
    apply.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        name, text = read_documents(args.filename)
    except _Unreadable as error:
        print(f"gateway apply: {error}", file=sys.stderr)
        return USAGE
    try:
        with AdminClient(client_url(args), admin_token(args), args.timeout) as client:
            answer = client.apply(name, text, dry_run=args.dry_run)
    except GatewayError as error:
        print(f"gateway apply: {describe(error)}", file=sys.stderr)
        return admin_exit_status(error)
    for line in lines(answer):
        print(line)
    breaking = int(answer.get("breaking") or 0)
    if args.dry_run and breaking:
        print(f"gateway apply: {breaking} breaking change(s): nothing was applied", file=sys.stderr)
        return REFUSED
    return OK


class _Unreadable(Exception):
    pass


def read_documents(path: str) -> tuple[str, str]:
    """(the name errors show, the text) of FILE, or of stdin for `-`."""
    if path == "-":
        return STDIN_NAME, sys.stdin.read()
    try:
        with open(path, "rb") as file:
            return path, file.read().decode()
    except OSError as error:
        raise _Unreadable(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _Unreadable(f"{path} is not UTF-8 text: {error}") from None


def lines(answer: Mapping[str, Any]) -> list[str]:
    """The documents' actions, each application's plan (dry run), the changes and a last line."""
    dry_run = bool(answer.get("dry_run"))
    out = [_document(document, dry_run) for document in answer.get("documents") or ()]
    if dry_run:
        for app, plan in sorted((answer.get("plans") or {}).items()):
            out.append(f"plan of application {app}:")
            out.extend(f"  {line}" for line in plan)
    changes = list(answer.get("changes") or ())
    if changes:
        out.append("changes:")
        out.extend(f"  {change}" for change in changes)
    if dry_run:
        out.append("dry run: nothing was applied")
    elif answer.get("applied"):
        out.append("applied")
    else:
        out.append("nothing to apply: the gateway already serves these documents")
    return out


def _document(document: Mapping[str, Any], dry_run: bool) -> str:
    """`application increment_app created`, `model toy:2 would be updated`."""
    label = str(document.get("name"))
    if document.get("version") is not None:
        label += f":{document['version']}"
    action = str(document.get("action"))
    if dry_run and action != "unchanged":
        action = f"would be {action}"
    return f"{str(document.get('kind', '')).lower()} {label} {action}"
