"""inference.GRPCInferenceService, the Open Inference Protocol (KServe v2), on the gRPC front door.

`model_name` is an application first, else a model, resolved as Predict resolves a name
(gateway/grpc_api/tfserving.py: a backend's model name leads to the gateway model serving it);
`model_version` is a numeric version or a version label of that model. An application has no
versions: one asked of it is NOT_FOUND. Application answers follow its routing metadata
(`x-gateway-route-key`, `x-gateway-variant`) as on every front door.

    ServerLive      true while the process serves
    ServerReady     the gateway's readiness (`/health/ready`), false from the drain on
    ModelReady      an application's readiness as `/health/ready` lists it; a model's: its
                    backend is healthy and it started; neither from the drain on
    ServerMetadata  the gateway's name (`inference-gateway`, as GET /v2) and version, its
                    extensions (none of Triton's)
    ModelMetadata   an application: its first stage's inputs, its last stage's outputs,
                    platform "gateway-application", no versions; a model: its contract, the
                    versions the gateway serves of it, platform its backend protocol ("embedded"
                    for the embedded runtime); -1 for a dim of any size, [-1] for any rank
    ModelInfer      below

ModelInfer reads each input from `raw_input_contents` (then every input is raw, in order, the
spec's rule: a count that differs, or an input that also has `contents`, is INVALID_ARGUMENT) or
from its typed `contents`. The elements the shapes declare are counted against `max_elements`
before anything is decoded; names, datatypes and shapes are checked against the contract as
Predict's are, each error naming the input as `inputs[0] (x)`. Outputs are answered in
`raw_output_contents` for all of them, as Triton answers (and tritonclient reads by default),
each with its datatype from the array's dtype (`dtypes.oip`) and its shape; requested `outputs`
choose and order them (unknown or repeated names are INVALID_ARGUMENT before anything runs).
Parameters of Triton extensions the gateway does not offer (`classification` on an output, the
`shared_memory_*` ones on a tensor, the sequence and priority ones on the request) are
INVALID_ARGUMENT rather than ignored. The rules the REST door shares (names and versions,
readiness, metadata, requested outputs, request parameters) are `gateway.oip_models`'.
`model_name` is echoed as asked, `model_version` is the version that answered when known, `id`
the request's (else the gateway's request id).

The service's other methods (model config and statistics, the model repository, shared memory,
trace and log settings) are UNIMPLEMENTED with a message saying so, after the caller's API key
is checked; the streaming ModelStreamInfer is the gRPC server's UNIMPLEMENTED.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from google.protobuf.empty_pb2 import Empty
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

import gateway
from gateway import oip_models
from gateway.answer_headers import Timing
from gateway.backends import NDArray
from gateway.dataplane import RequestContext
from gateway.errors import BackendError, ContractViolation, GatewayError, MethodNotAllowed, NotFound
from gateway.grpc_api.calls import Call, DoorState, Handler, unary
from gateway.grpc_server.call import RpcHandler
from gateway.registry import Application
from gateway.routes.health import readiness
from gateway.routes.native import routing_wishes
from protos.inference import grpc_service_pb2 as oip
from protos.services import (
    OIP_MODEL_INFER,
    OIP_MODEL_METADATA,
    OIP_MODEL_READY,
    OIP_SERVER_LIVE,
    OIP_SERVER_METADATA,
    OIP_SERVER_READY,
    OIP_SERVICE,
    Method,
)
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.contract import dims_text
from tensorcodecs.oip_tensors import array_to_raw, contents_to_array, oip_datatype, raw_to_array, shape_elements

# Triton's methods of the service that the gateway does not offer (unary ones: the streaming
# ModelStreamInfer is answered UNIMPLEMENTED by the gRPC server as every unknown method).
UNOFFERED = ("ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
             "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
             "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
             "TraceSetting", "LogSettings")

InputTensor = oip.ModelInferRequest.InferInputTensor
TensorMetadata = oip.ModelMetadataResponse.TensorMetadata


def services(door: DoorState) -> dict[str, RpcHandler]:
    """The handlers of the service by method path."""
    handlers = {OIP_SERVER_LIVE.path: unary(OIP_SERVER_LIVE, server_live, door),
                OIP_SERVER_READY.path: unary(OIP_SERVER_READY, server_ready, door),
                OIP_MODEL_READY.path: unary(OIP_MODEL_READY, model_ready, door),
                OIP_SERVER_METADATA.path: unary(OIP_SERVER_METADATA, server_metadata, door),
                OIP_MODEL_METADATA.path: unary(OIP_MODEL_METADATA, model_metadata, door),
                OIP_MODEL_INFER.path: unary(OIP_MODEL_INFER, model_infer, door)}
    for name in UNOFFERED:
        method: Method[Empty, Empty] = Method(OIP_SERVICE, name, Empty, Empty)  # read unparsed: any bytes fit
        handlers[method.path] = unary(method, _unoffered(name), door)
    return handlers


def _unoffered(name: str) -> Handler[Empty, Empty]:
    async def refuse(request: Empty, call: Call) -> Empty:
        raise MethodNotAllowed(f"{OIP_SERVICE}/{name} is not offered by the gateway: it serves ServerLive, "
                               "ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer")
    return refuse


# ------------------------------------------------------------------ health and metadata

async def server_live(request: oip.ServerLiveRequest, call: Call) -> oip.ServerLiveResponse:
    return oip.ServerLiveResponse(live=True)


async def server_ready(request: oip.ServerReadyRequest, call: Call) -> oip.ServerReadyResponse:
    door = call.door
    return oip.ServerReadyResponse(ready=readiness(door.dataplane, door.watcher, door.draining())[0])


async def server_metadata(request: oip.ServerMetadataRequest, call: Call) -> oip.ServerMetadataResponse:
    return oip.ServerMetadataResponse(name=oip_models.SERVER_NAME, version=gateway.__version__, extensions=[])


async def model_ready(request: oip.ModelReadyRequest, call: Call) -> oip.ModelReadyResponse:
    """Ready or not; a name (or version) the gateway does not serve is not ready, answered OK as
    Triton answers it (tritonclient's `is_model_ready` raises on an error), never NOT_FOUND."""
    try:
        return await _model_ready(request, call)
    except NotFound:
        return oip.ModelReadyResponse(ready=False)


async def _model_ready(request: oip.ModelReadyRequest, call: Call) -> oip.ModelReadyResponse:
    door = call.door
    named = _named(request.name, request.version, call)
    return oip.ModelReadyResponse(ready=oip_models.is_ready(door.dataplane, door.watcher, door.draining(), named))


async def model_metadata(request: oip.ModelMetadataRequest, call: Call) -> oip.ModelMetadataResponse:
    named = _named(request.name, request.version, call)
    if isinstance(named, Application):
        if named.from_backend:
            named = await call.dataplane.with_contract(named, call.context(named))
        signature = named.signature
    else:
        signature = await call.dataplane.signature(named, None, call.context())
    response = oip.ModelMetadataResponse(name=request.name, platform=oip_models.platform(named),
                                         versions=oip_models.versions(call.dataplane, named))
    _describe(signature.inputs, response.inputs)
    _describe(signature.outputs, response.outputs)
    return response


def _describe(specs: Mapping[str, TensorSpec], into: RepeatedCompositeFieldContainer[TensorMetadata]) -> None:
    for name, datatype, shape in oip_models.metadata_tensors(specs):
        into.add(name=name, datatype=datatype, shape=shape)


def _named(name: str, version: str, call: Call) -> oip_models.Named:
    return oip_models.resolve(call.dataplane, name, version, call.authorize)


# ------------------------------------------------------------------ inference

async def model_infer(request: oip.ModelInferRequest, call: Call) -> oip.ModelInferResponse:
    """An application or a model on the request's tensors, answered in raw contents."""
    dataplane, settings = call.dataplane, call.settings
    named = _named(request.model_name, request.model_version, call)
    version = ""
    context: RequestContext
    if isinstance(named, Application):
        app = named
        context = call.context(app)
        routing_wishes(settings, app, call.metadata, context, call.check_admin)
        if request.parameters:
            oip_models.request_parameters(_parameter_values(request.parameters), context)
        if app.from_backend:
            app = await dataplane.with_contract(app, context)
        signature = app.signature
        wanted = requested_outputs(request, signature.outputs)
        started = time.perf_counter()
        inputs = decode_inputs(request, signature.inputs, settings.max_elements)
        context.timings.append(Timing("decode", time.perf_counter() - started))
        outputs = await dataplane.predict(app, inputs, context)
        who = app.name
    else:
        target = named
        context = call.context()
        if request.parameters:
            oip_models.request_parameters(_parameter_values(request.parameters), context)
        signature = await dataplane.signature(target, None, context)
        wanted = requested_outputs(request, signature.outputs)
        started = time.perf_counter()
        inputs = decode_inputs(request, signature.inputs, settings.max_elements)
        context.timings.append(Timing("decode", time.perf_counter() - started))
        prediction = await dataplane.predict_model(target, inputs, context, None, signature.inputs)
        outputs = oip_models.contract_outputs(prediction.outputs, signature.outputs)
        version = oip_models.answered_version(target, prediction.spec.version if prediction.spec is not None
                                              else None)
        who = target.model.label
    started = time.perf_counter()
    response = oip.ModelInferResponse(model_name=request.model_name, model_version=version,
                                      id=request.id or call.request_id)
    try:
        chosen = oip_models.chosen(outputs, wanted, who, bool(signature.outputs))
    except GatewayError as error:
        raise error.with_prefix(f"{error.field}: ") from None
    encode_outputs(chosen, response, who)
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return response


def _parameter_values(parameters: Mapping[str, oip.InferParameter]) -> dict[str, object]:
    """Request parameters as plain values (one that sets no value: None)."""
    values: dict[str, object] = {}
    for name, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        values[name] = getattr(parameter, which) if which is not None else None
    return values


def _where(index: int, name: str, field: str = "inputs") -> str:
    """An input or requested output as errors name it: `inputs[0] (x)`."""
    return f"{field}[{index}] ({name})"


def requested_outputs(request: oip.ModelInferRequest, known: Mapping[str, TensorSpec]) -> list[str]:
    """The outputs asked for, in order (empty: all), checked before anything runs
    (`oip_models.check_requested`), none asking for an extension the gateway does not offer."""
    names = [output.name for output in request.outputs]
    for index, output in enumerate(request.outputs):
        _refuse_extensions(output.parameters, _where(index, output.name, "outputs"), output.name)
    try:
        oip_models.check_requested(names, known)
    except ContractViolation as error:
        raise error.with_prefix(f"{error.field}: ") from None
    return names


# Parameters of Triton's extensions the gateway does not offer: honouring them silently would
# answer something else than asked (no class labels, no tensor read from shared memory).
_EXTENSION_PARAMETERS = {"classification": "the classification extension",
                         "shared_memory_region": "shared memory", "shared_memory_byte_size": "shared memory",
                         "shared_memory_offset": "shared memory"}


def _refuse_extensions(parameters: Mapping[str, oip.InferParameter], where: str, name: str) -> None:
    for parameter in parameters:
        offered = _EXTENSION_PARAMETERS.get(parameter)
        if offered is not None:
            message = f"{where}: parameter {parameter!r}: {offered} is not offered by the gateway"
            if offered == "shared memory":
                message += "; send the tensor in the request (raw_input_contents or contents)"
            raise ContractViolation(message, field=name)


def decode_inputs(request: oip.ModelInferRequest, specs: Mapping[str, TensorSpec] | None,
                  max_elements: int) -> dict[str, NDArray]:
    """The request's inputs as arrays, checked against `specs` (None or empty: no contract, every
    input taken as sent): the element limit from the shapes first, then the raw/contents rule,
    names, datatypes and shapes, then each is decoded."""
    tensors = request.inputs
    raw = request.raw_input_contents
    total = 0
    for index, tensor in enumerate(tensors):
        if tensor.parameters:
            _refuse_extensions(tensor.parameters, _where(index, tensor.name), tensor.name)
        try:
            total += shape_elements(tensor.shape)
        except CodecError as error:
            raise ContractViolation(f"{_where(index, tensor.name)}: {error.message}", field=tensor.name) from None
    if total > max_elements:
        raise ContractViolation(f"the request holds {total} tensor elements; the limit is {max_elements}")
    if raw:
        if len(raw) != len(tensors):
            raise ContractViolation(f"raw_input_contents holds {len(raw)} entries for {len(tensors)} inputs: "
                                    "when it is used, every input is in it, in the inputs' order")
        for index, tensor in enumerate(tensors):
            if tensor.HasField("contents"):
                raise ContractViolation(f"{_where(index, tensor.name)}: contents given with raw_input_contents: "
                                        "when raw_input_contents is used, every input is in it", field=tensor.name)
    _check_names(tensors, specs)
    arrays: dict[str, NDArray] = {}
    for index, tensor in enumerate(tensors):
        name, datatype, shape = tensor.name, tensor.datatype, tuple(tensor.shape)
        where = _where(index, name)
        spec = specs.get(name) if specs else None
        if spec is not None:
            if spec.dtype.oip != datatype:
                raise ContractViolation(f"{where}: expects {spec.dtype.oip or spec.dtype.name} but "
                                        f"{datatype or '(none)'} is provided", field=name)
            if not spec.accepts_shape(shape):
                raise ContractViolation(f"{where}: expects shape {spec.shape_text()}, got {dims_text(shape)}",
                                        field=name)
        try:
            arrays[name] = (raw_to_array(raw[index], datatype, shape, name) if raw
                            else contents_to_array(tensor.contents, datatype, shape, name))
        except CodecError as error:
            raise ContractViolation(f"{where}: {error.message}", field=name) from None
    return arrays


def _check_names(tensors: Sequence[InputTensor], specs: Mapping[str, TensorSpec] | None) -> None:
    seen: set[str] = set()
    expected = ", ".join(specs) if specs else ""
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if name in seen:
            raise ContractViolation(f"{_where(index, name)}: input given twice", field=name)
        seen.add(name)
        if specs and name not in specs:
            raise ContractViolation(f"{_where(index, name)}: unknown input; the inputs are {expected}", field=name)
    for name in specs or ():
        if name not in seen:
            raise ContractViolation(f"inputs: missing input {name!r}; the inputs are {expected}", field=name)


def encode_outputs(outputs: Mapping[str, NDArray], response: oip.ModelInferResponse, who: str) -> None:
    """Every output into `raw_output_contents` with its datatype and shape; one that cannot be
    written (a dtype the protocol has no datatype for) is the model's failure."""
    for name, array in outputs.items():
        try:
            datatype = oip_datatype(array)
            raw = array_to_raw(array, datatype)
        except CodecError as error:
            raise BackendError(f"model {who} answered output {name!r}: {error.message}", field=name) from None
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(raw)
