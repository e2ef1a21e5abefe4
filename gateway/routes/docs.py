"""`GET /docs`: Swagger UI 5 over the gateway's own `/openapi.json`, every byte served by the
gateway (gateways run in closed networks: no CDN, no validator badge calling out).

Swagger UI's files come from the swagger-ui-py package's static folder, found without importing
the package (it would pull in its web-framework adapters), and only those of `ASSETS` are served,
under a path naming the package's version so they can be cached for good. The page and its
initializer (`docs_static/`, not inline: the page's Content-Security-Policy allows scripts from
'self' only) are the gateway's own, and every URL in them is relative, so the page works behind
a path prefix. The page is as open as the document: it lists what the presented API key may
call, and its Authorize button takes the key (the initializer then reloads the document with it).
Each asset is gzip-compressed once, in a worker thread, and kept so (the gzip layer would compress
the 1.5 MB bundle again, on the event loop, for every browser fetching it).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.metadata
import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.errors import NotFound
from gateway.pipeline import accepts_gzip

OWN = Path(__file__).with_name("docs_static")
CSS, JS, PNG = "text/css; charset=utf-8", "text/javascript; charset=utf-8", "image/png"

# The package's files the page uses, with their content types: nothing else under /docs is served.
ASSETS: dict[str, str] = {
    "swagger-ui.css": CSS,
    "index.css": CSS,
    "swagger-ui-bundle.js": JS,
    "favicon-32x32.png": PNG,
    "favicon-16x16.png": PNG,
}
INITIALIZER = "gateway-docs.js"
GZIP_LEVEL = 6  # level 9 makes the bundle 1 % smaller for twice the time

# Versioned assets never change under their URL; the page and the initializer are revalidated.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",  # Swagger UI sets style attributes from its scripts
    "img-src 'self' data:",  # its icons are data: URLs
    "connect-src 'self'",  # the document and "try it out" requests: this gateway only
    "font-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))
PAGE_HEADERS = {
    "cache-control": REVALIDATE,
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@functools.cache
def swagger_ui_version() -> str:
    """The swagger-ui-py distribution's version: part of the assets' URL, so a new one is a new URL."""
    return importlib.metadata.version("swagger-ui-py")


@functools.cache
def static_folder() -> Path:
    """swagger-ui-py's `static/` folder, located without importing the package."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package (Swagger UI's assets for /docs) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _asset(name: str) -> bytes:
    return (static_folder() / name).read_bytes()


# Each asset's gzip once made (two first fetches at once may both make it: the same bytes).
_gzipped: dict[str, bytes] = {}


def _compress(name: str) -> bytes:
    return gzip.compress(_asset(name), GZIP_LEVEL, mtime=0)


@functools.cache
def _own(name: str) -> bytes:
    return (OWN / name).read_bytes()


@functools.cache
def _page() -> bytes:
    return _own("index.html").replace(b"{version}", swagger_ui_version().encode())


async def page(request: Request) -> Response:
    """The Swagger UI page (relative URLs: `docs/<version>/...`, `docs/gateway-docs.js`)."""
    return Response(_page(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def initializer(request: Request) -> Response:
    """The script that starts Swagger UI on `openapi.json` (relative to the page)."""
    return Response(_own(INITIALIZER), media_type=JS, headers={"cache-control": REVALIDATE,
                                                                "x-content-type-options": "nosniff"})


async def asset(request: Request) -> Response:
    """One of Swagger UI's files, at the current version only (another version's URL is a 404:
    an old page's cached copy must not be served new files under an old name)."""
    name, version = request.path_params["file"], request.path_params["version"]
    media_type = ASSETS.get(name)
    if media_type is None or version != swagger_ui_version():
        raise NotFound(f"no such file: /docs/{version}/{name}")
    headers = {"cache-control": IMMUTABLE, "x-content-type-options": "nosniff", "vary": "Accept-Encoding"}
    if not accepts_gzip(request.scope):
        return Response(_asset(name), media_type=media_type, headers=headers)
    body = _gzipped.get(name)
    if body is None:
        body = _gzipped[name] = await asyncio.to_thread(_compress, name)
    # Already compressed: the gzip layer passes an encoded answer on as it is.
    return Response(body, media_type=media_type, headers={**headers, "content-encoding": "gzip"})


async def with_slash(request: Request) -> Response:
    """`/docs/` → `/docs`, by a relative URL (`../docs`): right behind a path prefix too, and
    never built from the request's Host header."""
    return RedirectResponse("../docs", status_code=307)


routes = [
    Route("/docs", page, methods=["GET"]),
    Route("/docs/", with_slash, methods=["GET"]),
    Route(f"/docs/{INITIALIZER}", initializer, methods=["GET"]),
    Route("/docs/{version}/{file}", asset, methods=["GET"]),
]
