"""Health for load balancers: `/health/live` (the process answers) and `/health/ready`
(every application has ready backends, from the background watcher; 503 while draining),
with each request-log sink's state as detail."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.dataplane import DataPlane
from gateway.health_watch import BackendHealth, HealthWatcher

UNCHECKED = BackendHealth(False, 0.0)


async def live(request: Request) -> Response:
    return Response(b'{"status":"alive"}', media_type="application/json")


async def ready(request: Request) -> Response:
    """200 when every application's models passed their last health check and its contracts
    fit together; 503 with detail (each application's `problems`) otherwise (`shadow_problems`
    only disable those shadows), and at once when
    the gateway is shutting down."""
    is_ready, body = readiness(request.app.state.dataplane, request.app.state.health,
                               bool(request.app.state.draining))
    return Response(orjson.dumps(body), status_code=200 if is_ready else 503,
                    media_type="application/json")


def readiness(dataplane: DataPlane, watcher: HealthWatcher, draining: bool) -> tuple[bool, dict[str, object]]:
    """Whether the gateway is ready (every front door answers by it), with the detail of /health/ready."""
    registry = dataplane.registry
    applications = {}
    for name, app in registry.applications.items():
        models = {}
        for model in app.models():
            health = watcher.health.get(model.label, UNCHECKED)
            models[model.label] = {"ready": health.ready, "target": model.backend.target,
                                   "checked_at": health.checked_at}
            if model.unavailable is not None:  # why: a runtime that did not start, a failed warmup
                models[model.label]["error"] = model.unavailable
        # Contracts discovered from backends that do not fit together keep it not ready, and so
        # does a stage none of whose live variants is served yet (one unserved canary does not).
        unserved = app.unserved()
        down = {id(variant) for _, variant, _ in unserved}
        serving = all(any(id(variant) not in down for variant in stage.live) for stage in app.stages)
        applications[name] = {"ready": not app.problems and serving and all(m["ready"] for m in models.values()),
                              "models": models, "problems": list(app.problems),
                              "shadow_problems": list(app.shadow_problems),  # they disable a shadow, not it
                              "unserved_variants": [f"stage {stage.number} ({variant.name}): {reason}"
                                                    for stage, variant, reason in unserved]}
    is_ready = not draining and all(detail["ready"] for detail in applications.values())
    status = "draining" if draining else "ready" if is_ready else "not_ready"
    body: dict[str, object] = {"status": status, "applications": applications}
    if dataplane.request_logs is not None:
        body["request_logs"] = dataplane.request_logs.health()  # detail only: a sink down never makes it unready
    return is_ready, body


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
