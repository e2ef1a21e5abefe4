"""Model management: `POST /gateway/admin/models/{name}/reload-config` forwards a
ModelServerConfig (its JSON form) to the TF Serving server behind model `name`
(`HandleReloadConfigRequest`), then rediscovers the contracts of the models it serves.

With admin tokens configured (`auth.admin_token_sha256`), callers send
`Authorization: Bearer <token>`; without any, only loopback clients are served.
"""

from __future__ import annotations

import orjson
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import check_admin
from gateway.body import read_json
from gateway.dataplane import DataPlane
from gateway.errors import GRPC_TO_HTTP, BadRequest, grpc_code
from gateway.reload import Reloads
from gateway.routes.native import request_context
from gateway.settings import Settings
from protos.tensorflow_serving.model_server_config_pb2 import ModelServerConfig
from tensorcodecs.tfserving_json import status_dict


async def reload_config(request: Request) -> Response:
    check_admin(request)
    dataplane: DataPlane = request.app.state.dataplane
    target = dataplane.resolve(request.path_params["name"])
    settings: Settings = request.app.state.settings
    _, body = await read_json(request, settings)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a ModelServerConfig as a JSON object")
    try:
        config = json_format.ParseDict(body, ModelServerConfig())
    except json_format.ParseError as error:
        raise BadRequest(f"not a ModelServerConfig: {error}") from None
    context = request_context(request, settings)
    response = await dataplane.reload_config(target.model, config, context)
    code = int(response.status.error_code)
    status = GRPC_TO_HTTP.get(grpc_code(code), (502, ""))[0] if code else 200
    return Response(orjson.dumps({"status": status_dict(response.status)}), status_code=status,
                    media_type="application/json")


async def reload(request: Request) -> Response:
    """Re-read the config directory and swap to it (422 with the error when it is invalid,
    503 when the gateway stops meanwhile). A worker of `gateway serve --workers N` has the
    parent reload every worker (`app.state.reload_via`)."""
    check_admin(request)
    reloads: Reloads = getattr(request.app.state, "reload_via", None) or request.app.state.reloader
    result = await reloads.reload()
    body = {"applied": result.applied, "error": result.error, "applications": result.applications,
            "models": result.models, "failed": result.failed}
    return Response(orjson.dumps(body), status_code=result.status, media_type="application/json")


routes = [
    Route("/gateway/admin/models/{name}/reload-config", reload_config, methods=["POST"]),
    Route("/admin/reload", reload, methods=["POST"]),
]
