"""The channel pool: one grpc.aio channel per backend target, shared by every request, one
local-wire channel per embedded runtime, and one circuit breaker per target."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

from gateway.backends.local import LocalChannel
from gateway.backends.resilience import CircuitBreaker, CircuitState, retry_service_config
from gateway.manifests import TLSSpec

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    # Reconnect quickly to a backend that restarts (gRPC's default waits up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def _credentials(tls: TLSSpec) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(tls.ca), read(tls.key), read(tls.cert))


class ChannelPool:
    """Opens channels on first use and closes them at shutdown (or when a reload drops them).
    Its circuit breakers run on `clock`."""

    def __init__(self, retry_attempts: int = 3, circuit_failures: int = 5, circuit_cooldown_s: float = 5.0,
                 on_circuit_change: Callable[[str, CircuitState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._channels: dict[tuple[str, TLSSpec | None], grpc.aio.Channel] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._locals: dict[str, LocalChannel] = {}
        self._options = (*CHANNEL_OPTIONS, ("grpc.service_config", retry_service_config(retry_attempts)))
        self._circuit = (circuit_failures, circuit_cooldown_s, on_circuit_change)
        self.clock = clock  # the circuit breakers' (tests move a manual one)

    def channel(self, target: str, tls: TLSSpec | None = None) -> grpc.aio.Channel:
        """The channel to `target` (`host:port` or `dns:///name:port`), over TLS when given."""
        key = (target, tls)
        channel = self._channels.get(key)
        if channel is None:
            if tls is None:
                channel = grpc.aio.insecure_channel(target, options=self._options)
            else:
                options = self._options
                if tls.server_name:
                    options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
                channel = grpc.aio.secure_channel(target, _credentials(tls), options=options)
            self._channels[key] = channel
        return channel

    def local(self, target: str, path: str) -> LocalChannel:
        """The local-wire channel to the embedded runtime at `target`, on its Unix socket `path`."""
        channel = self._locals.get(target)
        if channel is None or channel.path != path:
            if channel is not None:
                channel.close()
            channel = self._locals[target] = LocalChannel(path, target)
        return channel

    def breaker(self, target: str) -> CircuitBreaker:
        """The circuit breaker of `target`, shared by every model served there."""
        breaker = self._breakers.get(target)
        if breaker is None:
            failures, cooldown, on_change = self._circuit
            breaker = self._breakers[target] = CircuitBreaker(target, failures, cooldown, on_change, self.clock)
        return breaker

    @property
    def targets(self) -> list[str]:
        """Targets with an open channel."""
        return [target for target, _ in self._channels]

    async def close_except(self, keep: Iterable[str], grace: float | None = None) -> None:
        """Close the channels to targets not in `keep` (after a reload), letting calls finish."""
        kept = set(keep)
        dropped = [key for key in self._channels if key[0] not in kept]
        channels = [self._channels.pop(key) for key in dropped]
        for target in [t for t in self._breakers if t not in kept]:
            del self._breakers[target]
        for target in [t for t in self._locals if t not in kept]:
            self._locals.pop(target).close()
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get `grace` seconds."""
        await self.close_except((), grace)
