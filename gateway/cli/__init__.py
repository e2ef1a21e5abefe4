"""The `gateway` command (also `python -m gateway`): one module per sub-command, each adding its
parser and the function that runs it. `serve` is gateway/serving/, `logs` gateway/requestlog/,
`predict` and `list` use the Python client (gateway/client/), `upload`, `apply` and `delete` its
admin calls (gateway/client/admin.py)."""

from __future__ import annotations

import argparse
import sys

from gateway import __version__
from gateway.cli import apply, build, check, delete, listing, logs, openapi, predict, serve, upload

COMMANDS = (serve, check, build, logs, predict, listing, openapi, upload, apply, delete)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gateway` command."""
    parser = parser_of_commands()
    words = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(words)
    if extra:  # positionals after an option (`predict APP --pretty -`): the command's parser reads them mixed
        args = _parse_mixed(_command_parser(parser, args.command), words[1:])
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


def _command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps the sub-parsers only there
        if isinstance(action, argparse._SubParsersAction):
            command: argparse.ArgumentParser = action.choices[name]
            return command
    raise LookupError(name)


def _parse_mixed(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """`words` (after the command's name) by the command's parser: options and positionals in any
    order where it allows (not with sub-commands of its own), else errors in its own usage line."""
    try:
        return parser.parse_intermixed_args(words)
    except TypeError:  # argparse refuses mixing for parsers with sub-parsers (`logs`)
        return parser.parse_args(words)
