"""A backend speaking TensorFlow Serving's gRPC API (TF Serving itself, the embedded runtime):
protocol mapping only. ModelSpecs, requests and responses of PredictionService (Predict,
Classify, Regress, GetModelMetadata) and ModelService (GetModelStatus,
HandleReloadConfigRequest); how they travel is the transport's (gateway.backends.transports:
the pooled gRPC channel, an embedded runtime's local wire, the circuit breaker), how requests
share calls the scheduling wrapper's (gateway.backends.scheduling).

Health: `grpc.health.v1` when the server has it; TF Serving does not, so on UNIMPLEMENTED the
backend asks GetModelStatus instead and is healthy when its version (any version, for a
floating model) is AVAILABLE. The embedded runtime (`RuntimeBackend`) also answers PredictMany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from google.protobuf.message import Message
from grpc import StatusCode
from grpc_health.v1 import health_pb2

from gateway.backends.base import BackendCall, EffectiveSpec, NDArray, Prediction, Selector, default_signature
from gateway.backends.capabilities import (
    Classifies,
    HasMetadata,
    PredictsMany,
    Regresses,
    ReloadsConfig,
    ReportsStatus,
    SharedAnswer,
)
from gateway.backends.pool import ChannelPool
from gateway.backends.transports import Metadata, Transport
from gateway.backends.transports import connect as connect_transports
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    GatewayError,
    answer_errors,
    from_grpc_status,
    grpc_code,
)
from gateway.manifests import ModelManifest
from protos.local_wire import ATTACH_MIN, Attachments
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
from tensorcodecs import CodecError, Signature, TensorSpec
from tensorcodecs.signature_def import SIGNATURE_DEF
from tensorcodecs.tensor_proto import attached_array, decode_tensor, fill_tensor, tensor_header
from tensorcodecs.tfserving_json import signatures_from_metadata

HEALTH: Method[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse] = Method(
    "grpc.health.v1.Health", "Check", health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
HEALTH_CHECK = HEALTH.path
NUMERIC_KINDS = frozenset("biufc")  # numpy kinds whose values can travel as raw bytes


class TFServingBackend:
    """One model (a pinned version, or every version when floating) behind TF Serving's API;
    its calls go through `transport`, health checks through `checks` (past the circuit
    breaker: the probe that closes it; default `transport`)."""

    describes = True
    capabilities: ClassVar[frozenset[type]] = frozenset({Classifies, Regresses, ReportsStatus, HasMetadata,
                                                          ReloadsConfig})
    # Whether calls carry the request's x-request-id as gRPC metadata.
    sends_request_ids: ClassVar[bool] = True

    def __init__(self, model: ModelManifest, transport: Transport, checks: Transport | None = None) -> None:
        assert model.backend is not None
        self.target = model.backend.target
        self.label = model.name  # what error answers name (never the target: an internal address)
        self.model_label = f"{model.name}:{model.version}"
        # Answers that do not decode are this backend's failure (502), said once per backend.
        self._malformed_tensor = answer_errors(self.label, self.target, "a malformed tensor")
        self._unusable_metadata = answer_errors(self.model_label, self.target, "unusable metadata")
        self.model_name = model.backend.model_name
        self.version = model.backend.version
        self.version_label = model.backend.version_label
        self.signature_name = default_signature(model)
        self.input_specs: Mapping[str, TensorSpec] = model.signature.inputs
        self.transport = transport
        self.checks = transport if checks is None else checks
        self._attach = transport.carries_attachments
        self._has_health_service = True
        self._pinned_spec = self.model_spec(None, self.signature_name)  # what most requests send

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

    def call_spec(self, call: BackendCall) -> ModelSpec:
        """The ModelSpec a call sends (the pinned one, made once, for most)."""
        signature_name = call.signature_name
        if call.selector is None and (signature_name is None or signature_name == self.signature_name):
            return self._pinned_spec
        return self.model_spec(call.selector, signature_name or self.signature_name)

    def build_request(self, call: BackendCall, attachments: Attachments | None = None) -> PredictRequest:
        """The PredictRequest for `call`, numeric tensors in `tensor_content` form (large ones
        in `attachments` instead, when given: the local wire)."""
        request = PredictRequest()
        request.model_spec.CopyFrom(self.call_spec(call))
        self._fill_inputs(request, call.inputs, self.input_specs if call.specs is None else call.specs,
                          attachments)
        return request

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

    def _metadata(self, request_id: str) -> Metadata:
        """The gRPC metadata of a call made for request `request_id`."""
        return (("x-request-id", request_id),) if request_id and self.sends_request_ids else ()

    async def predict(self, call: BackendCall) -> Prediction:
        attachments = Attachments() if self._attach else None
        request = self.build_request(call, attachments)
        response = await self.transport.call(TF_PREDICT, request, call.timeout, self._metadata(call.request_id),
                                             attachments)
        return self._prediction(response, request.model_spec, attachments.received.get(0) if attachments else None)

    async def forward_predict(self, request: PredictRequest, selector: Selector | None, timeout: float,
                              request_id: str = "") -> PredictResponse:
        """`request` as the client sent it (its tensors never decoded) to this backend's model,
        and the answer as the backend gave it; only the request's model_spec is rewritten (in
        place) to the one this backend sends."""
        request.model_spec.CopyFrom(self.model_spec(selector, request.model_spec.signature_name
                                                    or self.signature_name))
        return await self.transport.call(TF_PREDICT, request, timeout, self._metadata(request_id))

    def _prediction(self, response: PredictResponse, sent: ModelSpec,
                    attached: Mapping[str, memoryview] | None = None) -> Prediction:
        """The outputs (those whose values came beside the message from `attached`)."""
        try:
            outputs = {name: attached_array(tensor, attached[name]) if attached and name in attached
                       else decode_tensor(tensor) for name, tensor in response.outputs.items()}
        except CodecError as error:
            raise self._malformed_tensor.translate(error) from None
        return Prediction(outputs, _effective(response.model_spec, sent))

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        """The signatures GetModelMetadata describes."""
        try:
            response = await self.metadata(timeout, selector, request_id)
        except GatewayError as error:
            # TF Serving answers NOT_FOUND for a model in its config that it has not loaded yet
            # as for one it does not have: the manifest says this one exists, so it is not ready
            # (a version the request named stays a 404, as TF Serving answers it).
            if error.grpc_code is StatusCode.NOT_FOUND and selector is None:
                raise BackendUnavailable(f"model {self.model_label} is not available on its backend yet: "
                                         f"{error.message}", log_detail=error.log_detail) from None
            raise
        try:
            return signatures_from_metadata(response)
        except CodecError as error:
            raise self._unusable_metadata.translate(error) from None

    async def classify(self, request_input: Input, timeout: float, selector: Selector | None = None,
                       signature_name: str | None = None, request_id: str = "") -> ClassificationResponse:
        request = ClassificationRequest(model_spec=self.model_spec(selector, signature_name),
                                        input=request_input)
        return await self.transport.call(TF_CLASSIFY, request, timeout, self._metadata(request_id))

    async def regress(self, request_input: Input, timeout: float, selector: Selector | None = None,
                      signature_name: str | None = None, request_id: str = "") -> RegressionResponse:
        request = RegressionRequest(model_spec=self.model_spec(selector, signature_name),
                                    input=request_input)
        return await self.transport.call(TF_REGRESS, request, timeout, self._metadata(request_id))

    async def metadata(self, timeout: float, selector: Selector | None = None,
                       request_id: str = "") -> GetModelMetadataResponse:
        """GetModelMetadata with the `signature_def` field."""
        request = GetModelMetadataRequest(model_spec=self.model_spec(selector), metadata_field=[SIGNATURE_DEF])
        return await self.transport.call(TF_GET_MODEL_METADATA, request, timeout, self._metadata(request_id))

    async def status(self, timeout: float, selector: Selector | None = None,
                     request_id: str = "") -> GetModelStatusResponse:
        """GetModelStatus of the selected version (of every version when floating and none is)."""
        request = GetModelStatusRequest(model_spec=self.model_spec(selector))
        return await self.transport.call(TF_GET_MODEL_STATUS, request, timeout, self._metadata(request_id))

    async def reload_config(self, config: ModelServerConfig, timeout: float,
                            request_id: str = "") -> ReloadConfigResponse:
        """Forward a ModelServerConfig to the server's HandleReloadConfigRequest."""
        return await self.transport.call(TF_RELOAD_CONFIG, ReloadConfigRequest(config=config), timeout,
                                         self._metadata(request_id))

    async def healthy(self, timeout: float) -> bool:
        """Whether the backend answers its health check; a healthy answer also closes an open
        circuit (the check is the probe), so a restarted backend is used again at once."""
        ok = await self._check_health(timeout)
        if ok:
            self.transport.passed_health_check()
        return ok

    async def _check_health(self, timeout: float) -> bool:
        unguarded = self.checks
        if self._has_health_service:
            try:
                answer = await unguarded.call(HEALTH, health_pb2.HealthCheckRequest(), timeout)
            except GatewayError as error:
                if error.grpc_code is not StatusCode.UNIMPLEMENTED:
                    return False
                self._has_health_service = False
            else:
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        try:
            request = GetModelStatusRequest(model_spec=self.model_spec())
            status = await unguarded.call(TF_GET_MODEL_STATUS, request, timeout)
        except GatewayError:
            return False
        return any(entry.state == ModelVersionStatus.AVAILABLE for entry in status.model_version_status)


