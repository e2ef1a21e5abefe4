"""`gateway delete application NAME` and `gateway delete model NAME:VERSION`: remove one from a
running gateway (a model version is refused, 409, while an application uses it)."""

from __future__ import annotations

import argparse
import sys

from gateway.cli.common import (
    ADMIN_EXITS,
    Commands,
    add_admin_flags,
    admin_exit_status,
    admin_token,
    client_url,
    command,
)
from gateway.cli.exits import OK, USAGE
from gateway.client.admin import AdminClient
from gateway.client.errors import describe
from gateway.errors import GatewayError

KINDS = ("application", "model")
EPILOG = f"""examples:
  gateway delete application increment_app
  gateway delete model increment_model:2 --url http://127.0.0.1:8000 --token "$ADMIN_TOKEN"

{ADMIN_EXITS}"""


def add_parser(commands: Commands) -> None:
    delete = command(commands, "delete", "remove an application or a model version from a running gateway",
                     "Remove application NAME, or model version NAME:VERSION with its folder, in one atomic change "
                     "with a hot reload. A model version is refused (409, naming the applications) while an "
                     "application uses it, also as the highest version of a model it names without a version.",
                     EPILOG)
    delete.add_argument("kind", choices=KINDS, help="what to remove")
    delete.add_argument("name", metavar="NAME", help="the application's NAME, or the model's NAME:VERSION")
    add_admin_flags(delete)
    delete.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    version = None
    if args.kind == "model":
        name, _, number = args.name.rpartition(":")
        if not name or not number.isdigit():
            print(f"gateway delete: a model version is NAME:VERSION (a whole number), got {args.name!r}",
                  file=sys.stderr)
            return USAGE
        version = int(number)
    try:
        with AdminClient(client_url(args), admin_token(args), args.timeout) as client:
            answer = client.delete_application(args.name) if version is None else client.delete_model(name, version)
    except GatewayError as error:
        print(f"gateway delete: {describe(error)}", file=sys.stderr)
        return admin_exit_status(error)
    label = answer.get("name", args.name if version is None else name)
    if answer.get("version") is not None:
        label = f"{label}:{answer['version']}"
    print(f"deleted {answer.get('deleted', args.kind)} {label}")
    return OK
