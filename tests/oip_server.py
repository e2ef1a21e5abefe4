"""A grpc.aio server that behaves like an Open Inference Protocol (KServe v2) server, Triton's
rules where servers differ, for the RPCs the gateway uses (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer), on the project's protos and upstream method paths.

Models:
- `add`: versions 1 and 2; `x` FP32 [-1] -> `y` FP32 [-1], x + 1 (version 1) or x + 10 (2).
- `echo`: version 1; `f32` FP32 [-1, 2], `i64` INT64 [-1], `text` BYTES [-1], `flag` BOOL [-1],
  `half` FP16 [-1] -> the same tensors back, named alike.
- `typed`: version 1; `x` INT32 [-1] -> `y` INT32 [-1] = 2x, always answered in typed contents
  (as MLServer answers a typed request), whatever the request used.
- `failing`: version 1; `code` INT32 [] -> aborts with that gRPC status code (0 echoes it).
- `loading`: known but not loaded: ModelReady is false, other calls fail as Triton fails them
  while a model loads (`loading_code`: UNAVAILABLE; MLServer answers INVALID_ARGUMENT
  "Model loading is not ready yet.").
- `bf16`: version 1, described with a BF16 input (a datatype the gateway has no row for).

Requests are checked as Triton checks them: known inputs with their datatype and a shape that
fits, raw contents for every input or none (one entry per input, in order), a version it has.
Answers are raw when the request was (`typed` excepted), else typed, FP16 (no typed field) raw
beside them. `accepts_raw=False` refuses raw contents (a server that needs typed contents).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf.message import Message

from protos.inference.grpc_service_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ModelReadyResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)
from protos.services import (
    OIP_MODEL_INFER,
    OIP_MODEL_METADATA,
    OIP_MODEL_READY,
    OIP_SERVER_LIVE,
    OIP_SERVER_METADATA,
    OIP_SERVER_READY,
    Method,
)
from tensorcodecs import CodecError
from tensorcodecs.dtypes import dtype_from_oip
from tensorcodecs.oip_tensors import array_to_contents, array_to_raw, contents_to_array, raw_to_array

NDArray = np.ndarray
Function = Callable[[Mapping[str, NDArray]], dict[str, NDArray]]


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Tensor:
    """A tensor's metadata: name, datatype, shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(w in (-1, g) for w, g in zip(self.shape, shape, strict=True))


