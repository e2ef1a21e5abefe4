"""The OpenAPI document: `GET /openapi.json` (3.1), `/openapi.yaml`, `/openapi-3.0.json`.

Always open, but filtered: with API keys configured, the applications and models listed are
those the presented key (`Authorization: Bearer` or `x-api-key`) may call, none without a known
key. Each rendering (and its gzip) is made once per registry state and key, in a worker thread
(one making at a time per state, key and rendering; later callers await it), again after a
reload or a contract discovered (both replace the registry's applications), not per request.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import Authenticator
from gateway.dataplane import DataPlane
from gateway.openapi import live_catalog, to_openapi_30, to_yaml
from gateway.openapi.document import build_document
from gateway.pipeline import accepts_gzip
from gateway.registry import Registry
from gateway.settings import ApiKey, Settings

Document = dict[str, Any]
GZIP_LEVEL = 6  # zlib's default: level 9 makes the example config's document 2 % smaller, not faster to send
# Each rendering: its media type and how it is written from the 3.1 document.
RENDERINGS: dict[str, tuple[str, Callable[[Document], bytes]]] = {
    "json": ("application/json", orjson.dumps),
    "yaml": ("application/yaml", lambda document: to_yaml(document).encode()),
    "json30": ("application/json", lambda document: orjson.dumps(to_openapi_30(document))),
}


class _Made:
    """What one registry state's callers share: each value made once, by a task that callers
    arriving meanwhile await (one who gives up does not cancel it); a failure is not kept."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.applications = registry.applications
        self._values: dict[Hashable, asyncio.Future[Any]] = {}

    def current(self, registry: Registry) -> bool:
        return registry is self.registry and registry.applications is self.applications

    async def get(self, key: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
        shared = self._values.get(key)
        if shared is None:
            shared = self._values[key] = asyncio.ensure_future(make())
            shared.add_done_callback(lambda done: self._forget_failed(key, done))
        return await asyncio.shield(shared)

    def _forget_failed(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._values.pop(key, None)


class DocumentCache:
    """The documents and renderings made for the current registry state, by key; a new state
    (another registry, or its applications recomputed after a discovery) starts afresh.
    `builds` counts the documents built."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings.auth)
        self.builds = 0
        self._made: _Made | None = None

    async def rendering(self, dataplane: DataPlane, api_key: ApiKey | None, kind: str,
                        gzipped: bool = False) -> bytes:
        """Rendering `kind` of the document `api_key` gets (gzip-compressed when `gzipped`)."""
        made = self._made
        if made is None or not made.current(dataplane.registry):
            made = self._made = _Made(dataplane.registry)

        async def document() -> Document:
            catalog = live_catalog(dataplane, self.settings, api_key)  # read on the loop, built off it
            self.builds += 1
            return await asyncio.to_thread(build_document, catalog)

        async def plain() -> bytes:
            return await asyncio.to_thread(RENDERINGS[kind][1], await made.get(api_key, document))

        async def compressed() -> bytes:
            body = await made.get((api_key, kind), plain)
            return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)

        if gzipped:
            return await made.get((api_key, kind, "gzip"), compressed)  # type: ignore[no-any-return]
        return await made.get((api_key, kind), plain)  # type: ignore[no-any-return]


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
        gzipped = accepts_gzip(request.scope)
        body = await cache.rendering(request.app.state.dataplane, api_key, kind, gzipped)
        # Already compressed (the gzip layer passes an encoded answer on as it is), and cached so.
        headers = {"content-encoding": "gzip", "vary": "Accept-Encoding"} if gzipped else None
        return Response(body, media_type=RENDERINGS[kind][0], headers=headers)

    endpoint.__name__ = f"openapi_{kind}"
    return endpoint


routes = [
    Route("/openapi.json", _answer("json"), methods=["GET"]),
    Route("/openapi.yaml", _answer("yaml"), methods=["GET"]),
    Route("/openapi-3.0.json", _answer("json30"), methods=["GET"]),
]
