"""The Open Inference Protocol's (KServe v2) REST API on the gateway.

    GET  /v2                                               server metadata
    GET  /v2/health/live | /v2/health/ready                200 when live / ready, else 400 (empty bodies)
    GET  /v2/models/{m}[/versions/{v}]                     model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready               200 when ready, else 400
    POST /v2/models/{m}[/versions/{v}]/infer               inference: JSON, or the binary extension

`{m}` is an application (which wins when a model shares its name) or a model, resolved as on
the other front doors; `{v}` is a version number or a version label of that model (an
application has no versions: 404). Inputs are checked against the contract as on the native
API; the JSON tensor rules are `tensorcodecs.oip_json`, the binary extension `gateway.oip_binary`.
Errors answer `{"error": "..."}` with the status of the gateway's error tree (gateway.answers
renders them so for every request on /v2). The rules the gRPC door shares (names and versions,
readiness, metadata, requested outputs, request parameters) are `gateway.oip_models`', the JSON
request's reading and answering `gateway.oip_rest` (the application route's v2 dialect uses it too).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__, oip_models
from gateway.answer_headers import Timing
from gateway.auth import authorize
from gateway.body import headers_of, parse_json, read_body_buffer
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import ContractViolation, codec_errors
from gateway.oip_binary import split_body
from gateway.oip_rest import answer, json_response, request_fields
from gateway.registry import Application
from gateway.routes.health import readiness
from gateway.routes.native import MODEL_SPEC_HEADER, request_context
from gateway.settings import Settings
from tensorcodecs import CodecError, Signature, TensorSpec
from tensorcodecs.json_codec import may_hold_bools
from tensorcodecs.oip_json import decode_inputs

EXTENSIONS = ("binary_tensor_data",)  # Triton's name for the binary tensor extension
_CONTRACT_VIOLATION = codec_errors(ContractViolation)  # inputs that do not fit the contract


def _state(request: Request) -> tuple[DataPlane, Settings]:
    return request.app.state.dataplane, request.app.state.settings


# ---------------------------------------------------------------- server


async def server_metadata(request: Request) -> Response:
    return json_response({"name": oip_models.SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})


async def server_live(request: Request) -> Response:
    return Response(status_code=200)


async def server_ready(request: Request) -> Response:
    """The gateway's readiness (gateway.routes.health), as the protocol says it: 200 or 400."""
    is_ready, _ = readiness(request.app.state.dataplane, request.app.state.health, bool(request.app.state.draining))
    return Response(status_code=200 if is_ready else 400)


# ---------------------------------------------------------------- models


def _named(request: Request) -> oip_models.Named:
    """The application or model the path names, at the version it asks for."""
    params = request.path_params
    return oip_models.resolve(request.app.state.dataplane, params["name"], params.get("version"),
                              lambda name: authorize(request, name))


async def _contract(dataplane: DataPlane, named: oip_models.Named, context: RequestContext
                    ) -> tuple[oip_models.Named, Signature]:
    if isinstance(named, Application):
        app = await dataplane.with_contract(named, context) if named.from_backend else named
        return app, app.signature
    return named, await dataplane.signature(named, None, context)


def _tensors(specs: Mapping[str, TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": name, "datatype": datatype, "shape": shape}
            for name, datatype, shape in oip_models.metadata_tensors(specs)]


async def model_metadata(request: Request) -> Response:
    """An application's first stage inputs and last stage outputs, or a model's contract with
    the versions the gateway serves of it and its backend's protocol as `platform`."""
    dataplane, settings = _state(request)
    named = _named(request)
    context = request_context(request, settings, named if isinstance(named, Application) else None)
    named, signature = await _contract(dataplane, named, context)
    name = named.name if isinstance(named, Application) else request.path_params["name"]
    return json_response({"name": name, "versions": oip_models.versions(dataplane, named),
                          "platform": oip_models.platform(named), "inputs": _tensors(signature.inputs),
                          "outputs": _tensors(signature.outputs)})


async def model_ready(request: Request) -> Response:
    """200 when the application or model is ready (`oip_models.is_ready`: never while the
    gateway drains), else 400."""
    ready = oip_models.is_ready(request.app.state.dataplane, request.app.state.health,
                                bool(request.app.state.draining), _named(request))
    return Response(status_code=200 if ready else 400)


# ---------------------------------------------------------------- inference


async def infer(request: Request) -> Response:
    """An inference request on an application or a model: inputs checked against its contract,
    requested outputs checked before it runs, answered in JSON or with a binary part."""
    dataplane, settings = _state(request)
    named = _named(request)
    headers = headers_of(request)  # any content type, as Triton takes (`curl -d` sends a form type)
    context = request_context(request, settings, named if isinstance(named, Application) else None)
    raw = await read_body_buffer(request, settings)
    started = time.perf_counter()
    text, binary = split_body(headers, raw)
    document = parse_json(text)
    request_id, inputs, wanted, binary_output = request_fields(document, context)
    parsed = time.perf_counter() - started
    named, signature = await _contract(dataplane, named, context)  # may ask the backend: not decoding
    started = time.perf_counter()
    if wanted:
        oip_models.check_requested(list(wanted), signature.outputs)
    try:
        arrays = decode_inputs(inputs, signature.inputs, binary, max_elements=settings.max_elements,
                               bools=may_hold_bools(text))
    except CodecError as error:
        raise _CONTRACT_VIOLATION.translate(error) from None
    context.timings.append(Timing("decode", parsed + time.perf_counter() - started))
    answer_headers: dict[str, str] = {}
    if isinstance(named, Application):
        outputs = await dataplane.predict(named, arrays, context)
        body: dict[str, Any] = {"model_name": named.name}
        who = named.name
    else:
        prediction = await dataplane.predict_model(named, arrays, context, None, signature.inputs)
        outputs = oip_models.contract_outputs(prediction.outputs, signature.outputs)
        body = {"model_name": request.path_params["name"]}
        version = oip_models.answered_version(named, prediction.spec.version if prediction.spec else None)
        if version:
            body["model_version"] = version
        if prediction.spec is not None:
            answer_headers[MODEL_SPEC_HEADER] = prediction.spec.header()
        who = named.model.label
    body["id"] = request_id if request_id is not None else context.request_id
    started = time.perf_counter()
    response = answer(body, outputs, wanted, binary_output, answer_headers, who, bool(signature.outputs))
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return response


INFER_PATH = "/v2/models/{name}/infer"  # served ahead of the router (gateway.pipeline.Endpoints)

routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route(INFER_PATH, infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
]
