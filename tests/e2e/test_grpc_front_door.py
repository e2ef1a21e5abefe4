"""`gateway serve --grpc-port`: the gRPC port as a process serves it (flag, gateway.yaml, env),
a busy port, TLS, SIGTERM's drain with a call in flight and `--workers` sharing the port."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.services import TF_PREDICT
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor
from tests.certs import make_certificates
from tests.conftest import REPO, write_app, write_model
from tests.e2e.processes import GATEWAY, command_line, descendants, running_gateway

SLOW = "import time\n\ndef predict(x):\n    time.sleep(int(x[0]) / 1000)\n    return x\n"  # x: its ms
_GRPC_SERVING = re.compile(rb"serving gRPC on \S+:(\d+) \((TLS|plaintext)\)")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def make_config(root: Path, listen: str = "") -> Path:
    write_model(root, "slow", "slow", SLOW)
    write_app(root, "slow_app", "slow")
    (root / "gateway.yaml").write_text(
        "kind: Gateway\ndefaults: {shutdown_grace_s: 1, drain_timeout_s: 3}\n" + listen)
    return root


def grpc_port_of(log: Path, processes: int = 1, timeout: float = 30) -> tuple[int, str]:
    """The gRPC port (and TLS or plaintext) the gateway logged once `processes` serve gRPC."""
    deadline = time.monotonic() + timeout
    while len(found := _GRPC_SERVING.findall(log.read_bytes())) < processes:
        assert time.monotonic() < deadline, "the gateway did not log its gRPC port"
        time.sleep(0.05)
    return int(found[0][0]), found[0][1].decode()


def check(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    status: int = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
    return status


@contextmanager
def gateway_with_grpc(config: Path, *extra: str, env: dict[str, str] | None = None, scheme: str = "http",
                      verify: ssl.SSLContext | bool = True) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    log = config / "gateway.log"
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    with running_gateway(config, *extra, env=env, scheme=scheme, verify=verify, log=log) as (process, _):
        port, _ = grpc_port_of(log, workers)
        yield process, port, log


@pytest.mark.parametrize("how", ["flag", "gateway.yaml", "env"])
def test_the_grpc_port_is_configured_by_flag_yaml_or_env(tmp_path: Path, how: str) -> None:
    config = make_config(tmp_path, "listen: {grpc_port: 0}\n" if how == "gateway.yaml" else "")
    extra = ("--grpc-port", "0") if how == "flag" else ()
    env = {**os.environ, "GATEWAY_GRPC_PORT": "0"} if how == "env" else None
    with gateway_with_grpc(config, *extra, env=env) as (_, port, _), \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert check(channel) == SERVING
        assert check(channel, "tensorflow.serving.PredictionService") == SERVING


def test_a_busy_grpc_port_fails_the_start_with_one_clear_line(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with socket.socket() as holder:  # a listener of another program, without SO_REUSEPORT
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([str(GATEWAY), "serve", "--config", str(config), "--port", "0",
                               "--grpc-port", str(port)], cwd=REPO, capture_output=True, timeout=60)
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in stderr
    assert "Traceback" not in stderr
    assert "runtime pid" not in stderr  # failed before any model runtime started
    assert stderr.strip().splitlines() == [f"gateway: cannot listen for gRPC on 127.0.0.1:{port}: "
                                           "Address already in use"]


def test_tls_uses_the_http_listeners_certificate(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    config = make_config(tmp_path / "config", f"listen: {{tls_certfile: {certs.server_cert}, "
                                              f"tls_keyfile: {certs.server_key}}}\n")
    verify = ssl.create_default_context(cafile=str(certs.ca))
    with gateway_with_grpc(config, "--grpc-port", "0", scheme="https", verify=verify) as (_, port, log):
        assert grpc_port_of(log)[1] == "TLS"
        credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            assert check(channel) == SERVING
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plaintext, \
                pytest.raises(grpc.RpcError) as refused:
            check(plaintext)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def predict_call(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable[PredictRequest, PredictResponse]:
    return channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                               response_deserializer=PredictResponse.FromString)


def slow_request(ms: int) -> PredictRequest:
    return PredictRequest(model_spec=ModelSpec(name="slow_app"),
                          inputs={"x": encode_tensor(np.array([ms], np.int32))})


def sent(answer: PredictResponse) -> list[int]:
    """What the slow model answered (its x, as output y)."""
    return [int(value) for value in decode_tensor(answer.outputs["y"])]


def test_sigterm_health_not_serving_at_once_calls_in_flight_finish_new_ones_unavailable(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # shutdown_grace_s 1, drain_timeout_s 3
    with gateway_with_grpc(config, "--grpc-port", "0") as (process, port, _), \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        predict = predict_call(channel)
        assert sent(predict(slow_request(0), timeout=10)) == [0]
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == SERVING
        in_flight = predict.future(slow_request(1800), timeout=10)  # past the grace, within the drain
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert next(watch).status == NOT_SERVING
        assert time.monotonic() - started < 0.9  # at once (the drain sets it): calls are still taken for 1 s
        assert sent(predict(slow_request(0), timeout=5)) == [0]
        time.sleep(max(0.0, started + 1.3 - time.monotonic()))  # the grace is over
        with pytest.raises(grpc.RpcError) as refused:
            predict(slow_request(0), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert next(watch, None) is None  # the stop ended the Watch: it holds up no shutdown
        assert sent(in_flight.result()) == [1800]
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 1 + 3 + 2


def test_two_workers_both_serve_grpc_on_the_shared_port(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with gateway_with_grpc(config, "--workers", "2", "--grpc-port", str(_free_reusable_port())) \
            as (process, port, _):
        workers = [pid for pid in descendants(process.pid) if "spawn_main" in command_line(pid)]
        assert len(workers) == 2
        assert all(_listens_on(pid, port) for pid in workers)
        answered_by = set()  # the request ids' per-process prefix tells the worker
        for _ in range(40):  # a new connection each time: the kernel picks a worker
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert check(channel) == SERVING
                _, call = predict_call(channel).with_call(slow_request(0), timeout=10)
                answered_by.add(dict(call.trailing_metadata())["x-request-id"][:24])
            if len(answered_by) == 2:
                break
        assert len(answered_by) == 2


def _free_reusable_port() -> int:
    """A port free now (workers > 1 need a fixed port: 0 would give each its own)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A" and fields[9] in inodes:
                return True
    return False
