"""How a backend's calls travel, apart from what they say: one unary call per `Transport.call`.

- `GrpcTransport`: a pooled grpc.aio channel (gateway.backends.pool), asked for the method's
  callable at each call, so a channel the pool replaced (a `dns:` target re-resolved) is left at once.
- `InloopTransport`: the pool's in-loop channel (gateway.grpc_client) to a plaintext `host:port`
  target, when the `backend_client` setting is `inloop`: the same calls, statuses and errors.
- `LocalWireTransport`: an embedded runtime's Unix socket (gateway.backends.local) for the
  methods the local wire carries, falling back to gRPC when the socket is unreachable.
- `GuardedTransport`: the target's circuit breaker around another transport.

`connect(spec, pool, label)` assembles the stack a manifest's backend spec asks for, for any
protocol spoken over gRPC; what a message holds (where attachments go back in, on the way to
gRPC) is the backend's, given as `inline`.

A transport raises only `GatewayError`s (named after the model `label`: never the target,
an internal address), so backends and the circuit breaker see every transport alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.backends.local import LocalCallError, LocalChannel, LocalUnreachable
from gateway.backends.pool import ChannelPool, PooledChannel
from gateway.backends.resilience import CircuitBreaker, CircuitState
from gateway.errors import GatewayError, from_grpc_status
from gateway.grpc_client import InloopChannel
from gateway.grpc_server.status import RpcStatus
from gateway.manifests import BackendSpec
from protos.local_wire import METHOD_NUMBERS, Attachments
from protos.services import Method

log = logging.getLogger("gateway.backends")

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
Metadata = tuple[tuple[str, str], ...]
# Puts the tensors of `attachments.sent` back inside `request` (and clears them): the backend's
# knowledge of its messages, for a call that leaves the local wire for gRPC.
Inline = Callable[[Message, Attachments], None]


class Transport(Protocol):
    """Carries one unary call to a backend and back."""

    @property
    def target(self) -> str:
        """Where the calls go, for logs."""
        ...

    @property
    def carries_attachments(self) -> bool:
        """Whether large tensors may travel beside the message (else `call` puts them inside)."""
        ...

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   metadata: Metadata = (), attachments: Attachments | None = None) -> ResponseT:
        """`request` to `method`, answered within `timeout` seconds. `metadata` goes with it
        (gRPC metadata); `attachments`: tensors beside the message, where the wire has room
        for them (the answer's come back in `attachments.received`)."""
        ...

    def passed_health_check(self) -> None:
        """A health check of the target succeeded (a guarded transport closes its circuit)."""
        ...


class GrpcTransport:
    """Calls on a pooled channel, on the callable it has for the method (made on first use)."""

    def __init__(self, channel: PooledChannel, target: str, label: str) -> None:
        self.channel = channel
        self.target = target
        self.label = label

    @property
    def carries_attachments(self) -> bool:
        return False

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   metadata: Metadata = (), attachments: Attachments | None = None) -> ResponseT:
        try:
            answer: ResponseT = await self.channel.stub(method)(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise from_grpc_status(error.code(), error.details(), self.target, self.label) from None
        return answer

    def passed_health_check(self) -> None:
        pass


class InloopTransport:
    """Calls on the pool's in-loop channel to the target: the serialized request to the method's
    path, the answer parsed here. Its errors are those `GrpcTransport` raises for the same status
    (an answer that does not parse is INTERNAL, as grpcio's deserializer failing is)."""

    def __init__(self, channel: InloopChannel, target: str, label: str) -> None:
        self.channel = channel
        self.target = target
        self.label = label

    @property
    def carries_attachments(self) -> bool:
        return False

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   metadata: Metadata = (), attachments: Attachments | None = None) -> ResponseT:
        try:
            raw = await self.channel.unary(method.path, request.SerializeToString(), timeout, metadata)
        except RpcStatus as error:
            raise from_grpc_status(error.code, error.message, self.target, self.label) from None
        try:
            answer: ResponseT = method.response.FromString(raw)  # type: ignore[arg-type]  # upb parses any buffer
        except DecodeError:
            raise from_grpc_status(grpc.StatusCode.INTERNAL, "Exception deserializing response!",
                                   self.target, self.label) from None
        return answer

    def passed_health_check(self) -> None:
        pass


