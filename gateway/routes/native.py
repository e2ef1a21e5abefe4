"""The native API: `POST /gateway/applications/{name}` with `{"input": value, ...}`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import ContractViolation, InvalidJSON, UnsupportedMediaType
from gateway.settings import Settings
from tensorcodecs import CodecError
from tensorcodecs.json_codec import decode_inputs, encode_outputs, loads

JSON_TYPES = ("application/json", "text/json")


class JSONResponse(Response):
    media_type = "application/json"


def check_json_content_type(request: Request) -> None:
    """415 unless the body is declared JSON (or not declared at all)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(f"content type {media!r} is not supported; send application/json")


async def read_json(request: Request) -> object:
    """The request body parsed as JSON, or InvalidJSON."""
    check_json_content_type(request)
    body = await request.body()
    try:
        return loads(body)
    except CodecError as error:
        raise InvalidJSON(error.message) from None


def request_context(request: Request, settings: Settings) -> RequestContext:
    return RequestContext.start(request.state.request_id, settings.request_timeout_s)


async def predict_application(request: Request) -> Response:
    """Validate the body against the application's contract, run it, answer JSON."""
    dataplane: DataPlane = request.app.state.dataplane
    app = dataplane.application(request.path_params["name"])
    body = await read_json(request)
    try:
        inputs = decode_inputs(body, app.signature.inputs)
    except CodecError as error:
        raise ContractViolation(error.message, field=error.field) from None
    outputs = await dataplane.predict(app, inputs, request_context(request, request.app.state.settings))
    return JSONResponse(encode_outputs(outputs, app.signature.outputs))


routes = [
    Route("/gateway/applications/{name}", predict_application, methods=["POST"]),
    # Hydrosphere's spelling of the same route.
    Route("/gateway/application/{name}", predict_application, methods=["POST"]),
]
