"""The OpenAPI document: `GET /openapi.json` (3.1), `/openapi.yaml`, `/openapi-3.0.json`.

Always open, but filtered: with API keys configured, the applications and models listed are
those the presented key (`Authorization: Bearer` or `x-api-key`) may call, none without a known
key. Each rendering is made once per registry state and key, and made again after a reload or
a contract discovered (both replace the registry's applications), not per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Authenticator
from gateway.dataplane import DataPlane
from gateway.openapi import live_document, to_openapi_30, to_yaml
from gateway.registry import Registry
from gateway.settings import ApiKey, Settings

Document = dict[str, Any]
# Each rendering: its media type and how it is written from the 3.1 document.
RENDERINGS: dict[str, tuple[str, Callable[[Document], bytes]]] = {
    "json": ("application/json", orjson.dumps),
    "yaml": ("application/yaml", lambda document: to_yaml(document).encode()),
    "json30": ("application/json", lambda document: orjson.dumps(to_openapi_30(document))),
}


class DocumentCache:
    """The renderings made for one registry state, by key and rendering; a new state (another
    registry, or its applications recomputed after a discovery) drops them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings.auth)
        self._state: tuple[Registry, object] | None = None
        self._documents: dict[ApiKey | None, Document] = {}
        self._rendered: dict[tuple[ApiKey | None, str], bytes] = {}

    def rendering(self, dataplane: DataPlane, api_key: ApiKey | None, kind: str) -> bytes:
        registry = dataplane.registry
        state = self._state
        if state is None or state[0] is not registry or state[1] is not registry.applications:
            self._state = (registry, registry.applications)
            self._documents.clear()
            self._rendered.clear()
        rendered = self._rendered.get((api_key, kind))
        if rendered is None:
            document = self._documents.get(api_key)
            if document is None:
                document = self._documents[api_key] = live_document(dataplane, self.settings, api_key)
            rendered = self._rendered[(api_key, kind)] = RENDERINGS[kind][1](document)
        return rendered


def _cache(request: Request) -> DocumentCache:
    state = request.app.state
    cache: DocumentCache | None = getattr(state, "openapi", None)
    if cache is None or cache.settings is not state.settings:
        cache = state.openapi = DocumentCache(state.settings)
    return cache


def _answer(kind: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        cache = _cache(request)
        api_key = cache.authenticator.identify(request.scope) if cache.authenticator.keys else None
        body = cache.rendering(request.app.state.dataplane, api_key, kind)
        return Response(body, media_type=RENDERINGS[kind][0])

    endpoint.__name__ = f"openapi_{kind}"
    return endpoint


routes = [
    Route("/openapi.json", _answer("json"), methods=["GET"]),
    Route("/openapi.yaml", _answer("yaml"), methods=["GET"]),
    Route("/openapi-3.0.json", _answer("json30"), methods=["GET"]),
]