@dataclass
class Servable:
    """One version of a model."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    run: Function
    typed_answers: bool = False  # answer typed contents even to a raw request


def _add(version: int) -> Servable:
    step = 1.0 if version == 1 else 10.0
    return Servable((Tensor("x", "FP32", (-1,)),), (Tensor("y", "FP32", (-1,)),),
                    lambda x: {"y": (x["x"] + step).astype(np.float32)})


ECHO = (Tensor("f32", "FP32", (-1, 2)), Tensor("i64", "INT64", (-1,)), Tensor("text", "BYTES", (-1,)),
        Tensor("flag", "BOOL", (-1,)), Tensor("half", "FP16", (-1,)))


def _failing(x: Mapping[str, NDArray]) -> dict[str, NDArray]:
    code = int(x["code"])
    if code:
        status = next(s for s in grpc.StatusCode if s.value[0] == code)
        raise Abort(status, f"the model failed with {status.name}")
    return {"code": x["code"]}


def _repository() -> dict[str, dict[int, Servable]]:
    return {
        "add": {1: _add(1), 2: _add(2)},
        "echo": {1: Servable(ECHO, ECHO, dict)},
        "typed": {1: Servable((Tensor("x", "INT32", (-1,)),), (Tensor("y", "INT32", (-1,)),),
                              lambda x: {"y": (x["x"] * 2).astype(np.int32)}, typed_answers=True)},
        "failing": {1: Servable((Tensor("code", "INT32", ()),), (Tensor("code", "INT32", ()),), _failing)},
        "bf16": {1: Servable((Tensor("x", "BF16", (-1,)),), (Tensor("y", "FP32", (-1,)),), dict)},
    }


@dataclass
class FakeOIPServer:
    """The server; `calls` records (method name, request) of every call, `metadata` each
    call's invocation metadata."""

    accepts_raw: bool = True
    repository: dict[str, dict[int, Servable]] = field(default_factory=_repository)
    loading: set[str] = field(default_factory=lambda: {"loading"})
    loading_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    calls: list[tuple[str, Message]] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    delay_s: float = 0.0  # answer ModelInfer this late
    port: int = 0

    def __post_init__(self) -> None:
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def infers(self) -> list[ModelInferRequest]:
        """The ModelInfer requests received, in order."""
        return [request for name, request in list(self.calls)
                if name == "ModelInfer" and isinstance(request, ModelInferRequest)]

    async def start(self) -> int:
        """Listen (again, on the same port after a `stop`)."""
        server = grpc.aio.server()
        handlers: list[tuple[Method[Any, Any], Callable[[Any], Message]]] = [
            (OIP_SERVER_LIVE, self._live), (OIP_SERVER_READY, self._ready), (OIP_MODEL_READY, self._model_ready),
            (OIP_SERVER_METADATA, self._server_metadata), (OIP_MODEL_METADATA, self._model_metadata),
            (OIP_MODEL_INFER, self._infer),
        ]
        methods = {method.name: self._handler(method, handler) for method, handler in handlers}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(OIP_MODEL_INFER.service, methods),))
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def _handler(self, method: Method[Any, Any], handler: Callable[[Any], Message]) -> grpc.RpcMethodHandler[Any, Any]:
        async def call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            self.calls.append((method.name, request))
            self.metadata.append({key: str(value) for key, value in context.invocation_metadata() or ()})
            if self.delay_s and method is OIP_MODEL_INFER:
                await asyncio.sleep(self.delay_s)
            try:
                return handler(request)
            except Abort as error:
                await _abort(context, error.code, error.message)

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=method.request.FromString,
                                                   response_serializer=method.response.SerializeToString)

    # ------------------------------------------------------------ models

    def _find(self, name: str, version: str) -> tuple[int, Servable]:
        if name in self.loading:
            if self.loading_code is grpc.StatusCode.INVALID_ARGUMENT:
                raise Abort(self.loading_code, f"Model {name} is not ready yet.")
            raise Abort(self.loading_code, f"Request for unknown model: '{name}' has no available versions")
        versions = self.repository.get(name)
        if not versions:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")
        if not version:
            number = max(versions)
        elif version.isdecimal() and int(version) in versions:
            number = int(version)
        else:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' version {version} "
                                                   "is not found")
        return number, versions[number]

    # ------------------------------------------------------------ RPCs

    def _live(self, request: ServerLiveRequest) -> ServerLiveResponse:
        return ServerLiveResponse(live=True)

    def _ready(self, request: ServerReadyRequest) -> ServerReadyResponse:
        return ServerReadyResponse(ready=True)

    def _server_metadata(self, request: ServerMetadataRequest) -> ServerMetadataResponse:
        return ServerMetadataResponse(name="fake-oip", version="1", extensions=[])

    def _model_ready(self, request: ModelReadyRequest) -> ModelReadyResponse:
        try:
            self._find(request.name, request.version)
        except Abort:
            return ModelReadyResponse(ready=False)
        return ModelReadyResponse(ready=True)

    def _model_metadata(self, request: ModelMetadataRequest) -> ModelMetadataResponse:
        _, servable = self._find(request.name, request.version)
        response = ModelMetadataResponse(name=request.name, platform="fake",
                                         versions=[str(v) for v in sorted(self.repository[request.name])])
        for tensors, into in ((servable.inputs, response.inputs), (servable.outputs, response.outputs)):
            for tensor in tensors:
                into.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        return response

    def _infer(self, request: ModelInferRequest) -> ModelInferResponse:
        number, servable = self._find(request.model_name, request.model_version)
        raw = list(request.raw_input_contents)
        if raw and not self.accepts_raw:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents are not supported by this server")
        if raw and len(raw) != len(request.inputs):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"expected {len(request.inputs)} raw_input_contents, got {len(raw)}")
        wanted = {tensor.name: tensor for tensor in servable.inputs}
        inputs: dict[str, NDArray] = {}
        for index, tensor in enumerate(request.inputs):
            meta = wanted.get(tensor.name)
            if meta is None:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected inference input '{tensor.name}' for "
                                                              f"model '{request.model_name}'")
            if tensor.datatype != meta.datatype:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                            f"'{request.model_name}' expects '{meta.datatype}'")
            shape = tuple(tensor.shape)
            if not meta.fits(shape):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected shape for input '{tensor.name}' for "
                                                              f"model '{request.model_name}': {list(shape)}")
            try:
                inputs[tensor.name] = (raw_to_array(raw[index], tensor.datatype, shape, tensor.name) if raw
                                       else contents_to_array(tensor.contents, tensor.datatype, shape, tensor.name))
            except CodecError as error:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        missing = sorted(set(wanted) - set(inputs))
        if missing:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected inputs {missing} for model "
                                                          f"'{request.model_name}'")
        results = servable.run(inputs)
        requested = [output.name for output in request.outputs]
        response = ModelInferResponse(model_name=request.model_name, model_version=str(number), id=request.id)
        answer_raw = bool(raw) and not servable.typed_answers
        for meta in servable.outputs:
            if requested and meta.name not in requested:
                continue
            array = np.asarray(results[meta.name], dtype=dtype_from_oip(meta.datatype).numpy)
            output = response.outputs.add(name=meta.name, datatype=meta.datatype, shape=array.shape)
            if answer_raw or not dtype_from_oip(meta.datatype).oip_contents:
                response.raw_output_contents.append(array_to_raw(array, meta.datatype))
            else:
                array_to_contents(array, output.contents, meta.datatype)
        return response


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")
