"""The gRPC front door's operations in process, over a real uvicorn and grpc.aio server:
grpc.health.v1 following readiness and the drain, the message limit from max_body_bytes,
connections aged out by grpc_max_connection_age_s, a backend's fault counted as HTTP counts it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from protos.services import TF_PREDICT
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import encode_tensor
from tests.conftest import free_port, serve_app
from tests.tfserving_server import FakeTFServing

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "hydrosphere.serving.gateway.GatewayService", "inference.GRPCInferenceService")


def toy_config(directory: Path, target: str, output_type: str = "float32", app_extra: str = "") -> Config:
    """One application over Toy version 1 of a TF Serving backend at `target` (its contract
    declared: readiness then waits on the backend only)."""
    (directory / "models").mkdir(parents=True)
    (directory / "applications").mkdir()
    (directory / "models" / "toy.yaml").write_text(
        f"kind: Model\nname: toy\nbackend:\n  protocol: tensorflow-serving\n  target: {target}\n"
        "  model_name: Toy\n  version: 1\ncontract:\n  inputs:\n    input_1: {type: float32, shape: [-1, 2]}\n"
        f"  outputs:\n    output_1: {{type: {output_type}, shape: [-1, 1]}}\n")
    (directory / "applications" / "toy.yaml").write_text(
        f"kind: Application\nname: toy\nsingular:\n  model: toy\n{app_extra}\n")
    return load_config(directory)


async def statuses(channel: grpc.aio.Channel) -> list[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return [(await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status for name in SERVICES]


async def test_health_follows_readiness_per_service(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the model's backend is down
    settings = Settings(grpc_port=0, health_interval_s=0.1)
    app = create_app(settings, toy_config(tmp_path / "config", f"127.0.0.1:{port}"))
    backend = FakeTFServing()
    async with serve_app(app, settings), grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        assert await statuses(channel) == [NOT_SERVING] * len(SERVICES)
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"))
        assert (await watch.read()).status == NOT_SERVING
        backend.port = port
        await backend.start()
        try:
            update = await asyncio.wait_for(watch.read(), timeout=20)  # the channel's reconnect back-off
            assert update.status == SERVING
            assert await statuses(channel) == [SERVING] * len(SERVICES)
            door = app.state.grpc_door
            door.drain()  # the drain: NOT_SERVING at once, though calls are still taken
            assert (await asyncio.wait_for(watch.read(), timeout=5)).status == NOT_SERVING
            assert await statuses(channel) == [NOT_SERVING] * len(SERVICES)
            listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
            assert {name: answer.status for name, answer in listed.statuses.items()} == {
                name: NOT_SERVING for name in SERVICES}
            # The stop ends the Watch stream (OK), so it does not hold the stop for its 30 s grace.
            door.begin_stop(30.0)
            assert await asyncio.wait_for(watch.read(), timeout=5) is grpc.aio.EOF  # type: ignore[attr-defined]
            assert await watch.code() == grpc.StatusCode.OK
            await asyncio.wait_for(door.stop(30.0), timeout=10)
        finally:
            watch.cancel()
            await backend.stop()


async def test_the_grpc_port_is_off_by_default(example_config: Config) -> None:
    app = create_app(Settings(), example_config)
    async with serve_app(app):
        assert app.state.grpc_door is None
        assert not hasattr(app.state, "grpc_port")


async def test_a_message_over_max_body_bytes_is_resource_exhausted(example_config: Config) -> None:
    settings = Settings(grpc_port=0, max_body_bytes=1000)
    app = create_app(settings, example_config)
    async with serve_app(app, settings) as url, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        codes = []
        for size in (900, 1100):  # under the limit: read (an unknown service); over it: refused
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Check(health_pb2.HealthCheckRequest(service="x" * size), timeout=5)
            codes.append(refused.value.code())
        assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert ("x-request-id", "refused-1") in await _trailing_metadata(
            stub.Check(health_pb2.HealthCheckRequest(service="x" * 1100), timeout=5,
                       metadata=(("x-request-id", "refused-1"),)))
        unknown = channel.unary_unary("/tensorflow.serving.PredictionService/Nothing",
                                      request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.aio.AioRpcError) as not_served:
            await unknown(b"", timeout=5)
        assert not_served.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
    # Refused before any handler, still counted: as HTTP counts a body too large, and an unknown route.
    assert _requests(metrics, 'route="/grpc.health.v1.Health/Check"', 'status="413"') == 2
    assert _requests(metrics, 'route="unmatched"', 'status="501"') == 1


def _requests(metrics: str, *labels: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("gateway_requests_total{") and all(label in line for label in labels))


async def _trailing_metadata(call: grpc.aio.UnaryUnaryCall[Any, Any]) -> list[tuple[str, str | bytes]]:
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    return [(key, value) for key, value in await call.trailing_metadata() or ()]


async def test_max_connection_age_sends_goaway_and_the_channel_reconnects(example_config: Config) -> None:
    settings = dataclasses.replace(Settings(grpc_port=0, drain_timeout_s=0.2), grpc_max_connection_age_s=0.5)
    app = create_app(settings, example_config)
    async with serve_app(app, settings), grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        started = time.monotonic()
        # The server's GOAWAY after 0.5 s (+ jitter) ends the connection: the channel leaves READY.
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=5)
        assert time.monotonic() - started < 3
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING  # a new connection
        assert channel.get_state() == grpc.ChannelConnectivity.READY


async def test_a_backends_fault_is_internal_and_counted_as_http_counts_it(tmp_path: Path) -> None:
    backend = FakeTFServing()
    await backend.start()
    try:  # Toy answers float32, the manifest says int32 and the application checks answers
        config = toy_config(tmp_path / "config", backend.target, "int32", "validate_outputs: true")
        settings = Settings(grpc_port=0)
        app = create_app(settings, config)
        async with serve_app(app, settings) as url, \
                grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            predict = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                                          response_deserializer=PredictResponse.FromString)
            request = PredictRequest(model_spec=ModelSpec(name="toy"),
                                     inputs={"input_1": encode_tensor(np.array([[1, 2]], np.float32))})
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await predict(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INTERNAL
            assert "output_1" in (refused.value.details() or "")
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                metrics = (await client.get("/metrics")).text
        counted = [line for line in metrics.splitlines() if line.startswith("gateway_requests_total{")
                   and 'route="/tensorflow.serving.PredictionService/Predict"' in line]
        assert len(counted) == 1, counted
        assert 'status="502"' in counted[0], counted  # OutputContractViolation's status, as over HTTP
    finally:
        await backend.stop()


async def test_an_unreadable_certificate_fails_the_start_with_the_grpc_wording(tmp_path: Path) -> None:
    settings = Settings(grpc_port=0, tls_certfile=tmp_path / "missing.pem", tls_keyfile=tmp_path / "missing.key")
    app = create_app(settings, load_config(tmp_path))
    with pytest.raises(RuntimeError, match=r"^cannot listen for gRPC on 127\.0\.0\.1:0: No such file or directory: "):
        async with app.router.lifespan_context(app):
            pass
