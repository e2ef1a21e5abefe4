"""The runtime's gRPC server, all on one port:

- tensorflow.serving.PredictionService: Predict, GetModelMetadata, and Classify and Regress,
  which answer INVALID_ARGUMENT as TF Serving does for a predict signature
- tensorflow.serving.ModelService: GetModelStatus
- hydrosphere.serving.runtime.PredictionService: Predict (Hydrosphere 3.x tensors)
- gateway.runtime.Runtime: PredictMany (several independent Predict calls in one, each
  answered with its response or its own status; the gateway sends concurrent requests so)
- grpc.health.v1.Health

and, for a gateway on the same machine, Predict and PredictMany on a Unix socket too
(runtime.local: the local wire, without gRPC's per-call cost).

A synchronous `grpc.server`: its thread pool bounds the calls that run at once, runs
synchronous model functions directly, and answers more calls per core than grpc.aio.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelfolder import RUNTIME_THREADS, ModelDefinition
from protos.hydrosphere import runtime_pb2 as hydro
from protos.runtime.calls_pb2 import PredictManyRequest, PredictManyResponse
from protos.services import (
    HYDRO_PREDICT,
    RUNTIME_PREDICT_MANY,
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    Method,
)
from protos.tensorflow.meta_graph_pb2 import SignatureDef
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest, GetModelMetadataResponse
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest, GetModelStatusResponse
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.prediction_log_pb2 import PredictionLog
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse
from runtime.errors import (
    InputError,
    NotServedError,
    OutputError,
    RuntimeCallError,
    SignatureNotFoundError,
    UnsupportedError,
)
from runtime.exits import exit_runtime
from runtime.hydrosphere import from_tensor_proto, to_tensor_proto
from runtime.invokers import EventLoopInvoker, InlineInvoker, Invoker, WorkerPoolInvoker
from runtime.local import LocalListener
from runtime.metadata import DEFAULT_SIGNATURE, metadata_response, signature_names, status_response
from runtime.model import load_manifest, load_model
from runtime.signature_checks import classification_error, regression_error
from runtime.styles import Attached
from tensorcodecs import CodecError, dtype_from_enum
from tensorcodecs.signature_def import signature_to_def
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor

log = logging.getLogger("runtime")

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
]

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class ModelServer:
    """Serves one model version on `host:port` (and on the Unix socket `local_socket`, when
    given) until stopped."""

    def __init__(self, manifest: ModelDefinition, invoker: Invoker, host: str = "127.0.0.1",
                 port: int = 0, threads: int = RUNTIME_THREADS, local_socket: str | None = None) -> None:
        self.manifest = manifest
        self.invoker = invoker
        self.address = f"{host}:{port}"
        self._health = health.HealthServicer()
        self._closer: threading.Thread | None = None
        max_calls = max(threads, 2 * manifest.workers)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_calls, thread_name_prefix="model"),
                                   options=SERVER_OPTIONS)
        self._local = None if local_socket is None else LocalListener(
            local_socket, {TF_PREDICT.path: self._predict, RUNTIME_PREDICT_MANY.path: self._predict_many},
            _status_of, max_calls)
        self.port = 0
        self.seconds_per_request = 0.0

    @classmethod
    def for_folder(cls, folder: Path, *, chdir: bool = True, host: str = "127.0.0.1", port: int = 0,
                   threads: int = RUNTIME_THREADS, local_socket: str | None = None) -> ModelServer:
        """Load the model folder and choose where its function runs."""
        manifest, _ = load_manifest(folder)
        invoker: Invoker
        if manifest.workers > 1:
            invoker = WorkerPoolInvoker(folder, manifest.workers)
        else:
            model = load_model(folder, chdir=chdir)
            invoker = EventLoopInvoker(model) if model.is_async else InlineInvoker(model, threads)
        return cls(manifest, invoker, host, port, threads, local_socket)

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        handlers: list[tuple[Method[Any, Any], Callable[[Any], Any]]] = [
            (TF_PREDICT, self._predict),
            (TF_GET_MODEL_METADATA, self._metadata),
            (TF_GET_MODEL_STATUS, self._status),
            (HYDRO_PREDICT, self._hydro_predict),
            (RUNTIME_PREDICT_MANY, self._predict_many),
            (TF_CLASSIFY, self._classify),
            (TF_REGRESS, self._regress),
        ]
        for method, handler in handlers:
            services.setdefault(method.service, {})[method.name] = _unary(method, handler)
        self._server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(name, handlers) for name, handlers in services.items())
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = self._server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.address}")
        if self._local is not None:
            self._local.start()  # before gRPC: a runtime that cannot listen here does not serve at all
        self._server.start()
        for service in ("", *services):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def stop(self, grace: float = 5.0) -> threading.Event:
        """Stop accepting calls; in-flight calls get `grace` seconds to finish."""
        self._health.enter_graceful_shutdown()
        if self._local is not None:
            self._local.stop()
        stopped: threading.Event = self._server.stop(grace)
        self._closer = threading.Thread(target=self._close_after, args=(stopped, grace), daemon=True)
        self._closer.start()
        return stopped

    def _close_after(self, stopped: threading.Event, grace: float) -> None:
        deadline = time.monotonic() + grace
        stopped.wait()
        if self._local is not None:
            self._local.wait_idle(max(deadline - time.monotonic(), 0.0))
        self.invoker.close()

    def wait(self) -> None:
        """Block until the server has stopped and the model's invoker is closed."""
        self._server.wait_for_termination()
        if self._closer is not None:
            self._closer.join()

    def replay(self, log: PredictionLog) -> None:
        """Answer a warmup record's request through the handler its call would reach (a
        RuntimeCallError when it fails as that call would). As in TF Serving, the record's
        model name and version are not checked (it runs on the version being loaded); its
        signature name is."""
        kind = log.WhichOneof("log_type")
        timing = self.seconds_per_request  # cold calls would skew what PredictMany reports
        try:
            with self.invoker.warming():
                if kind == "predict_log":
                    self._predict(_for_this_version(log.predict_log.request))
                elif kind == "predict_streamed_log":  # one request (modelfolder.warmup checks it), as TFRT
                    self._predict(_for_this_version(log.predict_streamed_log.request[0]))
                elif kind == "classify_log":
                    self._classify(_for_this_version(log.classify_log.request))
                elif kind == "regress_log":
                    self._regress(_for_this_version(log.regress_log.request))
                else:  # TF Serving's MultiInference, which this runtime does not serve
                    raise UnsupportedError(f"model {self.manifest.name} does not serve {kind} (MultiInference)")
        finally:
            self.seconds_per_request = timing

    # ------------------------------------------------------------ handlers

    def _predict(self, request: PredictRequest, attached: Sequence[Attached] = ()) -> PredictResponse:
        self._check_spec(request.model_spec, check_signature=True)
        started = time.perf_counter()
        try:
            return self._stamp(request, self.invoker(request, attached[0] if attached else None))
        finally:
            self._observe(time.perf_counter() - started, 1)

    def _observe(self, seconds: float, requests: int) -> None:
        """Keep the moving average of time spent per request (reported by PredictMany)."""
        self.seconds_per_request += 0.2 * (seconds / requests - self.seconds_per_request)

    def _predict_many(self, request: PredictManyRequest, attached: Sequence[Attached] = ()) -> PredictManyResponse:
        started = time.perf_counter()
        try:
            response = self._answer_many(request, attached)
        finally:
            self._observe(time.perf_counter() - started, max(len(request.requests), 1))
        response.seconds_per_request = self.seconds_per_request
        return response

    def _answer_many(self, request: PredictManyRequest, attached: Sequence[Attached]) -> PredictManyResponse:
        response = PredictManyResponse()
        results = [response.results.add() for _ in request.requests]
        accepted: list[int] = []
        for index, item in enumerate(request.requests):
            try:
                self._check_spec(item.model_spec, check_signature=True)
            except RuntimeCallError as error:
                results[index].code, results[index].message = error.code.value[0], error.message
            else:
                accepted.append(index)
        outcomes = self.invoker.many([request.requests[i] for i in accepted],
                                     [attached[i] for i in accepted] if attached else None)
        for index, outcome in zip(accepted, outcomes, strict=True):
            result = results[index]
            if isinstance(outcome, PredictResponse):
                result.response.CopyFrom(self._stamp(request.requests[index], outcome))
                continue
            request_id = request.request_ids[index] if index < len(request.request_ids) else ""
            code, message = _status_of(outcome, f"{RUNTIME_PREDICT_MANY.path} (request {request_id})")
            result.code, result.message = code.value[0], message
        return response

    def _stamp(self, request: PredictRequest, response: PredictResponse) -> PredictResponse:
        """Say which model spec answered, as TF Serving does (`response` is the runtime's own:
        styles.to_response never hands back a message the model's function holds)."""
        response.model_spec.name = self.manifest.name
        response.model_spec.version.value = self.manifest.version
        response.model_spec.signature_name = request.model_spec.signature_name or self.manifest.signature.name
        return response

    def _metadata(self, request: GetModelMetadataRequest) -> GetModelMetadataResponse:
        self._check_spec(request.model_spec, check_signature=False)
        return metadata_response(self.manifest, list(request.metadata_field))

    def _status(self, request: GetModelStatusRequest) -> GetModelStatusResponse:
        self._check_spec(request.model_spec, check_signature=False)
        return status_response(self.manifest)

    def _hydro_predict(self, request: hydro.PredictRequest) -> hydro.PredictResponse:
        tf_request = PredictRequest()
        for name, tensor in request.inputs.items():
            try:
                tf_request.inputs[name].CopyFrom(to_tensor_proto(tensor))
            except CodecError as error:
                raise InputError(f"input {name!r}: {error}") from None
        tf_response = self.invoker(tf_request)
        response = hydro.PredictResponse()
        for name, proto in tf_response.outputs.items():
            # Hydrosphere's clients (hydrosdk's tensor_proto_to_np) read the typed fields only.
            try:
                typed = encode_tensor(decode_tensor(proto), dtype_from_enum(proto.dtype), typed=True)
            except CodecError as error:  # checked already; a model's answer is never a server fault
                raise OutputError(f"model {self.manifest.name}: output {name!r} is malformed: {error}") from None
            response.outputs[name].CopyFrom(from_tensor_proto(typed))
        return response

    def _classify(self, request: ClassificationRequest) -> ClassificationResponse:
        self._refuse_method(request.model_spec, classification_error)

    def _regress(self, request: RegressionRequest) -> RegressionResponse:
        self._refuse_method(request.model_spec, regression_error)

    def _refuse_method(self, spec: ModelSpec, check: Callable[[SignatureDef], str | None]) -> NoReturn:
        """TF Serving's answer (classifier.cc, regressor.cc) to a Classify or Regress call
        on the model's one signature, a predict signature."""
        self._check_spec(spec, check_signature=False)
        name = spec.signature_name or DEFAULT_SIGNATURE
        if name not in signature_names(self.manifest):
            raise InputError(f"No signature was found with the name: {name}")
        error = check(signature_to_def(self.manifest.signature))
        if error is not None:
            raise InputError(error)
        # TF would feed the examples, serialized, to the input: a Python model's contract
        # that names its tensors so is served by Predict only.
        raise UnsupportedError(f"model {self.manifest.name} is served by Predict only: its signature "
                               "is a predict signature, which the runtime does not run on tf.Examples")

    def _check_spec(self, spec: ModelSpec, *, check_signature: bool) -> None:
        manifest = self.manifest
        if spec.name and spec.name != manifest.name:
            raise NotServedError(f"model {spec.name!r} is not served here (this runtime serves "
                                 f"{manifest.name!r})")
        if spec.HasField("version") and spec.version.value != manifest.version:
            raise NotServedError(f"model {manifest.name} has no version {spec.version.value} "
                                 f"(this runtime serves version {manifest.version})")
        if spec.HasField("version_label"):
            raise NotServedError(f"model {manifest.name} has no version label {spec.version_label!r}")
        if check_signature and spec.signature_name not in signature_names(manifest):
            # predict_util.cc's answer (the gateway's /v1 routes answer the REST handler's own)
            raise SignatureNotFoundError(
                f'Serving signature key "{spec.signature_name or DEFAULT_SIGNATURE}" not found.')


