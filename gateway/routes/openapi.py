"""The OpenAPI document: `GET /openapi.json` (3.1), `/openapi.yaml`, `/openapi-3.0.json`.

Always open, but filtered: with API keys configured, the applications and models listed are
those the presented key (`Authorization: Bearer` or `x-api-key`) may call, none without a known
key. Each rendering (and its gzip) is made once per registry state and set of permissions (keys
allowing the same names share it), in a worker thread (one making at a time per state,
permissions and rendering; later callers await it), again after a reload or a contract
discovered (both replace the registry's applications), not per request. Only the rendered bytes
are kept: the document itself (several times its JSON's size) is built for a rendering and let go.
"""

from __future__ import annotations

import asyncio
import gzip
from collections import OrderedDict
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
PERMISSION_SETS = 32  # the sets of permissions whose renderings are kept (least recently used dropped)
EVERYTHING = "*"
# Each rendering: its media type and how it is written from the 3.1 document.
RENDERINGS: dict[str, tuple[str, Callable[[Document], bytes]]] = {
    "json": ("application/json", orjson.dumps),
    "yaml": ("application/yaml", lambda document: to_yaml(document).encode()),
    "json30": ("application/json", lambda document: orjson.dumps(to_openapi_30(document))),
}


def permissions(settings: Settings, api_key: ApiKey | None) -> Hashable:
    """What the document of a caller presenting `api_key` depends on: the names it may call
    (`EVERYTHING` without configured keys or for a key allowing `*`; none without a known key)."""
    if not settings.auth.api_keys:
        return EVERYTHING
    if api_key is None:
        return frozenset()
    return EVERYTHING if EVERYTHING in api_key.applications else frozenset(api_key.applications)

OPEN_HEADERS = {"vary": "Accept-Encoding"}
# With keys, the document depends on the key presented: no shared cache may keep one for another caller.
KEYED_HEADERS = {"vary": "Accept-Encoding, Authorization, X-API-Key", "cache-control": "private, no-cache"}


class _Made:
    """What one registry state's callers share: per set of permissions, each value made once, by a
    task that callers arriving meanwhile await (one who gives up does not cancel it); a failure is
    not kept. At most `PERMISSION_SETS` sets are kept, the least recently used dropped first."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.applications = registry.applications
        self.entries: OrderedDict[Hashable, dict[Hashable, asyncio.Future[Any]]] = OrderedDict()

    def current(self, registry: Registry) -> bool:
        return registry is self.registry and registry.applications is self.applications

    async def get(self, allowed: Hashable, key: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
        values = self.entries.get(allowed)
        if values is None:
            values = self.entries[allowed] = {}
            while len(self.entries) > PERMISSION_SETS:
                self.entries.popitem(last=False)  # its callers still hold their futures
        else:
            self.entries.move_to_end(allowed)
        shared = values.get(key)
        if shared is None:
            shared = values[key] = asyncio.ensure_future(make())
            shared.add_done_callback(lambda done: self._forget_failed(values, key, done))
        return await asyncio.shield(shared)

    @staticmethod
    def _forget_failed(values: dict[Hashable, asyncio.Future[Any]], key: Hashable,
                       done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            values.pop(key, None)


class DocumentCache:
    """The renderings made for the current registry state, by permissions; a new state (another
    registry, or its applications recomputed after a discovery) starts afresh. `builds` counts
    the documents built (one per rendering made)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings.auth)
        self.builds = 0
        self._made: _Made | None = None

    def entries(self) -> int:
        """How many sets of permissions have renderings kept."""
        return 0 if self._made is None else len(self._made.entries)

    async def rendering(self, dataplane: DataPlane, api_key: ApiKey | None, kind: str,
                        gzipped: bool = False) -> bytes:
        """Rendering `kind` of the document `api_key` gets (gzip-compressed when `gzipped`)."""
        made = self._made
        if made is None or not made.current(dataplane.registry):
            made = self._made = _Made(dataplane.registry)
        allowed = permissions(self.settings, api_key)

        async def plain() -> bytes:
            catalog = live_catalog(dataplane, self.settings, api_key)  # read on the loop, built off it
            self.builds += 1
            render = RENDERINGS[kind][1]
            return await asyncio.to_thread(lambda: render(build_document(catalog)))

        async def compressed() -> bytes:
            body = await made.get(allowed, kind, plain)
            return await asyncio.to_thread(gzip.compress, body, GZIP_LEVEL, mtime=0)

        if gzipped:
            return await made.get(allowed, (kind, "gzip"), compressed)  # type: ignore[no-any-return]
        return await made.get(allowed, kind, plain)  # type: ignore[no-any-return]


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
        headers = dict(KEYED_HEADERS if cache.authenticator.keys else OPEN_HEADERS)
        if gzipped:  # already compressed (the gzip layer passes an encoded answer on as it is), and cached so
            headers["content-encoding"] = "gzip"
        return Response(body, media_type=RENDERINGS[kind][0], headers=headers)

    endpoint.__name__ = f"openapi_{kind}"
    return endpoint


routes = [
    Route("/openapi.json", _answer("json"), methods=["GET"]),
    Route("/openapi.yaml", _answer("yaml"), methods=["GET"]),
    Route("/openapi-3.0.json", _answer("json30"), methods=["GET"]),
]
