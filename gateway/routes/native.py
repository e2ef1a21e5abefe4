"""The native API: `POST /gateway/applications/{name}` and
`POST /gateway/models/{name}[/versions/{v}|/labels/{label}]` with `{"input": value, ...}`.

The application route also takes a TensorFlow Serving REST body and an Open Inference Protocol
(v2) body, and answers (errors included) in the dialect it was asked in; `gateway.intake` tells
them apart by rules the native form wins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import answers, oip_models, routing
from gateway.answer_headers import Timing
from gateway.auth import authorize, check_admin
from gateway.backends import NDArray, Selector
from gateway.binary import binary_response, decode_binary, is_binary
from gateway.body import headers_of, parse_json, read_body_buffer, read_json_body
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BadRequest, ContractViolation, PermissionDenied, Unauthenticated, codec_errors
from gateway.intake import Dialect, dialect_of
from gateway.observability import CONTEXT_KEY
from gateway.oip_binary import HEADER_LENGTH as OIP_HEADER_LENGTH
from gateway.oip_rest import answer as oip_answer
from gateway.oip_rest import request_fields
from gateway.registry import Application
from gateway.settings import Settings
from tensorcodecs import CodecError
from tensorcodecs.json_codec import decode_inputs, encode_outputs, may_hold_bools
from tensorcodecs.oip_json import decode_inputs as oip_decode_inputs
from tensorcodecs.tfserving_json import Format, decode_predict, encode_predict, signature_name


class JSONResponse(Response):
    media_type = "application/json"


TIMEOUT_HEADER = "x-request-timeout"
MODEL_SPEC_HEADER = "x-model-spec"  # the model spec a backend answered with (both APIs)
_CONTRACT_VIOLATION = codec_errors(ContractViolation)  # a body that does not fit the contract
_BAD_REQUEST = codec_errors(BadRequest)  # a TF Serving answer its format cannot write, a bad signature_name
_DEFAULT_SIGNATURE = "serving_default"  # TF's default signature key, which a client may name
_TF_FORMATS = {Dialect.TF_ROW: Format.ROW, Dialect.TF_COLUMNAR: Format.COLUMNAR}


def request_context(request: Request, settings: Settings, app: Application | None = None) -> RequestContext:
    """The request's context: its id, its labels (`application` when `app` is given; the core
    adds the model and version) and its deadline: the client's `x-request-timeout`
    (milliseconds, capped at `max_request_timeout_s`), else the application's `timeout_s`, else
    the gateway's default; for an application, the caller's routing headers (`routing_wishes`).
    It is kept in the scope, where the observer reads its labels once
    the request is answered (errors included, a bad `x-request-timeout` too)."""
    timeout = settings.request_timeout_s
    if app is not None and app.manifest.timeout_s is not None:
        timeout = app.manifest.timeout_s
    labels = {"application": app.name} if app is not None else {}
    scope = request.scope
    context = scope[CONTEXT_KEY] = RequestContext.start(scope["state"]["request_id"], timeout, labels)
    headers = headers_of(request)
    if app is not None:
        routing_wishes(settings, app, headers, context, lambda: check_admin(request))
    header = headers.get(TIMEOUT_HEADER)
    if header is not None:
        try:
            millis = float(header)
        except ValueError:
            millis = -1.0
        if not millis > 0 or millis == float("inf"):
            raise BadRequest(f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {header!r}")
        context.deadline = time.monotonic() + min(millis / 1000, settings.max_request_timeout_s)
    return context


def routing_wishes(settings: Settings, app: Application, headers: Mapping[str, str], context: RequestContext,
                   check_admin_token: Callable[[], None]) -> None:
    """The caller's sticky key and forced variants (gateway/routing.py) from its headers (or
    gRPC metadata: lower-case keys), checked: forcing needs an application that allows it and,
    once admin tokens are configured, an admin token (`check_admin_token` raises without one: 403)."""
    key = headers.get(routing.ROUTE_KEY_HEADER)
    if key is not None:
        context.route_key = routing.route_key(key)
    forced = headers.get(routing.VARIANT_HEADER)
    if forced is None:
        return
    if not app.manifest.allow_variant_override:
        raise PermissionDenied(f"application {app.name} does not allow {routing.VARIANT_HEADER} "
                               "(its manifest may set allow_variant_override: true)")
    if settings.auth.admin_token_sha256:
        try:
            check_admin_token()
        except Unauthenticated:
            raise PermissionDenied(f"{routing.VARIANT_HEADER} needs Authorization: Bearer <admin token>") from None
    context.variant_override = routing.variant_override(app, forced)


def check_element_count(inputs: Mapping[str, NDArray], settings: Settings) -> None:
    """400 when the tensors of one request hold more elements than `max_elements`."""
    count = sum(array.size for array in inputs.values())
    if count > settings.max_elements:
        raise ContractViolation(f"the request holds {count} tensor elements; the limit is "
                                f"{settings.max_elements}")


async def predict_application(request: Request) -> Response:
    """Validate the body against the application's contract, run it, answer JSON."""
    dataplane: DataPlane = request.app.state.dataplane
    name = request.path_params["name"]
    authorize(request, name)  # first: a key learns nothing of the applications it may not call
    app = dataplane.application(name)
    settings: Settings = request.app.state.settings
    headers = headers_of(request)
    context = request_context(request, settings, app)
    if app.from_backend:
        app = await dataplane.with_contract(app, context)
    timings = context.timings
    if is_binary(headers):  # a raw tensor (gateway/binary.py)
        if OIP_HEADER_LENGTH in headers:  # never read a JSON header and its tensors as one raw tensor
            raise BadRequest(f"the Open Inference Protocol's binary tensor extension ({OIP_HEADER_LENGTH}) is "
                             f"served on /v2/models/{name}/infer; this route takes one raw tensor with "
                             "x-tensor-* headers, or a JSON body")
        data = await read_body_buffer(request, settings)
        started = time.perf_counter()
        inputs = decode_binary(headers, data, app.signature.inputs)
        timings.append(Timing("decode", time.perf_counter() - started))
        check_element_count(inputs, settings)
        outputs = await dataplane.predict(app, inputs, context)
        started = time.perf_counter()
        answer = binary_response(outputs, app.signature.outputs) or JSONResponse(
            encode_outputs(outputs, app.signature.outputs))
        timings.append(Timing("encode", time.perf_counter() - started))
        return answer
    raw = await read_json_body(request, settings)
    started = time.perf_counter()
    body = parse_json(raw)
    dialect = dialect_of(body, app.signature.inputs)
    if dialect is not Dialect.NATIVE:
        return await _predict_in_dialect(request, app, body, raw, dialect, context, started)
    try:
        inputs = decode_inputs(body, app.signature.inputs, bools=may_hold_bools(raw))
    except CodecError as error:
        raise _CONTRACT_VIOLATION.translate(error) from None
    timings.append(Timing("decode", time.perf_counter() - started))
    check_element_count(inputs, settings)
    outputs = await dataplane.predict(app, inputs, context)
    started = time.perf_counter()
    answer = JSONResponse(encode_outputs(outputs, app.signature.outputs))
    timings.append(Timing("encode", time.perf_counter() - started))
    return answer


