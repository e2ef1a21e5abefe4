"""One gRPC call's operations through the real Predict of the front door over an embedded
runtime: API keys and the admin token, deadlines (the client's, else the gateway's), the
gateway's and an application's concurrency limits, metrics and the access log."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest

from gateway.app import GatewayApp, create_app
from gateway.manifests import Config, load_config
from gateway.observability import AccessLog, Metrics
from gateway.settings import ApiKey, AuthSettings, Settings
from protos.services import TF_PREDICT, TF_RELOAD_CONFIG
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import encode_tensor
from tests.conftest import runtimes_for, serve_app, write_app, write_model

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"  # x: its ms


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


AUTH = AuthSettings(api_keys=(ApiKey("team", sha("team-key"), ("slow_app",)),
                              ApiKey("other", sha("other-key"), ("x",))),
                    admin_token_sha256=(sha("admin-token"),))


@pytest.fixture
def slow_config(tmp_path: Path) -> Iterator[Config]:
    """Model `slow` (sleeps x[0] ms) and application `slow_app` over it, one call at a time."""
    write_model(tmp_path, "slow", "slow", SLOW)
    write_app(tmp_path, "slow_app", "slow", "max_concurrency: 1")
    with runtimes_for(load_config(tmp_path)) as config:
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


@pytest.mark.parametrize("gateway", [grpc_settings(request_timeout_s=0.4, max_concurrency=2)], indirect=True)
async def test_deadlines_and_concurrency_limits(gateway: tuple[GatewayApp, str]) -> None:
    app, _ = gateway
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        assert await code_of(predict(channel, "slow", 0)) == grpc.StatusCode.OK
        started = time.monotonic()
        assert await code_of(predict(channel, "slow", 300, timeout=0.1)) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.3
        await asyncio.sleep(0.3)
        started = time.monotonic()  # no client deadline: the gateway's request_timeout_s (0.4 s)
        assert await code_of(predict(channel, "slow", 800)) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert 0.35 < time.monotonic() - started < 0.75
        await asyncio.sleep(0.5)
        # The application takes one call at a time: the second at once is RESOURCE_EXHAUSTED.
        held, second = await asyncio.gather(code_of(predict(channel, "slow_app", 200)),
                                            _later(predict(channel, "slow_app", 0)))
        assert (held, second) == (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # The gateway takes two calls at once: a third is UNAVAILABLE.
        results = await asyncio.gather(code_of(predict(channel, "slow", 200)), code_of(predict(channel, "slow", 200)),
                                       _later(predict(channel, "slow", 0)))
        assert list(results) == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE]


async def _later(call: object) -> grpc.StatusCode:
    await asyncio.sleep(0.08)  # the calls before it are in flight
    return await code_of(call)


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
    while stream.getvalue().count("\n") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    entries = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["method"], e["path"], e["grpc_status"], e["status"]) for e in entries] == [
        ("GRPC", "/tensorflow.serving.PredictionService/Predict", "OK", 200),
        ("GRPC", "/tensorflow.serving.PredictionService/Predict", "NOT_FOUND", 404)]
    assert entries[0]["request_id"] == "grpc-trace-1"
    assert entries[0]["application"] == "slow_app"
