"""tensorflow.serving.PredictionService and ModelService on the gRPC front door.

Predict's `model_spec.name` is an application (which wins when a model shares its name:
`gateway check` warns) or a model. An application has no versions (a `version` or
`version_label` is INVALID_ARGUMENT); its inputs are checked against its contract, routing
wishes come from the `x-gateway-route-key` / `x-gateway-variant` metadata as from the native
API's headers. A model is resolved at the version or label asked, as on the /v1 REST routes,
and checked against the signature asked (default: the model's). The answer's `model_spec` is
filled as TF Serving fills it: the name asked, the version that served, the signature name
asked ("serving_default" when none was: TF's MakeModelSpec) (for an application: its name,
the application's signature name, no version). `output_filter` is checked against the
signature's outputs before anything runs (unknown or duplicate aliases are INVALID_ARGUMENT in
predict_util.cc's words); without one a model answers only its signature's outputs (all it
answered when the signature declares none). Outputs are written as TF Serving's Predict writes
them (kAsProtoField): in the typed fields (`float_val`, `int_val`, ...), strings in `string_val`.
A model on a TF Serving backend that needs no decoding gets the request's tensors as sent and
answers its backend's tensors as they came (gateway.grpc_api.passthrough).

GetModelMetadata, GetModelStatus, Classify and Regress name a model (an application's name
that is no model's is NOT_FOUND, as TF Serving answers an unknown model); the backend must
offer the call (gateway.backends.capabilities), else NOT_FOUND in the capability's words.
HandleReloadConfigRequest needs the admin token; it goes to the server that serves the models
the config lists (or the model named by the `x-gateway-model` metadata); a reload the server
refused is answered with its status as the gRPC status, as TF Serving's model_service_impl does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.backends import NDArray, Selector
from gateway.backends.capabilities import Classifies, HasMetadata, Regresses, ReportsStatus
from gateway.dataplane import DataPlane
from gateway.errors import BackendError, BadRequest, ContractViolation, NotFound, from_grpc_status, grpc_code
from gateway.grpc_api.calls import Call, DoorState, unary
from gateway.grpc_api.passthrough import forward, passes_through
from gateway.grpc_api.tensors import check_declared_elements, decode_tensors, encode_tensors, filter_outputs
from gateway.grpc_server.call import RpcHandler
from gateway.registry import Application, Target
from gateway.routes.native import routing_wishes
from protos.services import (
    TF_CLASSIFY,
    TF_GET_MODEL_METADATA,
    TF_GET_MODEL_STATUS,
    TF_PREDICT,
    TF_REGRESS,
    TF_RELOAD_CONFIG,
)
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataRequest, GetModelMetadataResponse
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest, GetModelStatusResponse
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest, ReloadConfigResponse
from protos.tensorflow_serving.model_pb2 import ModelSpec
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.signature_def import SIGNATURE_DEF

DEFAULT_SIGNATURE = "serving_default"  # TF Serving's kDefaultServingSignatureDefKey
MODEL_KEY = "x-gateway-model"  # HandleReloadConfigRequest: the model whose server takes the config


def _selector(spec: ModelSpec) -> Selector:
    """The version or label a ModelSpec asks for (a oneof: at most one is set)."""
    version = spec.version.value if spec.HasField("version") else None
    return Selector(version, spec.version_label or None)


def _model_target(spec: ModelSpec, call: Call) -> Target:
    """The model a ModelSpec names at its version or label (NotFound otherwise; an application
    that no model shares the name of is named as such)."""
    name = spec.name
    call.authorize(name)
    dataplane = call.dataplane
    try:
        target = dataplane.resolve(name, _selector(spec))
    except NotFound:
        if name in dataplane.registry.applications:
            raise NotFound(f"{name!r} is an application, not a model: this method names a model "
                           f"(applications answer Predict only)") from None
        raise
    call.authorize(target.model.manifest.name)  # a backend's model name may lead to another gateway model
    return target


def _require_spec(has_spec: bool) -> None:
    if not has_spec:
        raise BadRequest("Missing ModelSpec")  # TF Serving's words


async def predict(request: PredictRequest, call: Call) -> PredictResponse:
    """Predict on an application or a model."""
    _require_spec(request.HasField("model_spec"))
    spec = request.model_spec
    app = call.dataplane.registry.applications.get(spec.name)
    if app is not None:
        return await _predict_application(app, request, call)
    return await _predict_model(request, call)


async def _predict_application(app: Application, request: PredictRequest, call: Call) -> PredictResponse:
    spec = request.model_spec
    call.authorize(app.name)  # before any answer that tells it is an application
    if spec.HasField("version") or spec.version_label:
        raise BadRequest(f"model_spec: applications have no versions: name a model ({app.name!r} is an "
                         "application)", field="model_spec")
    if spec.signature_name not in ("", DEFAULT_SIGNATURE, app.signature.name):
        raise BadRequest(f'model_spec.signature_name: Serving signature name: "{spec.signature_name}" not '
                         "found in signature def", field="model_spec.signature_name")
    dataplane, settings = call.dataplane, call.settings
    context = call.context(app)
    routing_wishes(settings, app, call.metadata, context, call.check_admin)
    if app.from_backend:
        app = await dataplane.with_contract(app, context)
    check_output_filter(request.output_filter, app.signature.outputs)
    inputs = decode_tensors(request.inputs, app.signature.inputs, settings)
    outputs = filter_outputs(await dataplane.predict(app, inputs, context), request.output_filter,
                             app.signature.outputs)
    response = PredictResponse()
    response.model_spec.name = app.name
    response.model_spec.signature_name = app.signature.name
    _encode(outputs, response, app.signature.outputs, app.name)
    return response


async def _predict_model(request: PredictRequest, call: Call) -> PredictResponse:
    spec = request.model_spec
    target = _model_target(spec, call)
    dataplane, settings = call.dataplane, call.settings
    context = call.context()
    if passes_through(target, request):
        check_declared_elements(request.inputs, settings)
        asked = ModelSpec()
        asked.CopyFrom(spec)
        answer = await forward(target, request, context, dataplane)  # the tensors as sent, as answered
        answer.model_spec.name = asked.name
        answer.model_spec.signature_name = asked.signature_name or DEFAULT_SIGNATURE
        return answer
    signature_name = spec.signature_name or None
    signature = await dataplane.signature(target, signature_name, context)
    check_output_filter(request.output_filter, signature.outputs)
    inputs = decode_tensors(request.inputs, signature.inputs, settings)
    prediction = await dataplane.predict_model(target, inputs, context, signature_name, signature.inputs)
    outputs = prediction.outputs
    if signature.outputs and not request.output_filter:  # TF Serving fetches the signature's outputs only
        outputs = {name: outputs[name] for name in signature.outputs if name in outputs}
    outputs = filter_outputs(outputs, request.output_filter, signature.outputs)
    response = PredictResponse()
    answered = response.model_spec
    answered.name = spec.name
    served = prediction.spec
    version = served.version if served is not None else None
    if version is None and target.selector is not None:
        version = target.selector.version
    if version is not None:
        answered.version.value = version
    answered.signature_name = spec.signature_name or DEFAULT_SIGNATURE  # TF's MakeModelSpec
    _encode(outputs, response, signature.outputs, target.model.label)
    return response


def _encode(outputs: Mapping[str, NDArray], response: PredictResponse, specs: Mapping[str, TensorSpec],
            who: str) -> None:
    """The outputs into the answer; one that cannot be written is the model's failure."""
    try:
        encode_tensors(outputs, response.outputs, specs)
    except CodecError as error:
        raise BackendError(f"model {who} answered {error}") from None


