"""A grpc.aio server that behaves like TensorFlow Serving for the RPCs the gateway uses.

Models (TF Serving names):
- `Toy`: versions 1 and 2, labels stable -> 1, canary -> 2. `input_1` float [-1, 2] ->
  `output_1` float [-1, 1]; version 1 answers 2*a + 3*b, version 2 answers (a + b) / 10.
  Signature `scaled` (version 2 only) answers `scaled` = 100 * input. Classify and Regress
  read the float feature `x` of each example (plus `bias` from the context).
- `Toy_double`: version 1, `input_1` float [-1, 2] -> `output_1` double [-1, 1] = a * b.
- `Echo`: version 1, `text` string [-1] -> `text` and `text_bytes` (the same strings).
- `Errors`: version 1, `code` int32 scalar -> aborts with that gRPC status code (0 echoes).

A model missing from `loaded` answers NOT_FOUND to every call, as TF Serving does while it is
still loading a model of its config. Like TF Serving it has no grpc.health.v1 service, answers
in typed `*_val` fields or in `tensor_content` (`typed`), and names the effective model spec in
every answer.
HandleReloadConfigRequest applies version policies and labels to the models it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf.message import Message

from protos.services import (
    SIGNATURE_DEF_MAP_TYPE_URL,
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    TF_RELOAD_CONFIG,
    Method,
)
from protos.tensorflow.example_pb2 import Example
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    SignatureDefMap,
)
from protos.tensorflow_serving.get_model_status_pb2 import (
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelVersionStatus,
)
from protos.tensorflow_serving.input_pb2 import Input
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest, ReloadConfigResponse
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.signature_def import signature_to_def
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor

NDArray = np.ndarray
Function = Callable[[Mapping[str, NDArray]], dict[str, NDArray]]
DEFAULT = "serving_default"


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _spec(name: str, dtype: str, shape: tuple[int, ...] | None) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


@dataclass
class Servable:
    """One version of a model: its signatures and the functions behind them."""

    signatures: dict[str, tuple[Signature, Function]]


def _toy(version: int) -> Servable:
    inputs = {"input_1": _spec("input_1", "float32", (-1, 2))}
    outputs = {"output_1": _spec("output_1", "float32", (-1, 1))}

    def run(x: Mapping[str, NDArray]) -> dict[str, NDArray]:
        a, b = x["input_1"][:, :1], x["input_1"][:, 1:]
        value = 2 * a + 3 * b if version == 1 else (a + b) / 10
        return {"output_1": value.astype(np.float32)}

    signatures: dict[str, tuple[Signature, Function]] = {DEFAULT: (Signature(DEFAULT, inputs, outputs), run)}
    if version == 2:
        scaled = Signature("scaled", inputs, {"scaled": _spec("scaled", "float32", (-1, 2))})
        signatures["scaled"] = (scaled, lambda x: {"scaled": (x["input_1"] * 100).astype(np.float32)})
    return Servable(signatures)


def _toy_double() -> Servable:
    signature = Signature(DEFAULT, {"input_1": _spec("input_1", "float32", (-1, 2))},
                          {"output_1": _spec("output_1", "float64", (-1, 1))})

    def run(x: Mapping[str, NDArray]) -> dict[str, NDArray]:
        values = x["input_1"].astype(np.float64)
        return {"output_1": values[:, :1] * values[:, 1:]}

    return Servable({DEFAULT: (signature, run)})


def _echo() -> Servable:
    signature = Signature(DEFAULT, {"text": _spec("text", "string", (-1,))},
                          {"text": _spec("text", "string", (-1,)),
                           "text_bytes": _spec("text_bytes", "string", (-1,))})
    return Servable({DEFAULT: (signature, lambda x: {"text": x["text"], "text_bytes": x["text"]})})


def _errors() -> Servable:
    signature = Signature(DEFAULT, {"code": _spec("code", "int32", ())}, {"code": _spec("code", "int32", ())})

    def run(x: Mapping[str, NDArray]) -> dict[str, NDArray]:
        code = int(x["code"])
        if code:
            status = next(s for s in grpc.StatusCode if s.value[0] == code)
            raise Abort(status, f"the model failed with {status.name}")
        return {"code": x["code"]}

    return Servable({DEFAULT: (signature, run)})


def _repository() -> dict[str, dict[int, Servable]]:
    return {"Toy": {1: _toy(1), 2: _toy(2)}, "Toy_double": {1: _toy_double()}, "Echo": {1: _echo()},
            "Errors": {1: _errors()}}


@dataclass
class FakeTFServing:
    """The server; `calls` records (method name, request) of every call."""

    typed: bool = True
    repository: dict[str, dict[int, Servable]] = field(default_factory=_repository)
    calls: list[tuple[str, Message]] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)  # each call's invocation metadata
    delay_s: float = 0.0  # answer Predict this late
    cancelled: int = 0  # calls the client cancelled while they were being served
    hold: asyncio.Event | None = None  # when given, every call waits until it is set
    metadata_unavailable: bool = False  # GetModelMetadata answers UNAVAILABLE
    loose_outputs: bool = False  # answer outputs in the dtype the function gave, not the signature's
    host: str = "127.0.0.1"  # any loopback address (Linux routes all of 127/8 to lo)
    peers: list[str] = field(default_factory=list)  # each call's client address (ipv4:addr:port)

    def __post_init__(self) -> None:
        self.loaded: dict[str, dict[int, Servable]] = {name: dict(v) for name, v in self.repository.items()}
        self.labels: dict[str, dict[str, int]] = {"Toy": {"stable": 1, "canary": 2}}
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, credentials: grpc.ServerCredentials | None = None, reuse_port: bool = True) -> int:
        """Listen on `port` (0: any free one); without `reuse_port` a port taken is an error, not shared."""
        server = grpc.aio.server(options=() if reuse_port else (("grpc.so_reuseport", 0),))
        services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        handlers: list[tuple[Method[Any, Any], Callable[[Any], Message]]] = [
            (TF_PREDICT, self._predict), (TF_GET_MODEL_METADATA, self._metadata),
            (TF_CLASSIFY, self._classify), (TF_REGRESS, self._regress),
            (TF_GET_MODEL_STATUS, self._status), (TF_RELOAD_CONFIG, self._reload),
        ]
        for method, handler in handlers:
            services.setdefault(method.service, {})[method.name] = self._handler(method, handler)
        server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(name, methods) for name, methods in services.items()))
        address = f"{self.host}:{self.port}"
        self.port = (server.add_insecure_port(address) if credentials is None
                     else server.add_secure_port(address, credentials))
        await server.start()
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    def _handler(self, method: Method[Any, Any],
                 handler: Callable[[Any], Message]) -> grpc.RpcMethodHandler[Any, Any]:
        async def call(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            self.calls.append((method.name, request))
            self.peers.append(context.peer())
            self.metadata.append({key: str(value) for key, value in context.invocation_metadata() or ()})
            if self.hold is not None:
                await self.hold.wait()
            if self.delay_s and method is TF_PREDICT:
                try:
                    await asyncio.sleep(self.delay_s)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            try:
                return handler(request)
            except Abort as error:
                await _abort(context, error.code, error.message)

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=method.request.FromString,
                                                   response_serializer=method.response.SerializeToString)

    # ------------------------------------------------------------ servables

    def _find(self, spec: ModelSpec) -> tuple[int, Servable]:
        versions = self.loaded.get(spec.name)
        if not versions:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
        if spec.HasField("version_label"):
            labels = self.labels.get(spec.name, {})
            if spec.version_label not in labels:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"Unrecognized servable version label: {spec.version_label}")
            version = labels[spec.version_label]
        elif spec.HasField("version"):
            version = spec.version.value
        else:
            version = max(versions)
        if version not in versions:
            raise Abort(grpc.StatusCode.NOT_FOUND,
                        f"Servable not found for request: Specific({spec.name}, {version})")
        return version, versions[version]

    def _signature(self, spec: ModelSpec, servable: Servable) -> tuple[Signature, Function]:
        name = spec.signature_name or DEFAULT
        if name not in servable.signatures:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f'Serving signature name: "{name}" not found in signature def')
        return servable.signatures[name]

    def _answer_spec(self, spec: ModelSpec, version: int, signature: str | None) -> ModelSpec:
        answer = ModelSpec(name=spec.name)
        answer.version.value = version
        if signature is not None:
            answer.signature_name = signature
        return answer

    # ------------------------------------------------------------ RPCs

    def _predict(self, request: PredictRequest) -> PredictResponse:
        version, servable = self._find(request.model_spec)
        signature, function = self._signature(request.model_spec, servable)
        for name in signature.inputs:
            if name not in request.inputs:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"input tensor alias not found in signature: {name}")
        inputs = {name: decode_tensor(request.inputs[name]) for name in signature.inputs}
        response = PredictResponse(model_spec=self._answer_spec(request.model_spec, version, signature.name))
        for name, array in function(inputs).items():
            dtype = None if self.loose_outputs else signature.outputs[name].dtype
            response.outputs[name].CopyFrom(encode_tensor(array, dtype, typed=self.typed))
        return response

    def _metadata(self, request: GetModelMetadataRequest) -> GetModelMetadataResponse:
        if self.metadata_unavailable:
            raise Abort(grpc.StatusCode.UNAVAILABLE, "metadata unavailable")
        if list(request.metadata_field) != ["signature_def"]:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field must be signature_def")
        version, servable = self._find(request.model_spec)
        signatures = SignatureDefMap()
        for name, (signature, _) in servable.signatures.items():
            signatures.signature_def[name].CopyFrom(signature_to_def(signature))
        response = GetModelMetadataResponse(model_spec=self._answer_spec(request.model_spec, version, None))
        packed = response.metadata["signature_def"]
        packed.type_url = SIGNATURE_DEF_MAP_TYPE_URL
        packed.value = signatures.SerializeToString()
        return response

    def _status(self, request: GetModelStatusRequest) -> GetModelStatusResponse:
        spec = request.model_spec
        if not self.loaded.get(spec.name):
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        response = GetModelStatusResponse()
        if spec.HasField("version") or spec.HasField("version_label"):
            if spec.HasField("version") and spec.version.value not in self.loaded.get(spec.name, {}):
                raise Abort(grpc.StatusCode.NOT_FOUND,
                            f"Could not find version {spec.version.value} of model {spec.name}")
            versions = [self._find(spec)[0]]
        else:
            versions = sorted(self.loaded.get(spec.name, {}), reverse=True)
        for version in versions:
            entry = response.model_version_status.add(version=version, state=ModelVersionStatus.AVAILABLE)
            entry.status.SetInParent()
        return response

    def _examples(self, request_input: Input) -> list[tuple[list[float], float]]:
        if request_input.HasField("example_list_with_context"):
            listed = request_input.example_list_with_context
            bias = _floats(listed.context, "bias")
            return [(_floats(e, "x"), sum(bias)) for e in listed.examples]
        return [(_floats(e, "x"), 0.0) for e in request_input.example_list.examples]

    def _classify(self, request: ClassificationRequest) -> ClassificationResponse:
        version, _ = self._find(request.model_spec)
        response = ClassificationResponse(model_spec=self._answer_spec(request.model_spec, version, DEFAULT))
        for values, bias in self._examples(request.input):
            score = 1 / (1 + np.exp(-(sum(values) + bias)))
            classes = response.result.classifications.add().classes
            classes.add(label="pos", score=float(score))
            classes.add(label="neg", score=float(1 - score))
        return response

    def _regress(self, request: RegressionRequest) -> RegressionResponse:
        version, _ = self._find(request.model_spec)
        response = RegressionResponse(model_spec=self._answer_spec(request.model_spec, version, DEFAULT))
        for values, bias in self._examples(request.input):
            response.result.regressions.add(value=sum(values) + bias)
        return response

    def _reload(self, request: ReloadConfigRequest) -> ReloadConfigResponse:
        response = ReloadConfigResponse()
        response.status.SetInParent()
        loaded: dict[str, dict[int, Servable]] = {}
        labels: dict[str, dict[str, int]] = {}
        for config in request.config.model_config_list.config:
            available = self.repository.get(config.name)
            if available is None:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"no model {config.name} in the repository")
            policy = config.model_version_policy
            choice = policy.WhichOneof("policy_choice")
            if choice == "specific":
                versions = [v for v in policy.specific.versions if v in available]
            elif choice == "all":
                versions = sorted(available)
            else:
                versions = sorted(available)[-max(policy.latest.num_versions, 1):]
            loaded[config.name] = {v: available[v] for v in versions}
            for version in config.version_labels.values():
                if version not in loaded[config.name]:
                    response.status.error_code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                    response.status.error_message = (f"Request to assign label to version {version} of "
                                                     f"model {config.name}, which is not currently available")
                    return response
            labels[config.name] = dict(config.version_labels)
        self.loaded, self.labels = loaded, labels
        return response


def _floats(example: Example, name: str) -> list[float]:
    feature = example.features.feature.get(name)
    return list(feature.float_list.value) if feature is not None else []


async def _abort(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode,
                 message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")