class RuntimeBackend(TFServingBackend):
    """The embedded runtime: TF Serving's API, plus PredictMany (several requests in one call,
    each answered on its own). It has no use for the x-request-id metadata (~5 % of a call's
    cost); PredictMany carries the ids in the message, for its error logs."""

    capabilities: ClassVar[frozenset[type]] = TFServingBackend.capabilities | {PredictsMany}
    sends_request_ids: ClassVar[bool] = False

    async def predict_many(self, calls: Sequence[BackendCall], timeout: float) -> SharedAnswer:
        """`calls` (of one model spec and contract) in one PredictMany call, each answered or
        failed on its own; with the runtime's time per request."""
        first = calls[0]
        spec = self.call_spec(first)
        specs = self.input_specs if first.specs is None else first.specs
        request = PredictManyRequest(request_ids=[call.request_id for call in calls])
        attachments = Attachments() if self._attach else None
        for index, call in enumerate(calls):
            item = request.requests.add()
            item.model_spec.CopyFrom(spec)
            self._fill_inputs(item, call.inputs, specs, attachments, index)
        response = await self.transport.call(RUNTIME_PREDICT_MANY, request, timeout, (), attachments)
        received = attachments.received if attachments else {}
        if len(response.results) != len(calls):
            raise BackendError(f"the backend of model {self.label} answered {len(response.results)} results "
                               f"for {len(calls)} requests", log_detail=f"backend {self.target}")
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