def check_output_filter(wanted: Iterable[str], known: Mapping[str, TensorSpec]) -> None:
    """predict_util.cc's checks of `output_filter`, before anything runs: each alias one of the
    signature's outputs (when it declares any), none twice."""
    seen: set[str] = set()
    for name in wanted:
        if known and name not in known:
            raise ContractViolation(f"output tensor alias not found in signature: {name} Outputs expected to "
                                    f"be in the set {{{','.join(known)}}}.", field=name)
        if name in seen:
            raise ContractViolation(f"duplicate output tensor alias: {name}", field=name)
        seen.add(name)


async def get_model_metadata(request: GetModelMetadataRequest, call: Call) -> GetModelMetadataResponse:
    """The model's signature_def metadata, as its TF Serving backend answers it."""
    _require_spec(request.HasField("model_spec"))
    if not request.metadata_field:  # TF Serving's checks (get_model_metadata_impl.cc)
        raise BadRequest("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF:
            raise BadRequest(f"Metadata field {field} is not supported")
    target = _model_target(request.model_spec, call)
    context = call.context()
    backend = call.dataplane.capability(target.model, HasMetadata)
    response = await backend.metadata(context.remaining(), target.selector, context.request_id)
    response.model_spec.name = request.model_spec.name
    return response


async def get_model_status(request: GetModelStatusRequest, call: Call) -> GetModelStatusResponse:
    """The state of the model's version (every version's when none is asked and it floats)."""
    _require_spec(request.HasField("model_spec"))
    target = _model_target(request.model_spec, call)
    context = call.context()
    backend = call.dataplane.capability(target.model, ReportsStatus)
    return await backend.status(context.remaining(), target.selector, context.request_id)


async def classify(request: ClassificationRequest, call: Call) -> ClassificationResponse:
    _require_spec(request.HasField("model_spec"))
    target = _model_target(request.model_spec, call)
    context = call.context()
    backend = call.dataplane.capability(target.model, Classifies)
    response = await backend.classify(request.input, context.remaining(), target.selector,
                                      request.model_spec.signature_name or None, context.request_id)
    response.model_spec.name = request.model_spec.name
    return response


async def regress(request: RegressionRequest, call: Call) -> RegressionResponse:
    _require_spec(request.HasField("model_spec"))
    target = _model_target(request.model_spec, call)
    context = call.context()
    backend = call.dataplane.capability(target.model, Regresses)
    response = await backend.regress(request.input, context.remaining(), target.selector,
                                     request.model_spec.signature_name or None, context.request_id)
    response.model_spec.name = request.model_spec.name
    return response


async def reload_config(request: ReloadConfigRequest, call: Call) -> ReloadConfigResponse:
    """A new ModelServerConfig for the server behind the models it lists (or behind the model
    `x-gateway-model` names); its answer as the server gave it."""
    dataplane = call.dataplane
    named = call.metadata.get(MODEL_KEY)
    target = dataplane.resolve(named) if named else _config_server(dataplane, request)
    answer = await dataplane.reload_config(target.model, request.config, call.context())
    if answer.status.error_code:  # model_service_impl.cc returns ToGRPCStatus(status)
        raise from_grpc_status(grpc_code(int(answer.status.error_code)), answer.status.error_message,
                               target.model.backend.target, target.model.label)
    return answer


def _config_server(dataplane: DataPlane, request: ReloadConfigRequest) -> Target:
    """The one gateway model whose server the config's models are on (INVALID_ARGUMENT when
    they are on several, NOT_FOUND when the gateway fronts none of them)."""
    if request.config.WhichOneof("config") not in (None, "model_config_list"):
        raise BadRequest("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                         "ModelConfigList is currently supported")  # TF Serving's words
    names = [config.name for config in request.config.model_config_list.config]
    if not names:
        raise BadRequest(f"the config lists no models: name the model whose server takes it in {MODEL_KEY} metadata")
    found: dict[str, Target] = {}
    for name in names:
        try:
            target = dataplane.resolve(name)
        except NotFound:
            continue
        found.setdefault(target.model.backend.target, target)
    if not found:
        raise NotFound(f"no model of this gateway is served as {', '.join(names)}: name the model whose server "
                       f"takes the config in {MODEL_KEY} metadata")
    if len(found) > 1:
        raise BadRequest(f"the config's models are on {len(found)} servers: name the model whose server takes it "
                         f"in {MODEL_KEY} metadata")
    return next(iter(found.values()))


def services(door: DoorState) -> dict[str, RpcHandler]:
    """The handlers of this module's services by method path."""
    return {TF_PREDICT.path: unary(TF_PREDICT, predict, door),
            TF_GET_MODEL_METADATA.path: unary(TF_GET_MODEL_METADATA, get_model_metadata, door),
            TF_CLASSIFY.path: unary(TF_CLASSIFY, classify, door),
            TF_REGRESS.path: unary(TF_REGRESS, regress, door),
            TF_GET_MODEL_STATUS.path: unary(TF_GET_MODEL_STATUS, get_model_status, door),
            TF_RELOAD_CONFIG.path: unary(TF_RELOAD_CONFIG, reload_config, door, admin=True)}
