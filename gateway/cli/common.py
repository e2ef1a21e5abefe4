"""What the commands share: argument types, the flags of the commands that call a running
gateway, reading a config directory, and the help layout (description, example, exit codes)."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Protocol

from gateway.cli.exits import USAGE, exit_status
from gateway.client import DEFAULT_URL
from gateway.client.admin import DEFAULT_ADMIN_TIMEOUT_S
from gateway.client.calls import checked_url
from gateway.errors import ConfigError, GatewayError, InvalidManifest
from gateway.manifests import Config, load_config, with_auth_file
from gateway.settings import Settings
from gateway.store.journal import ConfigStore
from modelfolder.arguments import seconds as seconds


class Commands(Protocol):
    """argparse's sub-parsers action (what `add_subparsers` returns)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def command(commands: Commands, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A sub-command whose --help shows `description` and `epilog` (examples, exit codes) as written."""
    return commands.add_parser(name, help=summary, description=textwrap.fill(description, 100), epilog=epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config"), help="config directory (default: ./config)")


URL_HELP = f"the gateway (default: $GATEWAY_URL, else {DEFAULT_URL})"
API_KEY_HELP = "API key, sent as Authorization: Bearer (default: $GATEWAY_API_KEY)"
ADMIN_HELP = ("admin token, sent as Authorization: Bearer (default: $GATEWAY_ADMIN_TOKEN; without one a "
              "gateway with no admin token answers loopback callers only)")


def add_client_flags(parser: argparse.ArgumentParser, timeout_s: float = 30.0) -> None:
    """`--url`, `--api-key`, `--timeout`: the flags of every command that calls a running gateway."""
    parser.add_argument("--url", type=http_url, default=None, help=URL_HELP)
    parser.add_argument("--api-key", metavar="KEY", default=None, help=API_KEY_HELP)
    parser.add_argument("--timeout", type=seconds, default=timeout_s, metavar="S",
                        help=f"seconds for the whole call, retries of 429/503 included (default {timeout_s:g})")


def add_admin_flags(parser: argparse.ArgumentParser, timeout_s: float = DEFAULT_ADMIN_TIMEOUT_S) -> None:
    """`--url`, `--token`, `--timeout`: the flags of the commands that change a running gateway."""
    parser.add_argument("--url", type=http_url, default=None, help=URL_HELP)
    parser.add_argument("--token", metavar="TOKEN", default=None, help=ADMIN_HELP)
    parser.add_argument("--timeout", type=seconds, default=timeout_s, metavar="S",
                        help=f"seconds the gateway may stay silent before the call fails (default {timeout_s:g})")


def admin_token(args: argparse.Namespace) -> str | None:
    """`--token`, else `GATEWAY_ADMIN_TOKEN`, else none."""
    return str(args.token) if args.token is not None else os.environ.get("GATEWAY_ADMIN_TOKEN") or None


def client_url(args: argparse.Namespace) -> str:
    """`--url`, else `GATEWAY_URL` (checked as `--url` is: exit 2 with the reason), else the default."""
    if args.url:
        return str(args.url)
    url = os.environ.get("GATEWAY_URL")
    if not url:
        return DEFAULT_URL
    try:
        return checked_url(url)
    except ValueError as error:
        print(f"gateway {args.command}: GATEWAY_URL {error}", file=sys.stderr)
        raise SystemExit(2) from None


def client_api_key(args: argparse.Namespace) -> str | None:
    """`--api-key`, else `GATEWAY_API_KEY`, else none."""
    return str(args.api_key) if args.api_key is not None else os.environ.get("GATEWAY_API_KEY") or None


def load(args: argparse.Namespace, overrides: dict[str, Any] | None = None,
         prog: str = "gateway") -> tuple[Config, Settings] | int:
    """The config directory `--config` and its settings, or 2 once the error (file:line) is said."""
    try:
        ConfigStore(args.config).recover()  # a change an earlier gateway committed is finished first
        config = load_config(args.config)
        settings = with_auth_file(Settings.load(args.config, config.gateway.values, overrides=overrides or {}))
    except ConfigError as error:
        print(f"{prog}: invalid configuration: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # finishing an interrupted change failed (permissions, a full disk)
        print(f"{prog}: cannot finish the change an earlier gateway made to {args.config}: {error}", file=sys.stderr)
        return 2
    return config, settings


def count(text: str) -> int:
    """A positive whole number (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def http_url(text: str) -> str:
    """An http:// or https:// URL with a host (argparse type)."""
    try:
        return checked_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


ADMIN_EXITS = """exit status: 0 done, 2 bad usage, or an invalid model folder or manifest (found before
sending, or the gateway's 422 invalid_manifest), 3 the gateway refused the change (4xx: 409 a version
in use or a read-only config directory, 413 too large, 422 a build or a model start that failed),
4 not found, 5 no or a wrong admin token (401), or not a loopback caller of a gateway without one
(403), 6 busy (429, 503), 7 the gateway failed (5xx), 8 the gateway could not be reached or stayed
silent past --timeout, 9 the answer was not a gateway's (a wrong --url, a proxy)"""


def admin_exit_status(error: GatewayError) -> int:
    """The exit status of a failed admin call: an invalid manifest is a usage error, as in `gateway check`."""
    if error.code == InvalidManifest.code:  # by code: a 422 of another code (build_failed) maps to the class too
        return USAGE
    return exit_status(error)
