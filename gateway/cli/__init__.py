"""The `gateway` command (also `python -m gateway`): one module per sub-command, each adding its
parser and the function that runs it. `serve` is gateway/serving/, `logs` gateway/requestlog/,
`predict` and `list` use the Python client (gateway/client/)."""

from __future__ import annotations

import argparse

from gateway import __version__
from gateway.cli import build, check, listing, logs, openapi, predict, serve

COMMANDS = (serve, check, build, logs, predict, listing, openapi)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` command."""
    parser = parser_of_commands()
    args = parser.parse_args(argv)
    args.parser = parser
    status: int = args.run(args)
    return status


def parser_of_commands() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="HTTP/JSON inference gateway.",
        epilog="`gateway COMMAND --help` describes each command, with examples and its exit status.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return parser
