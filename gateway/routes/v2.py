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
renders them so for every request on /v2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway.answer_headers import Timing
from gateway.auth import authorize
from gateway.backends import NDArray, Selector
from gateway.body import headers_of, parse_json, read_body
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import (
    BadRequest,
    CodecErrors,
    ContractViolation,
    ModelError,
    NotFound,
    codec_errors,
)
from gateway.health_watch import HealthWatcher
from gateway.oip_binary import binary_answer, split_body
from gateway.registry import Application, Target
from gateway.routes.health import UNCHECKED, readiness
from gateway.routes.native import MODEL_SPEC_HEADER, request_context
from gateway.settings import Settings
from tensorcodecs import CodecError, Signature, TensorSpec
from tensorcodecs.json_codec import may_hold_bools
from tensorcodecs.oip_json import BINARY_DATA_OUTPUT, decode_inputs, encode_outputs, requested_outputs

SERVER_NAME = "inference-gateway"
EXTENSIONS = ("binary_tensor_data",)  # Triton's name for the binary tensor extension
APPLICATION_PLATFORM = "gateway-application"
EMBEDDED_PLATFORM = "embedded"
_MAX_VERSION_DIGITS = 19
_CONTRACT_VIOLATION = codec_errors(ContractViolation)  # inputs that do not fit the contract
_BAD_REQUEST = codec_errors(BadRequest)  # a request's `outputs` or `parameters` the protocol refuses
_UNWRITABLE = CodecErrors(ModelError)  # an answer the protocol has no datatype for (complex)


