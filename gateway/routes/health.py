"""Health for load balancers: `/health/live` (the process answers) and `/health/ready`."""

from __future__ import annotations

import asyncio

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.dataplane import DataPlane
from gateway.settings import Settings


async def live(request: Request) -> Response:
    return Response(b'{"status":"alive"}', media_type="application/json")


async def ready(request: Request) -> Response:
    """200 when every application's models answer their health check; 503 with detail else."""
    dataplane: DataPlane = request.app.state.dataplane
    settings: Settings = request.app.state.settings
    registry = dataplane.registry
    models = list(registry.models.values())
    results = await asyncio.gather(
        *(model.backend.healthy(settings.health_check_timeout_s) for model in models)
    )
    healthy = {model.label: ok for model, ok in zip(models, results, strict=True)}
    applications = {
        name: {
            "ready": all(healthy[m.label] for m in app.models()),
            "models": {m.label: {"ready": healthy[m.label], "target": m.backend.target}
                       for m in app.models()},
        }
        for name, app in registry.applications.items()
    }
    is_ready = all(detail["ready"] for detail in applications.values())
    body = {"status": "ready" if is_ready else "not_ready", "applications": applications}
    return Response(orjson.dumps(body), status_code=200 if is_ready else 503,
                    media_type="application/json")


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