async def _predict_in_dialect(request: Request, app: Application, body: dict[str, object], raw: bytes,
                              dialect: Dialect, context: RequestContext, started: float) -> Response:
    """An application asked in TF Serving's or the Open Inference Protocol's body, answered (and
    refused) in the same dialect."""
    if dialect is Dialect.V2:
        request.scope[answers.SHAPE_KEY] = answers.OPEN_INFERENCE
        return await _predict_v2(request, app, body, raw, context, started)
    request.scope[answers.SHAPE_KEY] = answers.TF_SERVING
    dataplane: DataPlane = request.app.state.dataplane
    signature = app.signature
    try:
        name = signature_name(body)
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    if name is not None and name not in (_DEFAULT_SIGNATURE, signature.name):
        own = f" ({signature.name!r})" if signature.name else ""
        raise BadRequest(f"application {app.name} has one contract{own}; signature_name {name!r} names none",
                         field="signature_name")
    try:
        predict = decode_predict(body, signature.inputs, bools=may_hold_bools(raw))
    except CodecError as error:
        raise _CONTRACT_VIOLATION.translate(error) from None
    context.timings.append(Timing("decode", time.perf_counter() - started))
    check_element_count(predict.inputs, request.app.state.settings)
    outputs = await dataplane.predict(app, predict.inputs, context)
    if signature.outputs:
        outputs = {name: outputs[name] for name in signature.outputs if name in outputs}
    started = time.perf_counter()
    try:
        answer = JSONResponse(encode_predict(outputs, _TF_FORMATS[dialect]))
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return answer