def _for_this_version(request: RequestT) -> RequestT:
    """A copy of `request` whose model spec names no model or version: only its signature."""
    copy = type(request)()
    copy.CopyFrom(request)
    spec = copy.model_spec  # type: ignore[attr-defined]
    spec.ClearField("name")
    spec.ClearField("version_choice")
    return copy


def _unary(method: Method[RequestT, ResponseT],
           handler: Callable[[RequestT], ResponseT]) -> grpc.RpcMethodHandler[RequestT, ResponseT]:
    """A gRPC handler for `handler` that turns RuntimeCallErrors into gRPC statuses."""

    def call(request: RequestT, context: grpc.ServicerContext) -> ResponseT:
        try:
            return handler(request)
        except Exception as error:  # noqa: BLE001 - every failure becomes a gRPC status
            _abort(context, *_status_of(error, method.path))
        except SystemExit as exit_:  # gRPC's thread pool would swallow it and the call hang
            exit_runtime(exit_, method.path)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=method.request.FromString,
        response_serializer=method.response.SerializeToString,
    )


def _status_of(error: Exception, where: str) -> tuple[grpc.StatusCode, str]:
    """The gRPC status a failed call answers with; unexpected errors are logged with `where`."""
    if isinstance(error, RuntimeCallError):
        return error.code, error.message
    log.error("%s failed", where, exc_info=error)
    return grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


