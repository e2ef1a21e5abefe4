"""One gRPC call's operations through the real Predict of the front door over an embedded
runtime: API keys and the admin token (also from an IPv6 loopback peer), deadlines (the
client's, else the gateway's), the gateway's and an application's concurrency limits, metrics
(the status of the same case over HTTP) and the access log."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest

from gateway.app import GatewayApp, create_app
from gateway.grpc_api.calls import Call, peer_host, unary
from gateway.grpc_server.server import GrpcServer, ServerOptions
from gateway.manifests import Config, load_config
from gateway.observability import AccessLog, Metrics
from gateway.serving.server import bound_socket
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.services import TF_PREDICT, TF_RELOAD_CONFIG
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import encode_tensor
from tests.conftest import runtimes_for, serve_app, write_app, write_model

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"  # x: its ms
# Holds each call until the test creates the file named by x[0] in the release folder.
HELD = """import pathlib, time

def predict(x):
    release = pathlib.Path({folder!r}) / str(int(x[0]))
    deadline = time.monotonic() + 60  # a failed test does not hang the runtime for good
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return x
"""


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


AUTH = AuthSettings(api_keys=(ApiKey("team", sha("team-key"), ("slow_app",)),
                              ApiKey("other", sha("other-key"), ("x",))),
                    admin_token_sha256=(sha("admin-token"),))


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """The folder where a file named `n` lets the held calls of `n` finish."""
    folder = tmp_path / "release"
    folder.mkdir()
    return folder


@pytest.fixture
def slow_config(tmp_path: Path, release: Path) -> Iterator[Config]:
    """Model `slow` (sleeps x[0] ms) and application `slow_app` over it; model `held` (waits
    for its release file) and application `held_app` over it, one call at a time."""
    config_dir = tmp_path / "config"
    write_model(config_dir, "slow", "slow", SLOW)
    write_app(config_dir, "slow_app", "slow")
    write_model(config_dir, "held", "held", HELD.format(folder=str(release)))
    write_app(config_dir, "held_app", "held", "max_concurrency: 1")
    with runtimes_for(load_config(config_dir)) as config:
        yield config


def request(name: str, ms: int) -> PredictRequest:
    return PredictRequest(model_spec=ModelSpec(name=name), inputs={"x": encode_tensor(np.array([ms], np.int32))})


async def predict(channel: grpc.aio.Channel, name: str, ms: int = 0, timeout: float | None = None,
                  metadata: tuple[tuple[str, str], ...] = ()) -> PredictResponse:
    call = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                               response_deserializer=PredictResponse.FromString)
    answer: PredictResponse = await call(request(name, ms), timeout=timeout, metadata=metadata)
    return answer


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def gateway(slow_config: Config, request: pytest.FixtureRequest) -> AsyncIterator[tuple[GatewayApp, str]]:
    settings: Settings = request.param
    app = create_app(settings, slow_config)
    async with serve_app(app, settings) as url:
        yield app, url


def grpc_settings(**fields: object) -> Settings:
    return Settings(grpc_port=0, access_log=False, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("gateway", [grpc_settings(auth=AUTH)], indirect=True)
async def test_api_keys_and_the_admin_token(gateway: tuple[GatewayApp, str]) -> None:
    app, _ = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        assert await code_of(predict(channel, "slow_app")) == grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(predict(channel, "slow_app", metadata=(("authorization", "Bearer wrong"),))) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(predict(channel, "slow_app", metadata=(("authorization", "Bearer team-key"),))) \
            == grpc.StatusCode.OK
        assert await code_of(predict(channel, "slow_app", metadata=(("x-api-key", "team-key"),))) \
            == grpc.StatusCode.OK
        assert await code_of(predict(channel, "slow_app", metadata=(("authorization", "Bearer other-key"),))) \
            == grpc.StatusCode.PERMISSION_DENIED
        reload = channel.unary_unary(TF_RELOAD_CONFIG.path, request_serializer=ReloadConfigRequest.SerializeToString,
                                     response_deserializer=TF_RELOAD_CONFIG.response.FromString)
        # An API key is no admin token.
        assert await code_of(reload(ReloadConfigRequest(), metadata=(("authorization", "Bearer team-key"),))) \
            == grpc.StatusCode.UNAUTHENTICATED
        admitted = await code_of(reload(ReloadConfigRequest(), metadata=(("authorization", "Bearer admin-token"),)))
        assert admitted not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


PREDICT_ROUTE = 'route="/tensorflow.serving.PredictionService/Predict"'


async def predict_count(url: str, status: int) -> float:
    """How many Predict calls `/metrics` counts with HTTP status `status` (all applications)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        metrics = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("gateway_requests_total{") and PREDICT_ROUTE in line
               and f'status="{status}"' in line)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    """Wait until `condition()` holds (the gateway's observable state, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def in_flight(app: GatewayApp, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return bool(app.state.dataplane.in_flight == count)
    return reached


def counted(url: str, status: int, count: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return await predict_count(url, status) == count
    return reached


@pytest.mark.parametrize("gateway", [grpc_settings(request_timeout_s=0.4)], indirect=True)
async def test_deadlines_the_clients_else_the_gateways_and_how_they_are_counted(
        gateway: tuple[GatewayApp, str], release: Path) -> None:
    app, url = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        assert await code_of(predict(channel, "slow", 0)) == grpc.StatusCode.OK
        # The client's deadline (0.1 s, shorter than the gateway's 0.4 s) ends the call: counted
        # as DEADLINE_EXCEEDED's 504, not as a client that went away (499).
        assert await code_of(predict(channel, "slow", 300, timeout=0.1)) == grpc.StatusCode.DEADLINE_EXCEEDED
        await until(counted(url, 504, 1), "the client-deadline call is not counted as 504")
        assert await predict_count(url, 499) == 0
        # No client deadline: the gateway's request_timeout_s (0.4 s) ends a call the model holds.
        started = time.monotonic()
        assert await code_of(predict(channel, "held", 1)) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.35 < time.monotonic() - started < 30  # the gateway's timeout, not the model's 60 s hold
        (release / "1").touch()
        await until(counted(url, 504, 2), "the gateway-deadline call is not counted as 504")
        # A client that cancels its call is counted as 499.
        cancelled = asyncio.ensure_future(predict(channel, "held", 2, timeout=30))
        await until(in_flight(app, 1), "the call to cancel never reached the model")
        cancelled.cancel()
        await until(counted(url, 499, 1), "the cancelled call is not counted as 499")
        (release / "2").touch()


@pytest.mark.parametrize("gateway", [grpc_settings(max_concurrency=2)], indirect=True)
async def test_the_gateways_and_an_applications_concurrency_limits(gateway: tuple[GatewayApp, str],
                                                                   release: Path) -> None:
    app, _ = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        # The application takes one call at a time: a second one meanwhile is RESOURCE_EXHAUSTED.
        held = asyncio.ensure_future(code_of(predict(channel, "held_app", 1, timeout=30)))
        await until(in_flight(app, 1), "the held call never reached the application")
        assert await code_of(predict(channel, "held_app", 0, timeout=30)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        (release / "1").touch()
        assert await held == grpc.StatusCode.OK
        # The gateway takes two calls at once: a third meanwhile is UNAVAILABLE.
        both = [asyncio.ensure_future(code_of(predict(channel, "held", n, timeout=30))) for n in (2, 3)]
        await until(in_flight(app, 2), "the held calls never reached the gateway's limit")
        assert await code_of(predict(channel, "slow", 0, timeout=30)) == grpc.StatusCode.UNAVAILABLE
        (release / "2").touch()
        (release / "3").touch()
        assert await asyncio.gather(*both) == [grpc.StatusCode.OK, grpc.StatusCode.OK]


@pytest.mark.parametrize("gateway", [grpc_settings()], indirect=True)
async def test_a_call_is_counted_with_its_method_path_and_logged(gateway: tuple[GatewayApp, str]) -> None:
    app, url = gateway
    stream = io.StringIO()
    app.state.observer.access_log = AccessLog(Metrics(), stream)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        await predict(channel, "slow_app", 0, metadata=(("x-request-id", "grpc-trace-1"),))
        assert await code_of(predict(channel, "nothing_here")) == grpc.StatusCode.NOT_FOUND
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        metrics = (await client.get("/metrics")).text
    route = 'route="/tensorflow.serving.PredictionService/Predict"'
    counted = [line for line in metrics.splitlines() if line.startswith("gateway_requests_total{") and route in line]
    assert any('status="200"' in line and 'application="slow_app"' in line and line.endswith(" 1.0")
               for line in counted), counted
    assert any('status="404"' in line for line in counted), counted
    deadline = time.monotonic() + 5
    while stream.getvalue().count('"GRPC"') < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    entries = [entry for entry in lines if entry["method"] == "GRPC"]  # not the GET /metrics above
    assert [(e["method"], e["path"], e["grpc_status"], e["status"]) for e in entries] == [
        ("GRPC", "/tensorflow.serving.PredictionService/Predict", "OK", 200),
        ("GRPC", "/tensorflow.serving.PredictionService/Predict", "NOT_FOUND", 404)]
    assert entries[0]["request_id"] == "grpc-trace-1"
    assert entries[0]["application"] == "slow_app"


@pytest.mark.parametrize(("peer", "host"), [
    ("ipv4:127.0.0.1:5000", "127.0.0.1"),
    ("ipv6:%5B::1%5D:5000", "::1"),  # as grpc writes an IPv6 peer
    ("ipv6:[::1]:5000", "::1"),
    ("ipv6:%5B::ffff:127.0.0.1%5D:1", "127.0.0.1"),  # an IPv4 client of a dual-stack listener
    ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
    ("unix:/x", None),
    ("", None),
])
def test_peer_host_reads_grpc_peer_strings(peer: str, host: str | None) -> None:
    assert peer_host(peer) == host


@pytest.mark.parametrize("gateway", [grpc_settings(host="::1")], indirect=True)
async def test_admin_methods_answer_an_ipv6_loopback_caller_without_a_token(gateway: tuple[GatewayApp, str]) -> None:
    app, _ = gateway
    stream = io.StringIO()
    app.state.observer.access_log = AccessLog(Metrics(), stream)
    async with grpc.aio.insecure_channel(f"[::1]:{app.state.grpc_port}") as channel:
        reload = channel.unary_unary(TF_RELOAD_CONFIG.path, request_serializer=ReloadConfigRequest.SerializeToString,
                                     response_deserializer=TF_RELOAD_CONFIG.response.FromString)
        admitted = await code_of(reload(ReloadConfigRequest(), timeout=10))
    assert admitted not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), admitted
    deadline = time.monotonic() + 5
    while '"GRPC"' not in stream.getvalue() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [orjson.loads(line)["client"] for line in stream.getvalue().splitlines()] == ["::1"]


@pytest.mark.parametrize("gateway", [grpc_settings()], indirect=True)
async def test_a_call_grpc_cancels_at_the_clients_deadline_is_counted_504(gateway: tuple[GatewayApp, str]) -> None:
    """A handler that waits on nothing with a timer of its own: the server cancels it when the client's
    deadline passes, and that is DEADLINE_EXCEEDED (504), not a client that went away (499)."""
    app, url = gateway

    async def wait_forever(request: PredictRequest, call: Call) -> PredictResponse:
        call.context()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    handler = unary(TF_PREDICT, wait_forever, app.state.grpc_door.door)  # the gateway's own door state
    server = GrpcServer({TF_PREDICT.path: handler}, ServerOptions())
    port = await server.start(bound_socket("127.0.0.1", 0, reuse_port=False))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await code_of(predict(channel, "slow", timeout=0.2)) == grpc.StatusCode.DEADLINE_EXCEEDED
            await until(counted(url, 504, 1), "the call cancelled at its deadline is not counted as 504")
            assert await predict_count(url, 499) == 0
            cancelled = asyncio.ensure_future(predict(channel, "slow", timeout=30))
            await until(lambda: _serving_one(app), "the call to cancel never started")
            cancelled.cancel()
            await until(counted(url, 499, 1), "the call the client cancelled is not counted as 499")
    finally:
        await server.stop(0)


async def _serving_one(app: GatewayApp) -> bool:
    return bool(app.state.observer.metrics.serving == 1)  # the calls (HTTP or gRPC) being served