async def _predict_v2(request: Request, app: Application, body: dict[str, object], raw: bytes,
                      context: RequestContext, started: float) -> Response:
    """An Open Inference Protocol body, with the /v2 infer route's own reading and answering
    (requested outputs, `binary_data_output`, `id`); no binary part (that is /v2's)."""
    settings: Settings = request.app.state.settings
    request_id, items, wanted, binary_output = request_fields(body, context)
    signature = app.signature
    if wanted:
        oip_models.check_requested(list(wanted), signature.outputs)
    try:
        inputs = oip_decode_inputs(items, signature.inputs, max_elements=settings.max_elements,
                                   bools=may_hold_bools(raw))
    except CodecError as error:
        raise _CONTRACT_VIOLATION.translate(error) from None
    context.timings.append(Timing("decode", time.perf_counter() - started))
    outputs = await request.app.state.dataplane.predict(app, inputs, context)
    outputs = oip_models.contract_outputs(outputs, signature.outputs)
    answer: dict[str, object] = {"model_name": app.name,
                                 "id": request_id if request_id is not None else context.request_id}
    started = time.perf_counter()
    response = oip_answer(answer, outputs, wanted, binary_output, {}, app.name, bool(signature.outputs))
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return response


async def predict_model(request: Request) -> Response:
    """One model at a version or label, checked against its (declared or discovered) contract;
    the model spec the backend answered with comes back in `x-model-spec`."""
    dataplane: DataPlane = request.app.state.dataplane
    settings: Settings = request.app.state.settings
    params = request.path_params
    authorize(request, params["name"])
    target = dataplane.resolve(params["name"], Selector(params.get("version"), params.get("label")))
    headers = headers_of(request)
    binary = is_binary(headers)  # a raw tensor (gateway/binary.py), as on the application route
    context = request_context(request, settings)
    parsed = 0.0  # the JSON parse, timed apart: the contract lookup between may ask the backend
    if binary:
        data = await read_body_buffer(request, settings)
        signature = await dataplane.signature(target, None, context)
        started = time.perf_counter()
        inputs = decode_binary(headers, data, signature.inputs)
    else:
        raw = await read_json_body(request, settings)
        started = time.perf_counter()
        body = parse_json(raw)
        parsed = time.perf_counter() - started
        signature = await dataplane.signature(target, None, context)
        started = time.perf_counter()
        try:
            inputs = decode_inputs(body, signature.inputs, bools=may_hold_bools(raw))
        except CodecError as error:
            raise _CONTRACT_VIOLATION.translate(error) from None
    context.timings.append(Timing("decode", parsed + time.perf_counter() - started))
    check_element_count(inputs, settings)
    prediction = await dataplane.predict_model(target, inputs, context, None, signature.inputs)
    outputs = prediction.outputs
    if signature.outputs:
        outputs = {name: outputs[name] for name in signature.outputs if name in outputs}
    spec = {MODEL_SPEC_HEADER: prediction.spec.header()} if prediction.spec else {}
    started = time.perf_counter()
    answer = binary_response(outputs, signature.outputs) if binary else None
    if answer is not None:
        answer.headers.update(spec)
    else:
        answer = JSONResponse(encode_outputs(outputs, signature.outputs), headers=spec or None)
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return answer


routes = [
    # The busiest route first: Starlette tries routes in order, one regular expression each.
    Route("/gateway/applications/{name}", predict_application, methods=["POST"]),
    # Hydrosphere's spelling of the same route.
    Route("/gateway/application/{name}", predict_application, methods=["POST"]),
    Route("/gateway/models/{name}", predict_model, methods=["POST"]),
    Route("/gateway/models/{name}/versions/{version:int}", predict_model, methods=["POST"]),
    Route("/gateway/models/{name}/labels/{label}", predict_model, methods=["POST"]),
]
