"""The error tree and the gRPC status table; error answers over a real uvicorn."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import gateway.pipeline
from gateway.app import GatewayApp, create_app
from gateway.auth import Authenticator
from gateway.backends import UnavailableBackend
from gateway.errors import (
    GRPC_TO_HTTP,
    BackendUnavailable,
    ContractViolation,
    DeadlineExceeded,
    ModelError,
    from_grpc_status,
)
from gateway.manifests import Config, load_config
from gateway.observability import RequestObserver
from gateway.settings import Settings
from tests.conftest import free_port, serve_app


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_grpc_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    assert GRPC_TO_HTTP[code][0] == status
    assert from_grpc_status(code, "details", "host:1").status == status


def test_every_grpc_code_but_ok_is_mapped() -> None:
    assert set(GRPC_TO_HTTP) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_error_classes_follow_the_status() -> None:
    assert isinstance(from_grpc_status(grpc.StatusCode.UNAVAILABLE, None, "h:1"), BackendUnavailable)
    assert isinstance(from_grpc_status(grpc.StatusCode.DEADLINE_EXCEEDED, None, "h:1"), DeadlineExceeded)
    error = from_grpc_status(grpc.StatusCode.INTERNAL, "ValueError: boom", "h:1")
    assert isinstance(error, ModelError)
    assert error.to_dict() == {"error": {"code": "model_error", "message": "ValueError: boom"}}


def test_messages_name_the_model_and_keep_the_backends_words_but_not_its_address() -> None:
    deadline = from_grpc_status(grpc.StatusCode.DEADLINE_EXCEEDED, "batch timed out", "10.0.0.7:8500", "toy")
    assert deadline.message == "the backend of model toy missed the deadline: batch timed out"
    down = from_grpc_status(grpc.StatusCode.UNAVAILABLE, "ipv4:10.0.0.7:8500: Connection refused",
                            "10.0.0.7:8500", "toy")
    assert down.message == "the backend of model toy is unavailable"
    assert down.log_detail is not None
    assert "10.0.0.7:8500" in down.log_detail


def test_json_shape_carries_the_field() -> None:
    error = ContractViolation("expected an integer", field="number[2][0]")
    assert error.status == 400
    assert error.to_dict() == {
        "error": {"code": "contract_violation", "message": "expected an integer", "field": "number[2][0]"}
    }


# ---------------------------------------------------------------- over a real uvicorn


@pytest.fixture
async def served(example_config: Config) -> AsyncIterator[tuple[str, GatewayApp]]:
    app = create_app(Settings(access_log=False), example_config)
    async with serve_app(app) as url:
        yield url, app


DEEP_BODIES = [  # the nested lists go where %s is
    ("/gateway/applications/increment_app", b'{"number": %s}'),
    ("/gateway/models/increment_model", b'{"number": %s}'),
    ("/gateway/models/increment_model/versions/1", b'{"number": %s}'),
    ("/v1/models/increment_model:predict", b'{"instances": %s}'),
    ("/v1/models/increment_model:predict", b'{"instances": [{"number": %s}]}'),
    ("/v1/models/increment_model:predict", b'{"inputs": %s}'),
    ("/v1/models/increment_model:predict", b'{"inputs": {"number": %s}}'),
    ("/v1/models/increment_model:classify", b'{"examples": [{"x": %s}]}'),
    ("/v1/models/increment_model:regress", b'{"examples": [{"x": %s}]}'),
]


@pytest.mark.parametrize("depth", [65, 1000])
@pytest.mark.parametrize(("path", "body"), DEEP_BODIES)
async def test_lists_nested_deeper_than_a_tensor_can_be_are_400(
        served: tuple[str, GatewayApp], path: str, body: bytes, depth: int) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(path, content=body % (b"[" * depth + b"1" + b"]" * depth),
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if path.startswith("/gateway/"):
        assert (error["code"], error["field"]) == ("contract_violation", "number")
        assert "nested more than 64 deep" in error["message"]
    elif ":predict" in path:
        assert "nested more than" in error


async def test_an_unexpected_error_is_500_and_the_connection_is_kept(served: tuple[str, GatewayApp]) -> None:
    url, app = served

    async def broken(request: Request) -> Response:
        raise RuntimeError("a bug in the gateway")

    # A route whose handler fails as a gateway bug would, among the model routes.
    app.router.routes.insert(0, Route("/gateway/models/broken", broken, methods=["POST"]))
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for path, body in [("/gateway/models/broken", b"{}"), ("/gateway/models/increment_model",
                                                              b'{"number": [1]}')]:
            writer.write(b"POST %s HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            answer = orjson.loads(await reader.readexactly(length))
            if path.endswith("broken"):
                assert head.startswith(b"HTTP/1.1 500 ")
                assert b"x-request-id: " in head
                request_id = head.split(b"x-request-id: ")[1].split(b"\r\n")[0].decode()
                assert answer == {"error": {"code": "internal",
                                            "message": f"internal error (request {request_id}, see the log)"}}
            else:  # the same connection serves the next request
                assert head.startswith(b"HTTP/1.1 200 ")
                assert answer == {"number": [2]}
    finally:
        writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                    body: bytes) -> tuple[bytes, Any]:
    """One POST on an open connection: the answer's head and its JSON body."""
    writer.write(b"POST %s HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    return head, orjson.loads(await reader.readexactly(length))


FAST, STACK = "/gateway/applications/increment_app", "/gateway/models/increment_model"


@pytest.mark.parametrize("path", [FAST, STACK])
@pytest.mark.parametrize(("owner", "hook", "answered"), [
    (RequestObserver, "begin", False),  # observability, before anything is sent
    (Authenticator, "admit", False),  # auth
    (gateway.pipeline, "accepts_gzip", False),  # building the answer's headers, before anything is sent
    (RequestObserver, "end", True),  # observability, once the answer is out
])
async def test_a_fault_in_any_layer_is_answered_and_the_connection_kept(
        served: tuple[str, GatewayApp], monkeypatch: pytest.MonkeyPatch, path: str, owner: object,
        hook: str, answered: bool) -> None:
    url, _ = served
    original = getattr(owner, hook)
    faults: list[str] = []

    def fails_once(self: object, *args: Any) -> Any:
        if not faults:
            faults.append(hook)
            raise RuntimeError(f"a bug in {hook}")
        return original(self, *args)

    monkeypatch.setattr(owner, hook, fails_once)
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head, answer = await _exchange(reader, writer, path, b'{"number": [1]}')
        assert faults == [hook]
        if answered:  # the fault came after a whole answer: it stands
            assert head.startswith(b"HTTP/1.1 200 ")
            assert answer == {"number": [2]}
        else:
            assert head.startswith(b"HTTP/1.1 500 ")
            assert answer["error"]["code"] == "internal"
        head, answer = await _exchange(reader, writer, path, b'{"number": [5]}')  # the same connection
        assert head.startswith(b"HTTP/1.1 200 ")
        assert answer == {"number": [6]}
    finally:
        writer.close()


async def test_error_answers_name_the_model_not_its_address(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "remote.yaml").write_text(
        f"kind: Model\nname: remote\nbackend:\n  protocol: tensorflow-serving\n  target: 127.0.0.1:{port}\n"
        "contract:\n  inputs:\n    x: {type: int32, shape: [-1]}\n  outputs:\n    y: {type: int32, shape: [-1]}\n")
    config = load_config(tmp_path)
    async with (serve_app(create_app(Settings(access_log=False, circuit_failures=2), config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        for _ in range(4):  # unavailable, then the circuit opens
            native = await client.post("/gateway/models/remote", json={"x": [1]})
            tf = await client.post("/v1/models/remote:predict", json={"instances": [1]})
            for response in (native, tf):
                assert response.status_code == 503
                assert str(port) not in response.text
                assert "127.0.0.1" not in response.text
        assert native.json()["error"]["message"].startswith("the backend of model remote is failing")
        assert tf.json()["error"].startswith("the backend of model remote is failing")


async def test_a_model_that_did_not_start_is_503_without_its_paths(example_config: Config) -> None:
    folder = example_config.models[("scaler_model", 1)].folder
    broken = {("scaler_model", 1): f"{folder}/src/func_main.py:2: model scaler_model: syntax error: invalid "
                                   "syntax (in /usr/lib/python3/importlib/util.py); last output:\n"
                                   '  File "/usr/lib/python3/importlib/__init__.py", line 126'}
    config = dataclasses.replace(example_config, models={
        key: dataclasses.replace(model, backend=None) if key in broken else model
        for key, model in example_config.models.items()})
    async with (serve_app(create_app(Settings(access_log=False), config, failed=broken)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        response = await client.post("/gateway/applications/scaler_app",
                                     json={"features": [[1, 2, 3]], "unit": "cm"})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "backend_unavailable",
        "message": "model scaler_model:1 is unavailable: it failed to load: SyntaxError at src/func_main.py:2"}
    assert "/usr/lib" not in response.text


FOLDER = Path("/srv/my models/broken")


@pytest.mark.parametrize(("failure", "message"), [
    (f"runtime exited with code 2; last output:\n  runtime: cannot load {FOLDER}: {FOLDER}/src/func_main.py:2: "
     "model broken: syntax error: '(' was never closed", "it failed to load: SyntaxError at src/func_main.py:2"),
    (f"model broken:1: {FOLDER}/src/func_main.py:7: model broken: importing failed: ValueError: no /data at "
     "10.0.0.1:80", "it failed to load: ValueError at src/func_main.py:7"),
    (f'runtime exited with code 1; last output:\n  File "{FOLDER}/src/util.py", line 3, in <module>',
     "it failed to load: an error at src/util.py:3"),
    ("runtime exited with code -9; last output:\n  connecting to 10.0.0.1:8500 from /home/u/x y/z",
     "its runtime exited with code -9"),
    (f"not healthy within 30s (is {FOLDER} stuck loading?); last output:\n  loading ~/weights/a.bin",
     "its runtime was not ready within 30s"),
    ("model broken:1: install-command 'pip install -r /data/req.txt' failed with exit code 1; last output:\n  x",
     "its install-command failed with exit code 1"),
    ("a reason nobody foresaw, naming /data and db:5432", "its runtime did not start"),
])
def test_a_model_that_did_not_start_is_described_in_the_gateways_words(failure: str, message: str) -> None:
    backend = UnavailableBackend.for_model("broken:1", failure, FOLDER)
    assert backend.reason == f"model broken:1 is unavailable: {message}"
    assert backend.error().log_detail == failure  # the whole of it, for the log
