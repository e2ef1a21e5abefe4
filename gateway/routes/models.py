"""Models as JSON: `GET /gateway/models` (every model version the caller may call) and
`GET /gateway/models/{name}` (the versions of one): kind, labels, state, the contract and
where it comes from, and the applications using each. `gateway list` prints them."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import authorize
from gateway.dataplane import DataPlane
from gateway.errors import NotFound, PermissionDenied
from gateway.health_watch import HealthWatcher
from gateway.manifests.plan_json import specs_json
from gateway.registry import Model, Registry
from gateway.routes.applications import BesidePredict


def model_json(model: Model, registry: Registry, watcher: HealthWatcher | None) -> dict[str, Any]:
    """One model version: `state` is `ready`, `not_ready` (its last health check failed or none
    ran yet) or `unavailable` (not served: `error` says why); `contract` is `declared` (its
    manifest), `discovered` (its backend's metadata) or `unknown` (not discovered yet: inputs and
    outputs null)."""
    manifest = model.manifest
    health = watcher.health.get(model.label) if watcher is not None else None
    state = "unavailable" if model.unavailable is not None else "ready" if health and health.ready else "not_ready"
    if manifest.contract_declared:
        contract = "declared"
    else:
        contract = "discovered" if model.contracts.by_selector.get(None) else "unknown"
    signature = model.signature if contract != "unknown" else None
    body: dict[str, Any] = {
        "name": manifest.name, "version": manifest.version,
        "labels": dict(sorted(manifest.version_labels.items())),
        "kind": "local" if manifest.folder is not None else manifest.backend.protocol if manifest.backend else "local",
        "state": state,
        "contract": contract,
        "signature_name": model.signature_name,
        "inputs": specs_json(signature.inputs) if signature is not None else None,
        "outputs": specs_json(signature.outputs) if signature is not None else None,
        "applications": sorted(name for name, app in registry.applications.items()
                               if any(m is model for m in (*app.models(), *app.shadow_models()))),
    }
    if model.unavailable is not None:
        body["error"] = model.unavailable
    return body


def _may_call(request: Request, name: str) -> bool:
    try:
        authorize(request, name)
    except PermissionDenied:
        return False
    return True


def _answer(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def list_models(request: Request) -> Response:
    """Every model version the caller's API key may call (all without keys), by name and version."""
    dataplane: DataPlane = request.app.state.dataplane
    registry = dataplane.registry
    watcher: HealthWatcher | None = getattr(request.app.state, "health", None)
    return _answer({"models": [model_json(registry.models[key], registry, watcher) for key in sorted(registry.models)
                               if _may_call(request, key[0])]})


async def get_model(request: Request) -> Response:
    """The versions of one model (404 unknown, 403 when the caller's key may not call it)."""
    dataplane: DataPlane = request.app.state.dataplane
    registry = dataplane.registry
    name = request.path_params["name"]
    keys = sorted(key for key in registry.models if key[0] == name)
    if not keys:
        raise NotFound(f"model {name!r} does not exist")
    authorize(request, name)
    watcher: HealthWatcher | None = getattr(request.app.state, "health", None)
    return _answer({"name": name, "versions": [model_json(registry.models[key], registry, watcher) for key in keys]})


routes = [
    Route("/gateway/models", list_models, methods=["GET"]),
    BesidePredict("/gateway/models/{name}", get_model, methods=["GET"]),
]
