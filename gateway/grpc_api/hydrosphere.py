"""hydrosphere.serving.gateway.GatewayService (hydro-serving-protos 3.x) on the gRPC front door.

    PredictApplication         `name` is an application: its contract, routing and shadows
                               (shadows get copies, as on HTTP), `dataplane.predict`
    PredictServable            `name` is a servable, a model version of the gateway (below),
                               `dataplane.predict_model` on it
    ShadowlessPredictServable  the same: Hydrosphere leaves out its monitoring copy there; a
                               single model's call here has no shadows to leave out (its
                               model's request log, when configured, records it as usual)

A servable is named `<model>:<version>`, `<model>:<label>`, `<model>` (its default version) or
as Hydrosphere names the servables it deploys, `<model>-<version>[-<adjective>-<noun>]`
(`adult-classification-1-wild-flower`), read so only when no model has the whole name.

`data` holds Hydrosphere contract tensors (converted to TensorProto by runtime/hydrosphere.py,
then to arrays), checked against the contract as PredictionService's inputs are (each input
named, of the contract's dtype and shape: INVALID_ARGUMENT with the field path, `data["number"]`,
otherwise; DT_MAP and dtypes the gateway has no row for too). As Hydrosphere's gateway does
(TensorUtil.verifyShape), one -1 size is taken from the number of values (hydrosdk sends the
contract's shape, `[-1, 3]`). Values only in a field other than the dtype's (`int_val` of a
DT_FLOAT, `binary_val` of a DT_STRING) are INVALID_ARGUMENT, never read as zeros or empty strings.
An application honours the routing metadata (`x-gateway-route-key`, `x-gateway-variant`) as HTTP
honours the headers; its name is looked up only once the caller's key may call it. The answer's
tensors carry their values in the typed fields (`int_val`, ...), which Hydrosphere's clients read,
each in its contract's dtype when that holds the values exactly, else in the model's
(gateway/grpc_api/tensors.py `answer_dtype`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.backends import NDArray, Selector
from gateway.errors import BackendError, BadRequest, ContractViolation, NotFound
from gateway.grpc_api.calls import Call, DoorState, unary
from gateway.grpc_api.tensors import answer_dtype, decode_tensors, field_path
from gateway.grpc_server.call import RpcHandler
from gateway.registry import Target
from gateway.routes.native import routing_wishes
from gateway.settings import Settings
from protos.hydrosphere.contract_pb2 import DT_MAP, Tensor
from protos.hydrosphere.gateway_pb2 import GatewayPredictRequest
from protos.hydrosphere.runtime_pb2 import PredictResponse
from protos.services import (
    HYDRO_PREDICT_APPLICATION,
    HYDRO_PREDICT_SERVABLE,
    HYDRO_SHADOWLESS_PREDICT_SERVABLE,
)
from protos.tensorflow.tensor_pb2 import TensorProto
from runtime.hydrosphere import from_tensor_proto, to_tensor_proto
from tensorcodecs import CodecError
from tensorcodecs.contract import TensorSpec, dims_text
from tensorcodecs.dtypes import DType, dtype_from_enum
from tensorcodecs.tensor_proto import encode_tensor, resolve_unknown_dim

# Hydrosphere's servable names: the model version's, then a random two-word suffix.
_HYDRO_SERVABLE = re.compile(r"(?P<model>.+)-(?P<version>[0-9]+)(?:-[a-z]+-[a-z]+)?")


def services(door: DoorState) -> dict[str, RpcHandler]:
    """The handlers of this module's services by method path."""
    return {HYDRO_PREDICT_APPLICATION.path: unary(HYDRO_PREDICT_APPLICATION, predict_application, door),
            HYDRO_PREDICT_SERVABLE.path: unary(HYDRO_PREDICT_SERVABLE, predict_servable, door),
            HYDRO_SHADOWLESS_PREDICT_SERVABLE.path: unary(HYDRO_SHADOWLESS_PREDICT_SERVABLE, predict_servable, door)}


async def predict_application(request: GatewayPredictRequest, call: Call) -> PredictResponse:
    """The application `request.name` on `request.data`, as the native HTTP route runs it."""
    dataplane = call.dataplane
    call.authorize(request.name)  # first: a key that may not call it learns nothing of the name
    app = dataplane.application(request.name)
    context = call.context(app)
    routing_wishes(call.settings, app, call.metadata, context, call.check_admin)
    if app.from_backend:
        app = await dataplane.with_contract(app, context)
    inputs = decode_data(request.data, app.signature.inputs, call.settings)
    outputs = await dataplane.predict(app, inputs, context)
    return encode_outputs(outputs, app.signature.outputs, app.name)


async def predict_servable(request: GatewayPredictRequest, call: Call) -> PredictResponse:
    """The servable `request.name` (one model version, no shadows) on `request.data`."""
    dataplane = call.dataplane
    target = resolve_servable(request.name, call)
    context = call.context()
    signature = await dataplane.signature(target, None, context)
    inputs = decode_data(request.data, signature.inputs, call.settings)
    prediction = await dataplane.predict_model(target, inputs, context, None, signature.inputs)
    outputs = prediction.outputs
    if signature.outputs:
        outputs = {name: outputs[name] for name in signature.outputs if name in outputs}
    return encode_outputs(outputs, signature.outputs, target.model.label)


