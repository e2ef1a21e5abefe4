"""Backend calls over the in-loop client (`backend_client: inloop`) against a real grpc.aio
server on a loopback port, beside the same calls over grpcio: metadata, errors, cancellation,
a restarted server, a GOAWAY under load, retries, and which targets the pool gives it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.backends.pool import ChannelPool
from gateway.backends.resilience import CircuitState
from gateway.backends.transports import GrpcTransport, GuardedTransport, InloopTransport, Transport, connect
from gateway.errors import BackendInvalidArgument, BackendUnavailable, DeadlineExceeded, GatewayError
from gateway.manifests import BackendSpec, TLSSpec
from gateway.settings import BackendClient
from protos.services import TF_PREDICT
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tests.waiting import eventually

CLIENTS: tuple[BackendClient, ...] = ("grpcio", "inloop")
INVALID = "input_1: expected 2 values, got 3 (100% sure) — ünïcode"


def predict(name: str) -> PredictRequest:
    return PredictRequest(model_spec=ModelSpec(name=name))


class Backend:
    """A Predict server whose model name says what to do: `echo` answers with the call's
    x-request-id, `invalid` aborts INVALID_ARGUMENT, `unavailable` aborts UNAVAILABLE (counted),
    `slow` waits 30 s (a cancel is seen), `hold` answers after 0.5 s (calls taken are counted)."""

    def __init__(self) -> None:
        self.port = 0
        self.server: grpc.aio.Server | None = None
        self.unavailable = 0
        self.taken = 0
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def start(self) -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            self._predict, request_deserializer=PredictRequest.FromString,
            response_serializer=PredictResponse.SerializeToString)
        service, method = TF_PREDICT.path.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server

    async def stop(self, grace: float | None = 0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _predict(self, request: PredictRequest, context: grpc.aio.ServicerContext[object, object]) -> object:
        name = request.model_spec.name
        if name == "echo":
            metadata = dict(context.invocation_metadata() or ())
            return PredictResponse(model_spec=ModelSpec(name=str(metadata.get("x-request-id"))))
        if name == "invalid":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, INVALID)
        if name == "unavailable":
            self.unavailable += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        if name == "slow":
            self.entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        self.taken += 1
        await asyncio.sleep(0.5)
        return PredictResponse(model_spec=ModelSpec(name=name))


@pytest.fixture(autouse=True)
def _backend_client() -> None:
    """These tests pick each pool's client themselves (GATEWAY_BACKEND_CLIENT does not apply)."""


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    server = Backend()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def pools() -> AsyncIterator[dict[BackendClient, ChannelPool]]:
    made = {client: ChannelPool(retry_attempts=1, client=client) for client in CLIENTS}
    try:
        yield made
    finally:
        for pool in made.values():
            await pool.close(grace=1)


def spec(target: str, tls: TLSSpec | None = None) -> BackendSpec:
    return BackendSpec("tensorflow-serving", target, "toy", tls=tls)


def unguarded(pool: ChannelPool, target: str) -> Transport:
    return connect(spec(target), pool, "toy").checks


async def test_the_pool_gives_plaintext_host_port_targets_the_inloop_client_behind_the_breaker(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = ChannelPool(client="inloop")
    calls, checks = connect(spec("127.0.0.1:8500"), pool, "toy")
    assert isinstance(checks, InloopTransport)
    assert isinstance(calls, GuardedTransport)
    assert calls.inner is checks
    other = connect(spec("127.0.0.1:8500"), pool, "other").checks
    assert isinstance(other, InloopTransport)
    assert other.channel is checks.channel
    caplog.set_level(logging.INFO, "gateway.backends")
    for _ in range(2):
        assert isinstance(connect(spec("dns:///backend.test:8500"), pool, "toy").checks, GrpcTransport)
        assert isinstance(connect(spec("127.0.0.1:8501", TLSSpec()), pool, "toy").checks, GrpcTransport)
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "backend dns:///backend.test:8500: backend_client inloop reaches one plaintext host:port only "
        "(no dns:, unix: or address lists); this target is called over grpcio",
        "backend 127.0.0.1:8501: backend_client inloop has no TLS; this target is called over grpcio"]
    assert sorted(pool.targets) == ["127.0.0.1:8500", "127.0.0.1:8501", "dns:///backend.test:8500"]
    await pool.close_except({"127.0.0.1:8501"})
    assert pool.targets == ["127.0.0.1:8501"]
    await pool.close()
    assert pool.targets == []
    assert isinstance(connect(spec("127.0.0.1:8500"), ChannelPool(), "toy").checks, GrpcTransport)


