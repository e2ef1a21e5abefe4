"""The channel pool: one grpc.aio channel per backend target, shared by every request, one
local-wire channel per embedded runtime, and one circuit breaker per target.

gRPC resolves a `dns:` target when its channel starts and again only when a connection breaks
(grpc/grpc#12295: no periodic re-resolution, by design), so a long-lived channel never sees the
pods a headless Service gains. With `dns_refresh_s` the pool builds a fresh channel for each
`dns:` target that often: gRPC resolves it anew, and its global subchannel pool hands the fresh
channel the connections the old one has to the addresses still there (same address and channel
arguments: the same subchannel), so only added addresses are connected to. Once the fresh channel
is READY it replaces the old one in the target's `PooledChannel`, and the old one is closed
gracefully: its calls finish, and the connections to addresses gone close with it. A resolution
that fails or returns nothing leaves the channel as it was.

TLS targets are not refreshed: grpcio makes new core credentials for every channel it opens
(cygrpc's `SSLChannelCredentials.c()`), and the subchannel pool tells credentials apart by
identity, so a fresh TLS channel would reconnect to every address each period.

With `client="inloop"` (the `backend_client` setting) the pool also holds one in-loop channel
(gateway.grpc_client) per plaintext `host:port` target, which backends call instead of grpcio;
a target it cannot reach (TLS, `dns:`, `unix:`, a list of addresses) keeps its grpcio channel,
said once in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from gateway.backends.local import LocalChannel
from gateway.backends.resilience import CircuitBreaker, CircuitState, retry_service_config
from gateway.grpc_client import InloopChannel, parse_target
from gateway.manifests import TLSSpec
from gateway.settings import BackendClient
from protos.services import Method

log = logging.getLogger("gateway.backends")

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
# How long a refresh's fresh channel may take to be READY before the old one is kept.
REFRESH_READY_TIMEOUT_S = 5.0

Key = tuple[str, TLSSpec | None]


def _credentials(tls: TLSSpec) -> grpc.ChannelCredentials:
    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(read(tls.ca), read(tls.key), read(tls.cert))


def refreshable(target: str, tls: TLSSpec | None = None) -> bool:
    """Whether the pool re-resolves `target` (`dns:///name:port`, `dns://server/name:port`,
    without TLS)."""
    return target.startswith("dns:") and tls is None


class PooledChannel:
    """A target's channel as the pool has it now, and a callable per method on it: what
    backends keep (never the grpc channel itself), so a refresh reaches their next call."""

    def __init__(self, target: str, channel: grpc.aio.Channel) -> None:
        self.target = target
        self.channel = channel
        self._stubs: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    def stub(self, method: Method[Any, Any]) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        """The callable of `method` on the current channel (made on first use)."""
        stub = self._stubs.get(method.path)
        if stub is None:
            stub = self._stubs[method.path] = self.channel.unary_unary(
                method.path, request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString)
        return stub

    def swap(self, channel: grpc.aio.Channel) -> grpc.aio.Channel:
        """Calls from now on go over `channel`; returns the one they went over."""
        old, self.channel, self._stubs = self.channel, channel, {}
        return old


class ChannelPool:
    """Opens channels on first use and closes them at shutdown (or when a reload drops them).
    Its circuit breakers run on `clock`. Once `start()`ed, every `dns_refresh_s` it re-resolves
    its `dns:` targets (None: never); channels it replaces get `close_grace_s` for their calls.
    `client`: which gRPC client backends call with (`inloop()` says where the in-loop one goes)."""

    def __init__(self, retry_attempts: int = 3, circuit_failures: int = 5, circuit_cooldown_s: float = 5.0,
                 on_circuit_change: Callable[[str, CircuitState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, dns_refresh_s: float | None = None,
                 close_grace_s: float = 30.0, *, client: BackendClient = "grpcio") -> None:
        self._channels: dict[Key, PooledChannel] = {}
        self._inloop: dict[str, InloopChannel] = {}
        self._retry_attempts = retry_attempts
        self.client = client
        self._breakers: dict[str, CircuitBreaker] = {}
        self._locals: dict[str, LocalChannel] = {}
        self._options = (*CHANNEL_OPTIONS, ("grpc.service_config", retry_service_config(retry_attempts)))
        self._circuit = (circuit_failures, circuit_cooldown_s, on_circuit_change)
        self.clock = clock  # the circuit breakers' (tests move a manual one)
        self.dns_refresh_s = dns_refresh_s
        self.close_grace_s = close_grace_s
        self._refresher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # closing replaced channels, after their calls
        self._unresolved: set[Key] = set()  # targets whose last refresh failed (said once)

    def pooled(self, target: str, tls: TLSSpec | None = None) -> PooledChannel:
        """The pooled channel to `target` (`host:port` or `dns:///name:port`), over TLS when given."""
        key = (target, tls)
        pooled = self._channels.get(key)
        if pooled is None:
            pooled = self._channels[key] = PooledChannel(target, self._open(key))
            if self.dns_refresh_s is not None and refreshable(target) and not refreshable(target, tls):
                log.warning("backend %s: a dns: target over TLS is not re-resolved every dns_refresh_s (a fresh TLS "
                            "channel cannot reuse the connections); gRPC re-resolves it when a connection breaks",
                            target)
        return pooled

    def channel(self, target: str, tls: TLSSpec | None = None) -> grpc.aio.Channel:
        """The grpc channel to `target` as it is now (a refresh may replace it: backends keep
        `pooled(target, tls)`)."""
        return self.pooled(target, tls).channel

    def _open(self, key: Key) -> grpc.aio.Channel:
        target, tls = key
        if tls is None:
            return grpc.aio.insecure_channel(target, options=self._options)
        options = self._options
        if tls.server_name:
            options = (*options, ("grpc.ssl_target_name_override", tls.server_name))
        return grpc.aio.secure_channel(target, _credentials(tls), options=options)

    def inloop(self, target: str, tls: TLSSpec | None = None) -> InloopChannel | None:
        """The in-loop channel to `target` (opened on first use) when the pool's client is the
        in-loop one and it reaches `target`; None when calls go over grpcio (`pooled`)."""
        if self.client != "inloop":
            return None
        channel = self._inloop.get(target)
        if channel is not None and tls is None:
            return channel
        unreachable = _inloop_unreachable(target, tls)
        if unreachable is not None:
            if (target, tls) not in self._channels:  # said once: its grpcio channel is opened next
                log.info("backend %s: backend_client inloop %s; this target is called over grpcio",
                            target, unreachable)
            return None
        channel = self._inloop[target] = InloopChannel(target, self._retry_attempts)
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
        """Targets with an open channel (grpcio or in-loop)."""
        grpcio = [target for target, _ in self._channels]
        return [*grpcio, *(target for target in self._inloop if target not in grpcio)]

    # ------------------------------------------------------------ DNS refresh

    def start(self) -> None:
        """Re-resolve the `dns:` targets every `dns_refresh_s` from now on (in this event loop)."""
        if self.dns_refresh_s is not None and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever(self.dns_refresh_s))

    async def _refresh_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh()
            except Exception:  # a fault of one round must not end the refreshing
                log.exception("re-resolving the dns: backend targets failed")

    async def refresh(self) -> None:
        """Re-resolve every `dns:` target (without TLS) now: each gets a fresh channel once that is READY
        (reusing the connections to addresses still resolved), else keeps its own."""
        await asyncio.gather(*(self._refresh(key, pooled) for key, pooled in list(self._channels.items())
                               if refreshable(*key)))

    async def _refresh(self, key: Key, pooled: PooledChannel) -> None:
        fresh = self._open(key)
        try:
            ready = await asyncio.wait_for(_ready(fresh), REFRESH_READY_TIMEOUT_S)
        except TimeoutError:
            ready = False
        except asyncio.CancelledError:
            await fresh.close(None)
            raise
        if not ready or self._channels.get(key) is not pooled:  # not resolved, or dropped meanwhile
            await fresh.close(None)
            if not ready and key not in self._unresolved:
                self._unresolved.add(key)
                log.warning("backend %s: re-resolving gave no address that answers (the name did not resolve, "
                            "resolved to nothing, or nothing there accepts connections); its channel stays as it was",
                            key[0])
            return
        if key in self._unresolved:
            self._unresolved.discard(key)
            log.info("backend %s: re-resolving finds an address that answers again", key[0])
        self._retire(pooled.swap(fresh))

    def _retire(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(channel.close(self.close_grace_s))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # ------------------------------------------------------------ closing

    async def close_except(self, keep: Iterable[str], grace: float | None = None,
                           channels: Iterable[Key] | None = None) -> None:
        """Close the channels to targets not in `keep` (after a reload), letting calls finish;
        given `channels` (target, TLS) in use, also those of a kept target whose TLS changed."""
        kept = set(keep)
        in_use = None if channels is None else set(channels)
        dropped = [key for key in self._channels if key[0] not in kept or (in_use is not None and key not in in_use)]
        closing = [self._channels.pop(key).channel for key in dropped]
        inloop = [target for target in self._inloop
                  if target not in kept or (in_use is not None and (target, None) not in in_use)]
        closing_inloop = [self._inloop.pop(target) for target in inloop]
        self._unresolved.difference_update(dropped)
        for target in [t for t in self._breakers if t not in kept]:
            del self._breakers[target]
        for target in [t for t in self._locals if t not in kept]:
            self._locals.pop(target).close()
        await asyncio.gather(*(channel.close(grace) for channel in closing),
                             *(channel.close(grace) for channel in closing_inloop))

    async def close(self, grace: float | None = None) -> None:
        """Stop refreshing and close every channel; calls still running get `grace` seconds
        (those on channels a refresh replaced are waited for as long, and are not cut short)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.close_except((), grace)
        if self._retiring:
            # A close under way cannot be cut short (a cancelled grpc.aio close leaves the channel
            # open for good): one whose calls outlive `grace` ends with them, within close_grace_s.
            await asyncio.wait(set(self._retiring), timeout=grace)


def _inloop_unreachable(target: str, tls: TLSSpec | None) -> str | None:
    """Why the in-loop client cannot call `target` (None: it can)."""
    if tls is not None:
        return "has no TLS"
    if parse_target(target) is None:
        return "reaches one plaintext host:port only (no dns:, unix: or address lists)"
    return None


async def _ready(channel: grpc.aio.Channel) -> bool:
    """Whether `channel` gets READY (False once it fails: no address, or none reachable)."""
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            return False
        await channel.wait_for_state_change(state)
        state = channel.get_state()
    return True