def parse_servable(name: str) -> tuple[str, Selector]:
    """`<model>:<version>`, `<model>:<label>` or `<model>` as a model name and selector."""
    model, colon, selected = name.partition(":")
    if not colon:
        return name, Selector()
    if not model or not selected:
        raise BadRequest(f"name: servable {name!r} is not <model>, <model>:<version> or <model>:<label>")
    if selected.isascii() and selected.isdigit():
        return model, Selector(version=int(selected))
    return model, Selector(label=selected)


def resolve_servable(name: str, call: Call) -> Target:
    """The model version servable `name` names, read as `<model>[:<version>|:<label>]`, else as
    Hydrosphere's `<model>-<version>[-<adjective>-<noun>]`; only the model names the caller's
    key may call are looked up (403 when it may call none, NotFound when none exists)."""
    if not name:
        raise BadRequest("name: a servable name is required (<model>:<version> or <model>)")
    readings = [parse_servable(name)]
    match = _HYDRO_SERVABLE.fullmatch(name)
    if match is not None:
        readings.append((match["model"], Selector(version=int(match["version"]))))
    key = call.api_key
    allowed = [(model, selector) for model, selector in readings if key is None or key.allows(model)]
    if not allowed:
        call.authorize(readings[0][0])  # raises: the key may call none of them
    errors: list[NotFound] = []
    for model, selector in allowed:
        try:
            return call.dataplane.resolve(model, selector)
        except NotFound as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    raise NotFound(f"servable {name!r} does not exist ({errors[-1].message})")


def decode_data(data: Mapping[str, Tensor], specs: Mapping[str, TensorSpec], settings: Settings) -> dict[str, NDArray]:
    """The arrays of a request's `data`, checked against the contract as TF Serving's requests
    are (gateway/grpc_api/tensors.py: names, dtypes, shapes, the element limit; with no specs,
    a contract not known, every tensor is taken as sent), once each is a TensorProto."""
    protos: dict[str, TensorProto] = {}
    for name in sorted(data):
        tensor, path = data[name], field_path("data", name)
        if tensor.dtype == DT_MAP or len(tensor.map_val):
            raise ContractViolation(f"{path}.dtype: DT_MAP tensors are not supported", field=name)
        try:
            row = dtype_from_enum(tensor.dtype)
        except CodecError:
            raise ContractViolation(f"{path}.dtype: unknown or unsupported dtype {tensor.dtype}",
                                    field=name) from None
        _check_value_fields(tensor, row, path, name)
        dims = list(tensor.tensor_shape.dims)
        if any(size < -1 for size in dims) or dims.count(-1) > 1:
            raise ContractViolation(f"{path}.tensor_shape: {dims_text(tuple(dims))} has a negative size other "
                                    "than one -1", field=name)
        proto = to_tensor_proto(tensor)
        try:
            resolve_unknown_dim(proto)  # Hydrosphere's verifyShape: the -1 from the values
        except CodecError as error:
            raise ContractViolation(f"{path}.tensor_shape: {error.message}", field=name) from None
        protos[name] = proto
    return decode_tensors(protos, specs, settings, field="data")


# The fields of a Tensor that carry values (DT_MAP's map_val is refused before these are read).
_VALUE_FIELDS = ("binary_val", "half_val", "float_val", "double_val", "int_val", "string_val", "scomplex_val",
                 "int64_val", "bool_val", "dcomplex_val", "uint32_val", "uint64_val")


def _check_value_fields(tensor: Tensor, row: DType, path: str, name: str) -> None:
    """INVALID_ARGUMENT for values a decoder would not read (TF's rule would make them zeros or
    empty strings): `binary_val` on a string tensor, or values only in another dtype's field."""
    own = (row.proto_field, "binary_val") if row.is_numeric else (row.proto_field,)
    if not row.is_numeric and tensor.binary_val:
        raise ContractViolation(f"{path}.binary_val: {row.enum_name} tensors carry their values in "
                                f"{row.proto_field}", field=name)
    if any(_has_values(tensor, field) for field in own):
        return
    for field in _VALUE_FIELDS:
        if field not in own and _has_values(tensor, field):
            where = " or binary_val" if row.is_numeric else ""
            raise ContractViolation(f"{path}.{field}: {row.enum_name} tensors carry their values in "
                                    f"{row.proto_field}{where}", field=name)


def _has_values(tensor: Tensor, field: str) -> bool:
    return len(getattr(tensor, field)) > 0


def encode_outputs(outputs: Mapping[str, NDArray], specs: Mapping[str, TensorSpec], who: str) -> PredictResponse:
    """Outputs as Hydrosphere tensors, values in the typed fields, each of its contract's dtype
    when that holds the values exactly (else the model's own); one that cannot be written is
    the model's failure (`who` answered it)."""
    response = PredictResponse()
    for name, array in outputs.items():
        try:
            proto = encode_tensor(array, answer_dtype(array, specs.get(name)), typed=True)
        except CodecError as error:
            raise BackendError(f"model {who} answered output {name!r}: {error.message}", field=name) from None
        response.outputs[name].CopyFrom(from_tensor_proto(proto))
    return response