class LocalWireTransport:
    """The local wire for the methods it carries (Predict, PredictMany), `fallback` for the
    others and whenever the socket is gone: gRPC reaches the same runtime, and retries while
    it restarts (said once in the log). With `inline` (how the backend puts attachments back
    in its messages) large tensors travel beside the message."""

    def __init__(self, local: LocalChannel, fallback: Transport, label: str, inline: Inline | None = None) -> None:
        self.local = local
        self.fallback = fallback
        self.label = label
        self.inline = inline
        self._fallback_logged = False

    @property
    def target(self) -> str:
        return self.fallback.target

    @property
    def carries_attachments(self) -> bool:
        return self.inline is not None

    def passed_health_check(self) -> None:
        self.fallback.passed_health_check()

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   metadata: Metadata = (), attachments: Attachments | None = None) -> ResponseT:
        if method.path in METHOD_NUMBERS:
            try:
                return await self.local.call(method, request, timeout, attachments)
            except LocalUnreachable as error:
                # The socket is gone (or refused); tensors meant to travel beside go in the message.
                if not self._fallback_logged:
                    log.warning("model %s: %s; predictions go over gRPC", self.label, error.message)
                    self._fallback_logged = True
            except LocalCallError as error:
                raise error.to_gateway_error(self.target, self.label) from None
            if attachments is not None and attachments.sent and self.inline is not None:
                self.inline(request, attachments)
        return await self.fallback.call(method, request, timeout, metadata, attachments)


class GuardedTransport:
    """Calls through the circuit breaker of the target (shared by its models): refused at
    once while it is open, each outcome reported to it. `inner` carries the calls that
    must pass whatever the circuit says (health checks: the probe that closes it).
    `model_level(error)`: whether an error is about one model, not the target (a v2 server's
    "not at ready state"): the target answered, so it counts as a success for the breaker."""

    def __init__(self, inner: Transport, breaker: CircuitBreaker, label: str,
                 model_level: Callable[[GatewayError], bool] | None = None) -> None:
        self.inner = inner
        self.breaker = breaker
        self.label = label
        self.model_level = model_level

    @property
    def target(self) -> str:
        return self.inner.target

    @property
    def carries_attachments(self) -> bool:
        return self.inner.carries_attachments

    async def call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                   metadata: Metadata = (), attachments: Attachments | None = None) -> ResponseT:
        breaker = self.breaker
        breaker.before_call(self.label)
        try:
            response = await self.inner.call(method, request, timeout, metadata, attachments)
        except GatewayError as error:
            model_level = self.model_level is not None and self.model_level(error)
            breaker.record(None if model_level else error.grpc_code)
            raise
        except asyncio.CancelledError:
            breaker.record(None)  # the caller went away; says nothing about the target
            raise
        breaker.record(None)
        return response

    def passed_health_check(self) -> None:
        """A health check succeeded: an open circuit closes at once (a restarted backend is
        used again without waiting for its cool-down)."""
        if self.breaker.state is not CircuitState.CLOSED:
            self.breaker.record(None)


class Transports(NamedTuple):
    """A backend's ways to its target: `calls` through the circuit breaker, `checks` past it
    (health checks: the probe that closes it, reported with `calls.passed_health_check()`)."""

    calls: Transport
    checks: Transport


def connect(spec: BackendSpec, pool: ChannelPool, label: str, inline: Inline | None = None,
            model_level: Callable[[GatewayError], bool] | None = None) -> Transports:
    """The transports of a backend `spec` on `pool`: its pooled channel (in-loop or grpcio), over the embedded
    runtime's Unix socket first when it has one, behind the target's circuit breaker (which
    does not count the errors `model_level` says are one model's); calls' errors name the
    model `label`."""
    transport = _grpc(spec, pool, label)
    if spec.local_socket is not None:
        transport = LocalWireTransport(pool.local(spec.target, spec.local_socket), transport, label, inline)
    return Transports(GuardedTransport(transport, pool.breaker(spec.target), label, model_level), transport)


def _grpc(spec: BackendSpec, pool: ChannelPool, label: str) -> Transport:
    """The gRPC transport to `spec`'s target: the pool's in-loop channel where it has one, else grpcio's."""
    inloop = pool.inloop(spec.target, spec.tls)
    if inloop is not None:
        return InloopTransport(inloop, spec.target, label)
    return GrpcTransport(pool.pooled(spec.target, spec.tls), spec.target, label)
