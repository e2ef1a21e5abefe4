"""Applications' plans as JSON: `GET /gateway/applications` (those the caller may call) and
`GET /gateway/applications/{name}`: stages, variants with their weights and shares, shadows
with their samples, the contract at each edge (declared or discovered), the outputs dropped
between stages and the contract problems that keep it from serving. `gateway check --url`
compares a config with them."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.auth import authorize
from gateway.dataplane import DataPlane
from gateway.errors import PermissionDenied
from gateway.manifests.plan_json import plan_to_json
from gateway.registry import Application


def _answer(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def application_json(app: Application) -> dict[str, Any]:
    """One application's plan with the contracts known now and its problems."""
    return {**plan_to_json(app.plan()), "problems": list(app.problems), "shadow_problems": list(app.shadow_problems)}


def _may_call(request: Request, name: str) -> bool:
    try:
        authorize(request, name)
    except PermissionDenied:
        return False
    return True


async def list_applications(request: Request) -> Response:
    """Every application the caller's API key may call (all without keys), by name."""
    dataplane: DataPlane = request.app.state.dataplane
    apps = dataplane.registry.applications
    return _answer({"applications": [application_json(apps[name]) for name in sorted(apps)
                                     if _may_call(request, name)]})


async def get_application(request: Request) -> Response:
    """One application's plan (404 unknown, 403 when the caller's key may not call it)."""
    dataplane: DataPlane = request.app.state.dataplane
    app = dataplane.application(request.path_params["name"])
    authorize(request, app.name)
    return _answer(application_json(app))


class BesidePredict(Route):
    """A GET route on the path whose POST predicts (gateway.routes.native), ahead of it in the
    router: another method's 405 then names both (Starlette names the first route's methods)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise HTTPException(405, headers={"Allow": "GET, HEAD, POST"})
        await super().handle(scope, receive, send)


routes = [
    Route("/gateway/applications", list_applications, methods=["GET"]),
    BesidePredict("/gateway/applications/{name}", get_application, methods=["GET"]),
]