def connect(model: ModelManifest, pool: ChannelPool, *, guarded: bool = True) -> TFServingBackend:
    """The backend of `model` on `pool` (gateway.backends.transports.connect: its channel,
    circuit breaker and, for an embedded runtime, its Unix socket); a `RuntimeBackend` for an
    embedded runtime (one with call sharing). `guarded=False`: its calls skip the breaker."""
    spec = model.backend
    assert spec is not None
    transports = connect_transports(spec, pool, model.name, inline_attachments)
    kind = TFServingBackend if spec.shared_calls is None else RuntimeBackend
    return kind(model, transports.calls if guarded else transports.checks, transports.checks)


def inline_attachments(request: Message, attachments: Attachments) -> None:
    """Put the tensors of `attachments.sent` back into `tensor_content` of `request` (a
    PredictRequest, or each item's of a PredictManyRequest), for a call that goes over gRPC."""
    for item, name, array in attachments.sent:
        target = request.requests[item] if isinstance(request, PredictManyRequest) else request
        target.inputs[name].tensor_content = array.tobytes()  # type: ignore[attr-defined]
    attachments.sent.clear()


def _effective(answered: ModelSpec, sent: ModelSpec) -> EffectiveSpec:
    spec = answered if answered.name else sent
    version = spec.version.value if spec.HasField("version") else None
    return EffectiveSpec(spec.name, version, spec.signature_name or sent.signature_name)
