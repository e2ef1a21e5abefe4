"""A backend speaking TensorFlow Serving's gRPC API (TF Serving itself, the embedded runtime).

PredictionService (Predict, Classify, Regress, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest) on one pooled channel; to an embedded runtime,
Predict and PredictMany take its Unix socket instead (gateway.backends.local). Health: `grpc.health.v1`
when the server has it; TF Serving does not, so on UNIMPLEMENTED the backend asks
GetModelStatus instead and is healthy when its version (any version, for a floating model)
is AVAILABLE. Predictions go through a call scheduler per model spec when the model has one
(gateway.backends.sharing): the embedded runtime's PredictMany, or opt-in batching (only for
contracts whose every input has a leading -1 dimension).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from gateway.backends.base import EffectiveSpec, NDArray, Prediction, Selector
from gateway.backends.coalesce import Coalescer
from gateway.backends.local import LocalCallError, LocalChannel, LocalUnreachable
from gateway.backends.resilience import CircuitBreaker, CircuitState
from gateway.backends.sharing import CallScheduler, Multiplexer, SharedAnswer
from gateway.errors import BackendError, GatewayError, from_grpc_status, grpc_code
from gateway.manifests import ModelManifest
from gateway.observability import request_metadata
from protos.local_wire import ATTACH_MIN, METHOD_NUMBERS, Attachments
from protos.runtime.calls_pb2 import PredictManyRequest
from protos.services import (
    RUNTIME_PREDICT_MANY,
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    TF_RELOAD_CONFIG,
    Method,
)
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest, GetModelMetadataResponse
from protos.tensorflow_serving.get_model_status_pb2 import (
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelVersionStatus,
)
from protos.tensorflow_serving.input_pb2 import Input
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest, ReloadConfigResponse
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.model_server_config_pb2 import ModelServerConfig
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.signature_def import SIGNATURE_DEF
from tensorcodecs.tensor_proto import attached_array, decode_tensor, fill_tensor, tensor_header

log = logging.getLogger("gateway.backends")

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
NUMERIC_KINDS = frozenset("biufc")  # numpy kinds whose values can travel as raw bytes
MAX_SCHEDULERS = 16  # model specs (versions, labels, signatures) with a call scheduler each

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class TFServingBackend:
    """One model (a pinned version, or every version when floating) behind TF Serving's API."""

    def __init__(self, channel: grpc.aio.Channel, model: ModelManifest,
                 breaker: CircuitBreaker | None = None, local: LocalChannel | None = None) -> None:
        assert model.backend is not None
        self.breaker = breaker or CircuitBreaker(model.backend.target)
        self.target = model.backend.target
        self.label = model.name  # what error answers name (never the target: an internal address)
        self.model_name = model.backend.model_name
        self.version = model.backend.version
        self.version_label = model.backend.version_label
        self.signature_name = model.backend.signature_name
        if model.folder is not None and model.signature.name:
            # An embedded runtime's model answers to its contract's name (TF's default key is an
            # alias there): asked by that name, it stamps the signature its metadata describes.
            self.signature_name = model.signature.name
        self.input_specs: Mapping[str, TensorSpec] = model.signature.inputs
        self._channel = channel
        self.local = local  # an embedded runtime's Unix socket: Predict and PredictMany go there
        self._local_fallback_logged = False
        self._stubs: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._health = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._has_health_service = True
        self._pinned_spec = self.model_spec(None, self.signature_name)  # what most requests send
        # Requests that send the same model spec and contract share a call scheduler (opt-in
        # batching, or the embedded runtime's call sharing): the pinned spec's, and one per
        # version, label or signature asked for (an application naming `model:N` of a floating
        # model, a contract discovered per version), up to MAX_SCHEDULERS (idle ones give way);
        # each has its own call limit.
        self._batching = model.batching
        self._shared_calls = model.backend.shared_calls
        self._schedulers: dict[tuple[Selector | None, str, int], CallScheduler] = {}
        self._pinned_key = (None, self.signature_name, id(self.input_specs))
        self.scheduler = self._scheduler_for(None, None, self.input_specs)
        # The embedded runtime has no use for the x-request-id metadata (~5 % of a call's cost);
        # PredictMany carries the ids in the message, for its error logs.
        self._request_ids = model.backend.shared_calls is None

    # ------------------------------------------------------------ requests

    def model_spec(self, selector: Selector | None = None, signature_name: str | None = None) -> ModelSpec:
        """The ModelSpec to send: the selector's version or label, else the pinned one."""
        spec = ModelSpec(name=self.model_name)
        if signature_name is not None:
            spec.signature_name = signature_name
        if selector is not None and selector.version is not None:
            spec.version.value = selector.version
        elif selector is not None and selector.label is not None:
            spec.version_label = selector.label
        elif self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def build_request(self, inputs: Mapping[str, NDArray], selector: Selector | None = None,
                      signature_name: str | None = None, specs: Mapping[str, TensorSpec] | None = None,
                      attachments: Attachments | None = None) -> PredictRequest:
        """The PredictRequest for `inputs`, numeric tensors in `tensor_content` form (large ones
        in `attachments` instead, when given: the local wire)."""
        request = PredictRequest()
        if self._pinned(selector, signature_name):
            request.model_spec.CopyFrom(self._pinned_spec)
        else:
            request.model_spec.CopyFrom(self.model_spec(selector, signature_name or self.signature_name))
        self._fill_inputs(request, inputs, self.input_specs if specs is None else specs, attachments)
        return request

    def _pinned(self, selector: Selector | None, signature_name: str | None) -> bool:
        """Whether a request asks for the pinned version and signature (`_pinned_spec`)."""
        return selector is None and (signature_name is None or signature_name == self.signature_name)

    @staticmethod
    def _fill_inputs(request: PredictRequest, inputs: Mapping[str, NDArray], specs: Mapping[str, TensorSpec],
                     attachments: Attachments | None = None, item: int = 0) -> None:
        for name, array in inputs.items():
            input_spec = specs.get(name)
            dtype = input_spec.dtype if input_spec else None
            if (attachments is not None and array.nbytes >= ATTACH_MIN and array.dtype.kind in NUMERIC_KINDS
                    and (dtype is None or dtype.is_numeric)):
                attachments.sent.append((item, name, tensor_header(request.inputs[name], array, dtype)))
            else:
                fill_tensor(request.inputs[name], array, dtype)

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        return (await self.predict_spec(inputs, timeout)).outputs

    async def predict_spec(self, inputs: Mapping[str, NDArray], timeout: float,
                           selector: Selector | None = None, signature_name: str | None = None,
                           specs: Mapping[str, TensorSpec] | None = None) -> Prediction:
        """Predict, with the model spec the backend answered with."""
        scheduler = self._scheduler_for(selector, signature_name, self.input_specs if specs is None else specs)
        if scheduler is not None:
            return await scheduler.predict(inputs, timeout)
        return await self._predict_once(inputs, timeout, selector, signature_name, specs)

    def _scheduler_for(self, selector: Selector | None, signature_name: str | None,
                       specs: Mapping[str, TensorSpec]) -> CallScheduler | None:
        """The call scheduler of what a request sends (model spec, input contract), made on
        first use, if the model has one; an idle one makes room when there are MAX_SCHEDULERS."""
        if self._batching is None and self._shared_calls is None:
            return None
        signature = signature_name or self.signature_name
        key = (selector, signature, id(specs))  # `specs` stays alive in the scheduler: its id is its own
        scheduler = self._schedulers.get(key)
        if scheduler is not None:
            return scheduler
        if self._batching is not None and not (specs and all(spec.shape and spec.shape[0] == -1
                                                             for spec in specs.values())):
            return None  # an unknown contract, or one without a batch dimension: no joining
        if len(self._schedulers) >= MAX_SCHEDULERS:
            idle = next((k for k, other in self._schedulers.items() if other.idle and k != self._pinned_key), None)
            if idle is None:
                return None
            del self._schedulers[idle]
        one = functools.partial(self._predict_once, selector=selector, signature_name=signature, specs=specs)
        if self._batching is not None:
            scheduler = Coalescer(one, self.target, self._batching.max_batch_size, self._batching.max_calls)
        else:
            assert self._shared_calls is not None
            many = functools.partial(self._predict_many, spec=self.model_spec(selector, signature), specs=specs)
            scheduler = Multiplexer(one, many, self.target, self._shared_calls)
        self._schedulers[key] = scheduler
        return scheduler

    async def _predict_once(self, inputs: Mapping[str, NDArray], timeout: float,
                            selector: Selector | None = None, signature_name: str | None = None,
                            specs: Mapping[str, TensorSpec] | None = None) -> Prediction:
        attachments = Attachments() if self.local is not None else None
        request = self.build_request(inputs, selector, signature_name, specs, attachments)
        response = await self._call(TF_PREDICT, request, timeout, attachments=attachments)
        return self._prediction(response, request.model_spec, attachments.received.get(0) if attachments else None)

    async def _predict_many(self, items: Sequence[Mapping[str, NDArray]], request_ids: Sequence[str],
                            timeout: float, spec: ModelSpec, specs: Mapping[str, TensorSpec]) -> SharedAnswer:
        """Several requests for `spec` in one PredictMany call (embedded runtime), each
        answered or failed on its own; with the runtime's time per request."""
        request = PredictManyRequest(request_ids=request_ids)
        attachments = Attachments() if self.local is not None else None
        for index, inputs in enumerate(items):
            item = request.requests.add()
            item.model_spec.CopyFrom(spec)
            self._fill_inputs(item, inputs, specs, attachments, index)
        response = await self._call(RUNTIME_PREDICT_MANY, request, timeout, metadata=(), attachments=attachments)
        received = attachments.received if attachments else {}
        if len(response.results) != len(items):
            raise BackendError(f"the backend of model {self.label} answered {len(response.results)} results "
                               f"for {len(items)} requests", log_detail=f"backend {self.target}")
        outcomes: list[Prediction | GatewayError] = []
        for index, result in enumerate(response.results):
            if result.code:
                outcomes.append(from_grpc_status(grpc_code(result.code), result.message, self.target, self.label))
                continue
            try:
                outcomes.append(self._prediction(result.response, spec, received.get(index)))
            except BackendError as error:
                outcomes.append(error)
        return outcomes, response.seconds_per_request

    def _prediction(self, response: PredictResponse, sent: ModelSpec,
                    attached: Mapping[str, memoryview] | None = None) -> Prediction:
        """The outputs (those whose values came beside the message from `attached`)."""
        try:
            outputs = {name: attached_array(tensor, attached[name]) if attached and name in attached
                       else decode_tensor(tensor) for name, tensor in response.outputs.items()}
        except CodecError as error:
            raise BackendError(f"the backend of model {self.label} answered a malformed tensor: {error}",
                               log_detail=f"backend {self.target}") from None
        return Prediction(outputs, self._effective(response.model_spec, sent))

    async def classify(self, request_input: Input, timeout: float, selector: Selector | None = None,
                       signature_name: str | None = None) -> ClassificationResponse:
        request = ClassificationRequest(model_spec=self.model_spec(selector, signature_name),
                                        input=request_input)
        return await self._call(TF_CLASSIFY, request, timeout)

    async def regress(self, request_input: Input, timeout: float, selector: Selector | None = None,
                      signature_name: str | None = None) -> RegressionResponse:
        request = RegressionRequest(model_spec=self.model_spec(selector, signature_name),
                                    input=request_input)
        return await self._call(TF_REGRESS, request, timeout)

    async def metadata(self, timeout: float, selector: Selector | None = None) -> GetModelMetadataResponse:
        """GetModelMetadata with the `signature_def` field."""
        request = GetModelMetadataRequest(model_spec=self.model_spec(selector),
                                          metadata_field=[SIGNATURE_DEF])
        return await self._call(TF_GET_MODEL_METADATA, request, timeout)

    async def status(self, timeout: float, selector: Selector | None = None) -> GetModelStatusResponse:
        """GetModelStatus of the selected version (of every version when floating and none is)."""
        request = GetModelStatusRequest(model_spec=self.model_spec(selector))
        return await self._call(TF_GET_MODEL_STATUS, request, timeout)

    async def reload_config(self, config: ModelServerConfig, timeout: float) -> ReloadConfigResponse:
        """Forward a ModelServerConfig to the server's HandleReloadConfigRequest."""
        return await self._call(TF_RELOAD_CONFIG, ReloadConfigRequest(config=config), timeout)

    async def healthy(self, timeout: float) -> bool:
        """Whether the backend answers its health check; a healthy answer also closes an open
        circuit (the check is the probe), so a restarted backend is used again at once."""
        ok = await self._check_health(timeout)
        if ok and self.breaker.state is not CircuitState.CLOSED:
            self.breaker.record(None)
        return ok

    async def _check_health(self, timeout: float) -> bool:
        if self._has_health_service:
            try:
                answer = await self._health(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    return False
                self._has_health_service = False
            else:
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        try:
            request = GetModelStatusRequest(model_spec=self.model_spec())
            status = await self._call(TF_GET_MODEL_STATUS, request, timeout, guarded=False)
        except BackendError:
            return False
        return any(entry.state == ModelVersionStatus.AVAILABLE for entry in status.model_version_status)

    # ------------------------------------------------------------ plumbing

    async def _call(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                    guarded: bool = True, metadata: tuple[tuple[str, str], ...] | None = None,
                    attachments: Attachments | None = None) -> ResponseT:
        """One call; `guarded` calls pass the circuit breaker and report to it. The call
        carries the request's x-request-id (to servers other than the embedded runtime)
        unless `metadata` is given; `attachments` go with it on the local wire."""
        if not guarded:
            return await self._send(method, request, timeout, ())
        self.breaker.before_call(self.label)
        try:
            if metadata is None:
                metadata = request_metadata() if self._request_ids else ()
            response = await self._send(method, request, timeout, metadata, attachments)
        except GatewayError as error:
            self.breaker.record(error.grpc_code)
            raise
        except asyncio.CancelledError:
            self.breaker.record(None)  # the caller went away; says nothing about the target
            raise
        self.breaker.record(None)
        return response

    async def _send(self, method: Method[RequestT, ResponseT], request: RequestT, timeout: float,
                    metadata: tuple[tuple[str, str], ...], attachments: Attachments | None = None) -> ResponseT:
        """The call over the local wire when the runtime has one for it, else over gRPC."""
        if self.local is not None and method.path in METHOD_NUMBERS:
            try:
                return await self.local.call(method, request, timeout, attachments)
            except LocalUnreachable as error:
                # The socket is gone (or refused): gRPC reaches the same runtime, and retries
                # while it restarts. Tensors that would have travelled beside go in the message.
                if not self._local_fallback_logged:
                    log.warning("model %s: %s; predictions go over gRPC", self.model_name, error.message)
                    self._local_fallback_logged = True
                if attachments is not None:
                    request = _with_attachments_inside(request, attachments)
            except LocalCallError as error:
                raise error.to_gateway_error(self.target, self.label) from None
        stub = self._stubs.get(method.path)
        if stub is None:
            stub = self._channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                             response_deserializer=method.response.FromString)
            self._stubs[method.path] = stub
        try:
            answer: ResponseT = await stub(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise from_grpc_status(error.code(), error.details(), self.target, self.label) from None
        return answer

    def _effective(self, answered: ModelSpec, sent: ModelSpec) -> EffectiveSpec:
        spec = answered if answered.name else sent
        version = spec.version.value if spec.HasField("version") else None
        return EffectiveSpec(spec.name, version, spec.signature_name or sent.signature_name)


def _with_attachments_inside(request: RequestT, attachments: Attachments) -> RequestT:
    """`request` (a PredictRequest or PredictManyRequest) with the tensors of
    `attachments.sent` put back into `tensor_content`, for gRPC."""
    message: Any = request
    for item, name, array in attachments.sent:
        target = message.requests[item] if isinstance(request, PredictManyRequest) else message
        target.inputs[name].tensor_content = array.tobytes()
    attachments.sent.clear()
    return cast(RequestT, message)
