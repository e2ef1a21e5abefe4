"""`gateway openapi`: the OpenAPI document of a config directory, offline (no runtime started,
no backend asked), for CI pipelines that generate clients or configure API gateways."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from gateway.cli.common import Commands, add_config_flag, command, load
from gateway.openapi import document_for_config, to_openapi_30, to_yaml

EPILOG = """examples:
  gateway openapi --config config/ --out openapi.json
  gateway openapi --config config/ --format yaml --openapi 3.0 > openapi-3.0.yaml

exit status: 0 written, 2 an invalid configuration (file:line, as `gateway check` says it), a bad
option or a file that cannot be written"""


def add_parser(commands: Commands) -> None:
    openapi = command(commands, "openapi", "write the OpenAPI document of a config (offline)",
                      "Write the OpenAPI document the gateway would serve at /openapi.json for the config "
                      "directory, from its manifests only: a remote model whose contract is not declared gets "
                      "a generic schema that says so (the running gateway's /openapi.json has the discovered "
                      "one). Written to --out, or stdout.", EPILOG)
    add_config_flag(openapi)
    openapi.add_argument("--out", metavar="FILE", default="-", help="the file to write (default -: stdout)")
    openapi.add_argument("--format", choices=["json", "yaml"], default=None,
                         help="json or yaml (default: from --out's suffix .yaml/.yml, else json)")
    openapi.add_argument("--openapi", choices=["3.1", "3.0"], default="3.1",
                         help="the OpenAPI version (default 3.1; 3.0 for tools that stop there)")
    openapi.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    loaded = load(args, prog="gateway openapi")
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    document = document_for_config(config, settings)
    if args.openapi == "3.0":
        document = to_openapi_30(document)
    suffix = Path(args.out).suffix.lower() if args.out != "-" else ""
    as_yaml = args.format == "yaml" or (args.format is None and suffix in (".yaml", ".yml"))
    text = to_yaml(document) if as_yaml else orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"gateway openapi: cannot write {args.out}: {error}", file=sys.stderr)
        return 2
    return 0
