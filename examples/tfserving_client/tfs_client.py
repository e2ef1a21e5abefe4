"""What the example scripts share: the stubs generated from the upstream .proto files, the
command line every script takes (--host, --port, --api-key, --timeout) and the channel."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The stubs carry the upstream package names (tensorflow_serving.apis, tensorflow.core): import them
# as TF Serving's own Python package is imported.
sys.path.insert(0, str(Path(__file__).resolve().parent / "generated"))

import grpc

GATEWAY_GRPC_PORT = 8500  # the example config's listen.grpc_port (TF Serving's default gRPC port)


def parser(description: str) -> argparse.ArgumentParser:
    """A command line with the options every script takes."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--host", default="127.0.0.1", help="the gateway's host (default 127.0.0.1)")
    arguments.add_argument("--port", type=int, default=GATEWAY_GRPC_PORT,
                           help=f"the gateway's gRPC port (default {GATEWAY_GRPC_PORT})")
    arguments.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                           help="an API key, when the gateway lists keys (default: $GATEWAY_API_KEY)")
    arguments.add_argument("--timeout", type=float, default=10.0, help="the call's deadline in seconds")
    return arguments


def channel(options: argparse.Namespace) -> grpc.Channel:
    """An insecure channel to the gateway's gRPC port."""
    return grpc.insecure_channel(f"{options.host}:{options.port}")


def metadata(token: str | None, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """Call metadata: `authorization: Bearer <token>` (an API key, or the admin token) when given."""
    pairs = list(extra)
    if token:
        pairs.append(("authorization", f"Bearer {token}"))
    return pairs


def fail(error: grpc.RpcError) -> int:
    """Print a failed call as `CODE: message` on stderr; the exit status 1."""
    print(f"{error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
    return 1
