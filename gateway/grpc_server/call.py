"""What a handler of the gRPC server is given and what it is: one call's metadata, caller and
deadline, and the handlers of unary and server-streaming methods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

# Headers that carry the protocol, not the caller's metadata (grpc's reserved ones).
RESERVED_HEADERS = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                              "grpc-message-type"})


class ServerCall:
    """One call: its method path, the caller's metadata (lower-case names; `-bin` values as sent,
    base64), the caller's address as grpc writes it (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`),
    its deadline (event-loop time, None without `grpc-timeout`) and the trailing metadata the
    handler adds to its answer."""

    __slots__ = ("deadline", "metadata", "path", "peer", "trailing_metadata")

    def __init__(self, path: str, metadata: list[tuple[str, str]], peer: str, deadline: float | None) -> None:
        self.path = path
        self.metadata = metadata
        self.peer = peer
        self.deadline = deadline
        self.trailing_metadata: list[tuple[str, str]] = []

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline (negative once passed), None without one."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()


UnaryHandler = Callable[[bytes, ServerCall], Awaitable[bytes]]
StreamHandler = Callable[[bytes, ServerCall], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class RpcHandler:
    """A method's handler: serialized request in, serialized answer (or answers) out; raising
    `RpcStatus` ends the call with that status, any other exception with INTERNAL."""

    unary: UnaryHandler | None = None
    stream: StreamHandler | None = None
