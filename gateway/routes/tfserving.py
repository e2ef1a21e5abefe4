"""TensorFlow Serving's REST API on the gateway, with its semantics and error shape.

    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata   model metadata

`{m}` is a gateway model name (or the TF Serving name its backend serves). Errors answer
`{"error": "..."}` with the HTTP status of the one gRPC -> HTTP table, as TF Serving does
(gateway.answers renders them so for every request on this API).
The JSON <-> tensor rules live in `tensorcodecs.tfserving_json`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.answer_headers import Timing
from gateway.auth import authorize
from gateway.backends import Selector
from gateway.backends.capabilities import Classifies, HasMetadata, Regresses, ReportsStatus
from gateway.body import read_body
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BadRequest, CodecErrors, MethodNotAllowed, ModelError, codec_errors
from gateway.manifests import Resolution, resolved_name
from gateway.registry import Target
from gateway.routes.native import MODEL_SPEC_HEADER, check_element_count, request_context
from gateway.settings import Settings
from protos.tensorflow_serving.classification_pb2 import ClassificationResponse
from protos.tensorflow_serving.input_pb2 import Input
from protos.tensorflow_serving.regression_pb2 import RegressionResponse
from tensorcodecs import CodecError
from tensorcodecs.json_codec import may_hold_bools
from tensorcodecs.tfserving_json import (
    classification_json,
    decode_examples,
    decode_predict,
    encode_predict,
    model_metadata_json,
    model_status_json,
    parse_document,
    regression_json,
    signature_name,
)

ResultT = TypeVar("ResultT")
# What TF Serving's JSON codec refuses is its 400 (InvalidArgument), as are answers it cannot
# write (an empty tensor map, empty results); metadata it cannot convert is its 500.
_BAD_REQUEST = codec_errors(BadRequest)
_UNUSABLE_METADATA = CodecErrors(ModelError)
# TF Serving's own patterns (http_rest_api_util.cc), matched whole, as RE2::FullMatch does, on
# the path as sent (percent-encoded); the model name and label are decoded after the match.
_PREDICTION = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
                         re.IGNORECASE)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
                     re.IGNORECASE)


def _json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type="application/json", headers=headers)


async def models(request: Request) -> Response:
    """Every /v1/models request: parse the path as TF Serving does. Errors are answered in TF
    Serving's shape by the app's error layer (gateway.answers: this API surface's shape)."""
    try:
        return await _dispatch(request)
    except CodecError as error:  # any codec step of this API not translated at its own: TF's 400
        raise _BAD_REQUEST.translate(error) from None


async def _dispatch(request: Request) -> Response:
    path = _sent_path(request)
    if request.method == "POST":
        match = _PREDICTION.fullmatch(path)
        if match is None:
            raise BadRequest(f"Malformed request: POST {path}")  # TF: InvalidArgument
        name, version, label, method = match.groups()
        target = _resolve(request, unquote(name), version, label and unquote(label))
        handler = _POST_METHODS[method.lower()]
        return await handler(request, target)
    if request.method in ("GET", "HEAD"):
        match = _STATUS.fullmatch(path)
        if match is None:
            raise BadRequest(f"Malformed request: GET {path}")
        name, version, label, metadata = match.groups()
        if not name:
            raise BadRequest("Missing model name in request.")
        target = _resolve(request, unquote(name), version, label and unquote(label))
        return await (_metadata(request, target) if metadata else _status(request, target))
    raise MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")


def _sent_path(request: Request) -> str:
    """The path as the client sent it, percent-encoded (the decoded one may end in a newline,
    which a Python pattern's `$` would let through), without the app's root path."""
    raw: bytes | None = request.scope.get("raw_path")
    if raw is None:
        return quote(request.scope["path"], safe="/:")
    root = request.scope.get("root_path", "").encode("latin-1")
    return raw.removeprefix(root).decode("latin-1")


def _resolve(request: Request, name: str, version: str | None, label: str | None) -> Target:
    authorize(request, name)  # first: a key learns nothing of the names it may not call
    dataplane: DataPlane = request.app.state.dataplane
    target = dataplane.resolve(name, Selector(int(version) if version else None, label))
    authorize(request, target.model.manifest.name)  # a backend's model name may lead to another gateway model
    return target


def _context(request: Request) -> RequestContext:
    settings: Settings = request.app.state.settings
    return request_context(request, settings)


def _parse_document(body: bytes) -> tuple[dict[str, Any], str | None]:
    """A body as a JSON object, and the signature it names."""
    try:
        document = parse_document(body)
        return document, signature_name(document)
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None


async def _predict(request: Request, target: Target) -> Response:
    dataplane: DataPlane = request.app.state.dataplane
    context = _context(request)
    raw = await read_body(request, request.app.state.settings)
    started = time.perf_counter()
    document, name = _parse_document(raw)
    parsed = time.perf_counter() - started
    signature = await dataplane.signature(target, name, context)  # may ask the backend: not decoding
    started = time.perf_counter()
    try:
        body = decode_predict(document, signature.inputs, bools=may_hold_bools(raw))
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    context.timings.append(Timing("decode", parsed + time.perf_counter() - started))
    check_element_count(body.inputs, request.app.state.settings)
    prediction = await dataplane.predict_model(target, body.inputs, context, name, signature.inputs)
    headers = {MODEL_SPEC_HEADER: prediction.spec.header()} if prediction.spec else None
    started = time.perf_counter()
    try:
        answer = _json(encode_predict(prediction.outputs, body.format), headers)
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return answer


async def _classify(request: Request, target: Target) -> Response:
    examples, name, context = await _examples(request)
    backend = request.app.state.dataplane.capability(target.model, Classifies)
    response = await _timed_call(context, target, lambda: backend.classify(
        examples, context.remaining(), target.selector, name, context.request_id))
    return _results_json(classification_json, response.result, context)


async def _regress(request: Request, target: Target) -> Response:
    examples, name, context = await _examples(request)
    backend = request.app.state.dataplane.capability(target.model, Regresses)
    response = await _timed_call(context, target, lambda: backend.regress(
        examples, context.remaining(), target.selector, name, context.request_id))
    return _results_json(regression_json, response.result, context)


Answer = TypeVar("Answer", ClassificationResponse, RegressionResponse)


async def _timed_call(context: RequestContext, target: Target, call: Callable[[], Awaitable[Answer]]) -> Answer:
    """`call`'s answer, its time in Server-Timing `backend` (a failed call's too)."""
    started = time.perf_counter()
    response = None
    try:
        response = await call()
        return response
    finally:
        context.timings.append(Timing("backend", time.perf_counter() - started, _served_as(target, response)))


async def _examples(request: Request) -> tuple[Input, str | None, RequestContext]:
    """A Classify or Regress body: TF's `examples` as an Input, the signature name, the context
    (its decode timed)."""
    context = _context(request)
    body = await read_body(request, request.app.state.settings)
    started = time.perf_counter()
    document, name = _parse_document(body)
    try:
        examples = decode_examples(document)
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    context.timings.append(Timing("decode", time.perf_counter() - started))
    return examples, name, context


def _results_json(encode: Callable[[ResultT], bytes], result: ResultT, context: RequestContext) -> Response:
    started = time.perf_counter()
    try:
        answer = _json(encode(result))
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    context.timings.append(Timing("encode", time.perf_counter() - started))
    return answer


def _served_as(target: Target, response: ClassificationResponse | RegressionResponse | None) -> str:
    """The model version that answered, else what was asked for as `resolved_name` names it
    (`toy@stable`, `toy` for a floating model), as Server-Timing names it."""
    manifest = target.model.manifest
    if response is not None and response.model_spec.HasField("version"):
        return f"{manifest.name}:{response.model_spec.version.value}"
    return resolved_name(Resolution(manifest, target.selector))


async def _status(request: Request, target: Target) -> Response:
    dataplane: DataPlane = request.app.state.dataplane
    context = _context(request)
    backend = dataplane.capability(target.model, ReportsStatus)
    return _json(model_status_json(await backend.status(context.remaining(), target.selector, context.request_id)))


async def _metadata(request: Request, target: Target) -> Response:
    dataplane: DataPlane = request.app.state.dataplane
    context = _context(request)
    backend = dataplane.capability(target.model, HasMetadata)
    response = await backend.metadata(context.remaining(), target.selector, context.request_id)
    try:
        return _json(model_metadata_json(response))
    except CodecError as error:
        raise _UNUSABLE_METADATA.translate(error) from None


_POST_METHODS: dict[str, Callable[[Request, Target], Awaitable[Response]]] = {
    "predict": _predict,
    "classify": _classify,
    "regress": _regress,
}


class _AnyPath(PathConvertor):
    """Starlette's `path` with newlines too: a percent-encoded `%0A` in a /v1 path reaches
    `models` (and TF's error shape) instead of missing the route."""

    regex = r"[\s\S]*"


register_url_convertor("tf_path", _AnyPath())

# Every method reaches `models`, so that wrong ones get TF's error shape too.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
routes = [
    Route("/v1/models", models, methods=_METHODS),
    Route("/v1/models/{rest:tf_path}", models, methods=_METHODS),
]