def _json(body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


def _state(request: Request) -> tuple[DataPlane, Settings]:
    return request.app.state.dataplane, request.app.state.settings


# ---------------------------------------------------------------- server


async def server_metadata(request: Request) -> Response:
    return _json({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})


async def server_live(request: Request) -> Response:
    return Response(status_code=200)


async def server_ready(request: Request) -> Response:
    """The gateway's readiness (gateway.routes.health), as the protocol says it: 200 or 400."""
    is_ready, _ = readiness(request.app.state.dataplane, request.app.state.health, bool(request.app.state.draining))
    return Response(status_code=200 if is_ready else 400)


# ---------------------------------------------------------------- models


def _named(request: Request) -> Application | Target:
    """The application or model the path names, at the version it asks for."""
    dataplane: DataPlane = request.app.state.dataplane
    params = request.path_params
    name: str = params["name"]
    version: str | None = params.get("version")
    authorize(request, name)  # first: a key learns nothing of the names it may not call
    app = dataplane.registry.applications.get(name)
    if app is not None:
        if version is not None:
            raise NotFound(f"{name!r} is an application: applications have no versions (name a model to "
                           "ask for one)")
        return app
    selector = None
    if version is not None:
        if not (version.isdigit() and version.isascii()):
            selector = Selector(label=version)
        elif len(version) > _MAX_VERSION_DIGITS:  # beyond int64, as no version is (and int() refuses 4,300 digits)
            raise NotFound(f"model {name!r} has no version {version[:24]}...")
        else:
            selector = Selector(int(version))
    target = dataplane.resolve(name, selector)
    authorize(request, target.model.manifest.name)  # a backend's model name may lead to another gateway model
    return target


async def _contract(dataplane: DataPlane, named: Application | Target, context: RequestContext
                    ) -> tuple[Application | Target, Signature]:
    if isinstance(named, Application):
        app = await dataplane.with_contract(named, context) if named.from_backend else named
        return app, app.signature
    return named, await dataplane.signature(named, None, context)


def _tensors(specs: Mapping[str, TensorSpec]) -> list[dict[str, Any]]:
    """Contract tensors as metadata: -1 for any size, [-1] for any shape (tensors of dtypes the
    protocol has no datatype for are left out, as `signature_def` leaves them out)."""
    return [{"name": name, "datatype": spec.dtype.oip, "shape": [-1] if spec.shape is None else list(spec.shape)}
            for name, spec in specs.items() if spec.dtype.oip]


async def model_metadata(request: Request) -> Response:
    """An application's first stage inputs and last stage outputs, or a model's contract with
    the versions the gateway serves of it and its backend's protocol as `platform`."""
    dataplane, settings = _state(request)
    named = _named(request)
    context = request_context(request, settings, named if isinstance(named, Application) else None)
    named, signature = await _contract(dataplane, named, context)
    if isinstance(named, Application):
        body: dict[str, Any] = {"name": named.name, "versions": [], "platform": APPLICATION_PLATFORM}
    else:
        manifest = named.model.manifest
        versions = sorted(version for model_name, version in dataplane.registry.models if model_name == manifest.name)
        platform = EMBEDDED_PLATFORM if manifest.folder is not None or manifest.backend is None \
            else manifest.backend.protocol
        body = {"name": request.path_params["name"], "versions": [str(v) for v in versions], "platform": platform}
    body["inputs"] = _tensors(signature.inputs)
    body["outputs"] = _tensors(signature.outputs)
    return _json(body)


async def model_ready(request: Request) -> Response:
    """200 when the application (as /health/ready judges it) or the model version (its last
    health check passed and it is served) is ready, else 400."""
    dataplane: DataPlane = request.app.state.dataplane
    watcher: HealthWatcher = request.app.state.health
    named = _named(request)
    if isinstance(named, Application):
        _, detail = readiness(dataplane, watcher, bool(request.app.state.draining))
        applications: dict[str, dict[str, Any]] = detail["applications"]  # type: ignore[assignment]
        ready = bool(applications[named.name]["ready"])
    else:
        model = named.model
        ready = model.unavailable is None and watcher.health.get(model.label, UNCHECKED).ready
    return Response(status_code=200 if ready else 400)


# ---------------------------------------------------------------- inference


async def infer(request: Request) -> Response:
    """An inference request on an application or a model: inputs checked against its contract,
    requested outputs checked before it runs, answered in JSON or with a binary part."""
    dataplane, settings = _state(request)
    named = _named(request)
    headers = headers_of(request)  # any content type, as Triton takes (`curl -d` sends a form type)
    context = request_context(request, settings, named if isinstance(named, Application) else None)
    raw = await read_body(request, settings)
    started = time.perf_counter()
    text, binary = split_body(headers, raw)
    document = parse_json(text)
    request_id, inputs, wanted, binary_output = _request_fields(document)
    parsed = time.perf_counter() - started
    named, signature = await _contract(dataplane, named, context)  # may ask the backend: not decoding
    started = time.perf_counter()
    if signature.outputs:
        _check_requested(wanted, signature.outputs)
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
    else:
        prediction = await dataplane.predict_model(named, arrays, context, None, signature.inputs)
        outputs = prediction.outputs
        if signature.outputs:
            outputs = {name: outputs[name] for name in signature.outputs if name in outputs}
        body = {"model_name": request.path_params["name"]}
        version = _answered_version(named, prediction.spec.version if prediction.spec else None)
        if version is not None:
            body["model_version"] = str(version)
        if prediction.spec is not None:
            answer_headers[MODEL_SPEC_HEADER] = prediction.spec.header()
    body["id"] = request_id if request_id is not None else context.request_id
    started = time.perf_counter()
    answer = _answer(body, outputs, wanted, binary_output, answer_headers)
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return answer


def _request_fields(document: object) -> tuple[str | None, object, dict[str, bool | None] | None, bool]:
    """The request's id, inputs, requested outputs (None: all) and `binary_data_output`."""
    if not isinstance(document, dict):
        raise BadRequest("an inference request is a JSON object with inputs")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string", field="id")
    if "inputs" not in document:
        raise BadRequest("an inference request needs inputs", field="inputs")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object", field="parameters")
    binary_output = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(binary_output, bool):
        raise BadRequest(f"{BINARY_DATA_OUTPUT} must be true or false", field=f"parameters.{BINARY_DATA_OUTPUT}")
    requested = document.get("outputs")
    try:
        wanted = requested_outputs(requested) if requested is not None else None
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    return request_id, document["inputs"], wanted, binary_output


def _check_requested(wanted: Mapping[str, bool | None] | None, known: Mapping[str, object]) -> None:
    """A requested output the contract (or the answer) does not have is the client's mistake."""
    for index, name in enumerate(wanted or ()):
        if name not in known:
            raise BadRequest(f"unknown output {name!r}; expected {', '.join(map(repr, known)) or '(none)'}",
                             field=f"outputs[{index}].name")


def _answered_version(target: Target, served: int | None) -> int | None:
    """The version that answered: the backend's word, else the one asked for, else the gateway
    model's own (a model pinned to one version)."""
    if served is not None:
        return served
    if target.selector is not None and target.selector.version is not None:
        return target.selector.version
    manifest = target.model.manifest
    return None if manifest.floating else manifest.version


def _answer(body: dict[str, Any], outputs: Mapping[str, NDArray], wanted: Mapping[str, bool | None] | None,
            binary_output: bool, headers: dict[str, str]) -> Response:
    _check_requested(wanted, outputs)
    try:
        items, buffers = encode_outputs(outputs, wanted, binary_output)
    except CodecError as error:
        raise _UNWRITABLE.translate(error) from None
    body["outputs"] = items
    if not buffers:
        return _json(body, headers)
    return binary_answer(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), buffers, headers)


routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
]
