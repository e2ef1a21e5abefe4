"""The channel pool: one grpc.aio channel per backend target, shared by every request."""

from __future__ import annotations

import grpc

CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.lb_policy_name", "round_robin"),
    # Reconnect quickly to a backend that restarts (gRPC's default waits up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


class ChannelPool:
    """Opens channels on first use and closes them all at shutdown."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, target: str) -> grpc.aio.Channel:
        """The channel to `target` (`host:port` or `dns:///name:port`)."""
        channel = self._channels.get(target)
        if channel is None:
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            self._channels[target] = channel
        return channel

    @property
    def targets(self) -> list[str]:
        """Targets with an open channel."""
        return list(self._channels)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel; calls still running get `grace` seconds."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace)