@pytest.mark.parametrize("client", CLIENTS)
async def test_metadata_reaches_the_server(backend: Backend, pools: dict[BackendClient, ChannelPool],
                                           client: BackendClient) -> None:
    transport = unguarded(pools[client], backend.target)
    answer = await transport.call(TF_PREDICT, predict("echo"), 5, (("x-request-id", "0123abcd"),))
    assert answer.model_spec.name == "0123abcd"


async def test_an_error_answer_raises_what_grpcio_raises(backend: Backend,
                                                         pools: dict[BackendClient, ChannelPool]) -> None:
    raised: dict[str, GatewayError] = {}
    for client, pool in pools.items():
        with pytest.raises(BackendInvalidArgument) as caught:
            await unguarded(pool, backend.target).call(TF_PREDICT, predict("invalid"), 5)
        raised[client] = caught.value
    grpcio, inloop = raised["grpcio"], raised["inloop"]
    assert (inloop.message, inloop.log_detail, inloop.status) == (grpcio.message, grpcio.log_detail, grpcio.status)
    assert inloop.message == INVALID
    for client, pool in pools.items():
        with pytest.raises(DeadlineExceeded) as late:
            await unguarded(pool, backend.target).call(TF_PREDICT, predict("slow"), 0.2)
        raised[client] = late.value
    assert raised["inloop"].message == raised["grpcio"].message
    await backend.stop()
    for client, pool in pools.items():
        with pytest.raises(BackendUnavailable) as down:
            await unguarded(pool, backend.target).call(TF_PREDICT, predict("echo"), 5)
        raised[client] = down.value
    assert raised["inloop"].message == raised["grpcio"].message == "the backend of model toy is unavailable"
    assert backend.target not in raised["inloop"].message


async def test_a_cancelled_call_is_cancelled_at_the_server(backend: Backend,
                                                           pools: dict[BackendClient, ChannelPool]) -> None:
    transport = unguarded(pools["inloop"], backend.target)
    call = asyncio.ensure_future(transport.call(TF_PREDICT, predict("slow"), 30))
    await asyncio.wait_for(backend.entered.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(backend.cancelled.wait(), 5)
    assert (await transport.call(TF_PREDICT, predict("echo"), 5)).model_spec.name == "None"


async def test_calls_recover_once_the_server_is_back_on_its_port(backend: Backend,
                                                                 pools: dict[BackendClient, ChannelPool]) -> None:
    transport = unguarded(pools["inloop"], backend.target)
    assert (await transport.call(TF_PREDICT, predict("echo"), 5)).model_spec.name == "None"
    await backend.stop()
    with pytest.raises(BackendUnavailable):
        await transport.call(TF_PREDICT, predict("echo"), 5)
    await backend.start()

    async def answers() -> bool:
        try:
            await transport.call(TF_PREDICT, predict("echo"), 1)
        except BackendUnavailable:
            return False
        return True

    await eventually(answers, timeout=10, what="a call answered after the restart")


async def test_a_server_stopping_with_grace_finishes_every_call_it_took(
        backend: Backend, pools: dict[BackendClient, ChannelPool]) -> None:
    transport = unguarded(pools["inloop"], backend.target)
    calls = [asyncio.ensure_future(transport.call(TF_PREDICT, predict("hold"), 10)) for _ in range(32)]

    async def all_taken() -> bool:
        return backend.taken == 32

    await eventually(all_taken, what="the server took the 32 calls")
    await backend.stop(grace=5)  # GOAWAY, then the calls it took finish
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert [getattr(answer, "model_spec", answer) for answer in answers] == [ModelSpec(name="hold")] * 32


@pytest.mark.parametrize("attempts", [1, 3])
async def test_unavailable_is_retried_as_configured_and_opens_the_circuit(backend: Backend, attempts: int) -> None:
    pool = ChannelPool(retry_attempts=attempts, circuit_failures=1, client="inloop")
    try:
        calls, _ = connect(spec(backend.target), pool, "toy")
        with pytest.raises(BackendUnavailable):
            await calls.call(TF_PREDICT, predict("unavailable"), 5)
        assert backend.unavailable == attempts
        assert pool.breaker(backend.target).state is CircuitState.OPEN
    finally:
        await pool.close(grace=1)
