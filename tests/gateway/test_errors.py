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
    BACKEND_ERRORS,
    GRPC_TO_HTTP,
    BackendError,
    BackendUnavailable,
    BadRequest,
    ContractViolation,
    DeadlineExceeded,
    GatewayError,
    InvalidJSON,
    ModelError,
    NotFound,
    answer_errors,
    codec_errors,
    from_grpc_status,
)
from gateway.manifests import Config, load_config
from gateway.observability import RequestObserver
from gateway.settings import Settings
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest, GetModelMetadataResponse
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse
from tensorcodecs import CodecError
from tests.conftest import free_port, serve_app
from tests.tfserving_server import FakeTFServing


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


def test_a_code_outside_the_table_keeps_its_own_grpc_code() -> None:
    error = from_grpc_status(grpc.StatusCode.OK, None, "h:1")  # as d20565e answered it
    assert type(error) is BackendError
    assert (error.status, error.code, error.grpc_code) == (502, "backend_error", grpc.StatusCode.OK)
    assert error.message == "OK"
    assert error.log_detail == "backend h:1: OK: "
    assert BackendError.grpc_code is grpc.StatusCode.INTERNAL  # the class is not relabelled


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


# Every status a backend can answer with: the answer (HTTP status, machine code) and the kinds
# of gateway error a handler can catch it as. Every one is also a BackendError (a backend failure).
BY_KIND = [
    (grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument", BadRequest),
    (grpc.StatusCode.FAILED_PRECONDITION, 400, "failed_precondition", BadRequest),
    (grpc.StatusCode.OUT_OF_RANGE, 400, "out_of_range", BadRequest),
    (grpc.StatusCode.NOT_FOUND, 404, "not_found", NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists", BackendError),
    (grpc.StatusCode.ABORTED, 409, "aborted", BackendError),
    (grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated", BackendError),
    (grpc.StatusCode.PERMISSION_DENIED, 403, "permission_denied", BackendError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "resource_exhausted", BackendError),
    (grpc.StatusCode.CANCELLED, 499, "cancelled", BackendError),
    (grpc.StatusCode.UNIMPLEMENTED, 501, "unimplemented", BackendError),
    (grpc.StatusCode.UNAVAILABLE, 503, "backend_unavailable", BackendUnavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "deadline_exceeded", DeadlineExceeded),
    (grpc.StatusCode.INTERNAL, 500, "model_error", ModelError),
    (grpc.StatusCode.UNKNOWN, 500, "model_error", ModelError),
    (grpc.StatusCode.DATA_LOSS, 500, "data_loss", ModelError),
]
# The kinds no backend status is (so that catching them never hides a backend's failure).
CLIENT_ONLY = (InvalidJSON, ContractViolation)


def test_the_table_covers_every_status_caught_by_kind() -> None:
    assert {code for code, *_ in BY_KIND} == set(BACKEND_ERRORS) == set(GRPC_TO_HTTP)


@pytest.mark.parametrize(("code", "status", "machine_code", "kind"), BY_KIND)
def test_a_backends_status_is_caught_by_its_kind(code: grpc.StatusCode, status: int, machine_code: str,
                                                 kind: type[GatewayError]) -> None:
    def fail() -> None:
        raise from_grpc_status(code, "details", "10.0.0.7:8500", "toy")

    with pytest.raises(kind) as caught:
        fail()
    error = caught.value
    assert isinstance(error, BackendError)  # what the breaker, health checks and lookups count
    assert not isinstance(error, CLIENT_ONLY)
    assert (error.status, error.code, error.grpc_code) == (status, machine_code, code)
    assert GRPC_TO_HTTP[code] == (status, machine_code)
    # The class says it all: nothing is relabelled on the instance.
    assert not {"status", "code", "grpc_code"} & set(vars(error))
    assert (type(error).status, type(error).code, type(error).grpc_code) == (status, machine_code, code)
    assert error.log_detail == f"backend 10.0.0.7:8500: {code.name}: details"


@pytest.mark.parametrize(("code", "kind"), [(code, kind) for code, _, _, kind in BY_KIND if kind is not BackendError])
def test_other_kinds_do_not_catch_a_status(code: grpc.StatusCode, kind: type[GatewayError]) -> None:
    others = {k for _, _, _, k in BY_KIND} - {kind, BackendError}
    error = from_grpc_status(code, None, "h:1")
    assert [other.__name__ for other in others if isinstance(error, other)] == []


def test_each_status_raises_a_fresh_error() -> None:
    first = from_grpc_status(grpc.StatusCode.NOT_FOUND, "no model", "h:1", "a")
    second = from_grpc_status(grpc.StatusCode.NOT_FOUND, "no model", "h:1", "b")
    assert first is not second
    assert type(first) is type(second) is BACKEND_ERRORS[grpc.StatusCode.NOT_FOUND]
    assert first.message == second.message == "no model"
    assert first.to_dict() == {"error": {"code": "not_found", "message": "no model"}}


def test_a_backend_status_with_the_retry_of_its_kind() -> None:
    assert from_grpc_status(grpc.StatusCode.UNAVAILABLE, None, "h:1").retry_after_s == 1
    # RESOURCE_EXHAUSTED is 429 like TooManyRequests, but the backend named no time to wait.
    assert from_grpc_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", "h:1").retry_after_s is None


# ---------------------------------------------------------------- codec errors


def _codec_failure(field: str | None = None) -> CodecError:
    return CodecError("expected an integer (int32), got 1.5", field=field)


@pytest.mark.parametrize("kind", [ContractViolation, InvalidJSON, BadRequest])
def test_a_codec_error_becomes_the_kind_the_step_names(kind: type[GatewayError]) -> None:
    error = codec_errors(kind).translate(_codec_failure("number[2]"))
    assert type(error) is kind
    assert (error.message, error.field) == ("expected an integer (int32), got 1.5", "number[2]")
    assert error.to_dict() == {"error": {"code": kind.code, "message": "expected an integer (int32), got 1.5",
                                         "field": "number[2]"}}
    assert error.log_detail is None


def test_a_field_given_to_the_step_names_the_input() -> None:
    error = codec_errors(ContractViolation, field="x").translate(_codec_failure())
    assert (error.field, error.to_dict()["error"]["field"]) == ("x", "x")


def test_one_step_translates_every_failure_into_a_new_error() -> None:
    step = codec_errors(ContractViolation)
    first, second = step.translate(_codec_failure("a")), step.translate(CodecError("again", field="b"))
    assert first is not second
    assert [(e.message, e.field) for e in (first, second)] == [
        ("expected an integer (int32), got 1.5", "a"), ("again", "b")]
    assert (step.kind, step.field) == (ContractViolation, None)  # nothing of a use stays behind


def test_a_codec_error_in_a_backends_answer_is_the_backends_failure() -> None:
    error = answer_errors("toy:1", "10.0.0.7:8500", "a malformed tensor").translate(_codec_failure("output_1"))
    assert type(error) is BackendError
    assert error.status == 502
    assert error.message == ("the backend of model toy:1 answered a malformed tensor: "
                             "output_1: expected an integer (int32), got 1.5")
    assert error.field is None  # a field names a request's input, not an answer's
    assert error.log_detail == "backend 10.0.0.7:8500"
    assert "10.0.0.7" not in str(error.to_dict())
    assert isinstance(answer_errors("toy:1", "h:1", "unusable metadata", ModelError).translate(_codec_failure()),
                      ModelError)


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


class _UnusableAnswers(FakeTFServing):
    """A TF Serving that answers every call, with nothing a client can be given: metadata
    without its signature_def, predictions without outputs, empty classify and regress results."""

    def _metadata(self, request: GetModelMetadataRequest) -> GetModelMetadataResponse:
        return GetModelMetadataResponse(model_spec=ModelSpec(name=request.model_spec.name))

    def _predict(self, request: PredictRequest) -> PredictResponse:
        return PredictResponse(model_spec=ModelSpec(name=request.model_spec.name))

    def _classify(self, request: ClassificationRequest) -> ClassificationResponse:
        return ClassificationResponse()

    def _regress(self, request: RegressionRequest) -> RegressionResponse:
        return RegressionResponse()


NO_SIGNATURE_DEF = "Failed to find 'signature_def' key in the GetModelMetadataResponse metadata map."
UNUSABLE = f"the backend of model discovered:0 answered unusable metadata: {NO_SIGNATURE_DEF}"


async def test_answers_a_backend_gave_that_cannot_be_passed_on(tmp_path: Path) -> None:
    # What TF Serving answers for them on /v1 (its 400 for what its JSON writer refuses, 500 for
    # metadata it cannot convert); where the gateway needs the answer itself, the backend's failure.
    server = _UnusableAnswers()
    await server.start()
    try:
        (tmp_path / "models").mkdir()
        backend = f"backend:\n  protocol: tensorflow-serving\n  target: {server.target}\n  model_name: Toy\n"
        (tmp_path / "models" / "declared.yaml").write_text(
            f"kind: Model\nname: declared\n{backend}contract:\n  inputs:\n    x: {{type: float32, shape: [-1]}}\n"
            "  outputs:\n    y: {type: float32, shape: [-1]}\n")
        (tmp_path / "models" / "discovered.yaml").write_text(f"kind: Model\nname: discovered\n{backend}")
        async with (serve_app(create_app(Settings(access_log=False), load_config(tmp_path))) as url,
                    httpx.AsyncClient(base_url=url, timeout=10) as client):
            answers = [
                await client.get("/v1/models/declared/metadata"),
                await client.post("/v1/models/declared:predict", json={"instances": [1.0]}),
                await client.post("/v1/models/declared:classify", json={"examples": [{"x": 1.0}]}),
                await client.post("/v1/models/declared:regress", json={"examples": [{"x": 1.0}]}),
                await client.post("/v1/models/discovered:predict", json={"instances": [1.0]}),
                await client.post("/gateway/models/discovered", json={"x": [1.0]}),
            ]
    finally:
        await server.stop()
    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (500, {"error": NO_SIGNATURE_DEF}),
        (400, {"error": "Cannot convert empty tensor map to JSON"}),
        (400, {"error": "Cannot convert empty ClassificationResults to JSON"}),
        (400, {"error": "Cannot convert empty RegressionResults to JSON"}),
        (503, {"error": UNUSABLE}),  # held off after discovery at start failed the same way
        (503, {"error": {"code": "backend_unavailable", "message": UNUSABLE}}),
    ]
    assert answers[-1].headers["retry-after"] == "1"
    assert server.target not in str([answer.text for answer in answers])
