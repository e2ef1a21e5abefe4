"""Manifests applied and deleted through the admin API (`gateway apply -f`, `gateway delete`):
`POST /gateway/admin/apply[?dry_run=true]` with `{"file", "text"}`, `DELETE
/gateway/admin/applications/{name}`, `DELETE /gateway/admin/models/{name}/versions/{version}`.
Each is a config change (gateway.store) made by the process that owns the config and reloaded
as one (reverted when the reload is refused)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import check_admin
from gateway.body import read_json
from gateway.dataplane import DataPlane
from gateway.errors import BadRequest
from gateway.reload import ReloadResult, Reloads
from gateway.settings import Settings
from gateway.store.apply import ApplyManifests, apply_answer, running_plans
from gateway.store.changes import ConfigChange
from gateway.store.delete import DeleteApplication, DeleteModel
from gateway.store.journal import ConfigStore

MAX_FILE_NAME = 255
DEFAULT_FILE = "<request>"  # what errors name the text when the client names no file
_REFUSED_CODES = {404: "not_found", 409: "conflict", 422: "reload_refused", 500: "internal", 503: "unavailable",
                  504: "deadline_exceeded"}
_BODY = ('the body must be a JSON object {"text": "<YAML documents>", "file": "<the name errors give them>"} '
         '("file" optional)')


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _reloads(request: Request) -> Reloads:
    reloads: Reloads = getattr(request.app.state, "reload_via", None) or request.app.state.reloader
    return reloads


def _refused(result: ReloadResult, file: str | None = None) -> Response:
    message = result.error or "the change was refused"
    code = _REFUSED_CODES.get(result.status, "refused")
    if result.status == 422 and file is not None and message.startswith(f"{file}:"):
        code = "invalid_manifest"  # the config serving changed meanwhile and the documents no longer fit
    return _answer({"error": {"code": code, "message": message}}, result.status)


def _dry_run(request: Request) -> bool:
    value = request.query_params.get("dry_run", "false").lower()
    if value not in ("true", "1", "false", "0"):
        raise BadRequest(f"dry_run: expected true or false, got {value!r}", field="dry_run")
    return value in ("true", "1")


async def apply(request: Request) -> Response:
    """Apply the documents (or, with `dry_run`, say what applying them would do)."""
    check_admin(request)
    settings: Settings = request.app.state.settings
    dry_run = _dry_run(request)
    _, body = await read_json(request, settings)
    if not isinstance(body, dict) or "text" not in body or not set(body) <= {"file", "text"}:
        raise BadRequest(_BODY)
    file, text = body.get("file", DEFAULT_FILE), body["text"]
    if not isinstance(file, str) or not isinstance(text, str):
        raise BadRequest(_BODY)
    if not file or len(file) > MAX_FILE_NAME or any(c in file for c in "\n\r\0"):
        raise BadRequest(f"file: a name of 1 to {MAX_FILE_NAME} characters on one line", field="file")
    change = ApplyManifests(file, text)
    dataplane: DataPlane = request.app.state.dataplane
    running = running_plans(dataplane.registry.applications)
    # Checked here first against the config this process serves (422 with the document's file:line,
    # a dry run's whole answer); the process owning the config checks again as it makes the change.
    planned = change.plan(request.app.state.reloader.config, settings.config_dir)
    if dry_run:
        return _answer(apply_answer(planned.detail(), running, applied=False, dry_run=True))
    ConfigStore(settings.config_dir).check_writable()
    result = await _reloads(request).change(change)
    if not result.applied:
        return _refused(result, file)
    return _answer(apply_answer(result.detail, running, applied=True, dry_run=False))


async def _delete(request: Request, change: ConfigChange) -> Response:
    settings: Settings = request.app.state.settings
    ConfigStore(settings.config_dir).check_writable()
    result = await _reloads(request).change(change)
    return _answer(result.detail) if result.applied else _refused(result)


async def delete_application(request: Request) -> Response:
    check_admin(request)
    return await _delete(request, DeleteApplication(request.path_params["name"]))


async def delete_model(request: Request) -> Response:
    check_admin(request)
    version = request.path_params["version"]
    if not version.isdigit() or len(version) > 18:
        raise BadRequest(f"version: expected a number, got {version!r}", field="version")
    return await _delete(request, DeleteModel(request.path_params["name"], int(version)))


routes = [
    Route("/gateway/admin/apply", apply, methods=["POST"]),
    Route("/gateway/admin/applications/{name}", delete_application, methods=["DELETE"]),
    Route("/gateway/admin/models/{name}/versions/{version}", delete_model, methods=["DELETE"]),
]
