"""`gateway list`: the applications and models of a running gateway (`GET /gateway/applications`,
`GET /gateway/models`) as two aligned tables, or as JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from gateway.cli import exits
from gateway.cli.common import Commands, add_client_flags, client_url, command
from gateway.client import Application, Client, ModelVersion, Variant
from gateway.client.calls import FLOATING_VERSION
from gateway.client.errors import describe
from gateway.errors import GatewayError

EPILOG = f"""examples:
  gateway list
  gateway list --url http://127.0.0.1:8000 --json

{exits.EPILOG}"""


def add_parser(commands: Commands) -> None:
    listing = command(commands, "list", "list the applications and models of a running gateway",
                      "Print the applications the API key may call (each stage's models, with the share of "
                      "each live variant and the shadows; READY no while its contracts do not fit, the "
                      "problems below the table) and the model versions (labels, kind, state, where the "
                      "contract comes from, the applications that use it).", EPILOG)
    listing.add_argument("--json", action="store_true",
                         help="print {\"applications\": [...], \"models\": [...]} as the gateway answers them")
    add_client_flags(listing, timeout_s=10.0)
    listing.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        with Client(client_url(args), api_key=args.api_key, timeout=args.timeout, deadline=args.timeout) as client:
            applications = client.applications()
            models = client.models()
    except GatewayError as error:
        print(f"gateway list: {describe(error)}", file=sys.stderr)
        return exits.exit_status(error)
    if args.json:
        print(orjson.dumps({"applications": [a.json for a in applications],
                            "models": [m.json for m in models]}).decode())
        return exits.OK
    for line in lines(applications, models):
        print(line)
    return exits.OK


def lines(applications: Sequence[Application], models: Sequence[ModelVersion]) -> list[str]:
    """The two tables, then each application's problems."""
    apps = [("APPLICATION", "READY", "STAGES")] + [
        (app.name, "yes" if app.ready else "no",
         " -> ".join(" | ".join(_variant(v, len(stage.variants)) for v in stage.variants) for stage in app.stages))
        for app in applications]
    versions = [("MODEL", "VERSION", "LABELS", "KIND", "STATE", "CONTRACT", "APPLICATIONS")] + [
        (m.name, _version(m), _labels(m), m.kind, m.state, m.contract, ",".join(m.applications) or "-")
        for m in models]
    out = [*_table(apps), "", *_table(versions)]
    problems = [f"{app.name}: {problem}" for app in applications for problem in app.problems]
    errors = [f"{m.name}:{_version(m)}: {m.error}" for m in models if m.error]
    if problems or errors:
        out += [""] + [f"problem: {line}" for line in problems + errors]
    return out


def _version(model: ModelVersion) -> str:
    """`*` for a TF Serving model that fronts every version (listed as version 0)."""
    return "*" if model.version == FLOATING_VERSION else str(model.version)


def _labels(model: ModelVersion) -> str:
    """The labels naming this version; for one fronting every version, each label with its version."""
    if model.version == FLOATING_VERSION:
        return ",".join(f"{label}={version}" for label, version in sorted(model.labels.items())) or "-"
    return ",".join(sorted(label for label, version in model.labels.items() if version == model.version)) or "-"


def _variant(variant: Variant, variants: int) -> str:
    if variant.shadow:
        sample = "" if variant.sample in (None, 1.0) else f" {variant.sample:.0%}"
        return f"{variant.model} (shadow{sample})"
    if variants > 1 and variant.share is not None:
        return f"{variant.model} {variant.share:g}%"
    return variant.model


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
