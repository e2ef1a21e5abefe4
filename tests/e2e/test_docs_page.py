"""`GET /docs` on a real uvicorn with the example config's real runtimes: its files over HTTP
(content types, caching, nothing outside the allow-list), then the page in a real headless
Chromium (Debian's, driven by Playwright) that must never leave loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from playwright.async_api import Page, Route, async_playwright

from gateway.app import create_app
from gateway.manifests import Config
from gateway.routes import docs
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import serve_app

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium calls Google's hosts on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # Docker's 64 MB /dev/shm crashes Chromium's renderer
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
VERSION = docs.swagger_ui_version()


@pytest.fixture
async def gateway(example_config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        yield url


def linked(page: str) -> list[str]:
    """The URLs the page's `src` and `href` attributes name."""
    return re.findall(r'(?:src|href)="([^"]*)"', page)


async def test_the_page_links_its_files_by_relative_urls_under_a_csp_allowing_only_self(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["cache-control"] == "no-cache"
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["img-src"] == "'self' data:"
        assert "<script>" not in page.text  # the initializer is a file of its own: no inline script
        urls = linked(page.text)
        assert f"docs/{VERSION}/swagger-ui-bundle.js" in urls
        assert "docs/gateway-docs.js" in urls
        # Relative, so the page works behind a proxy's path prefix; nothing from another host.
        assert all(not url.startswith(("/", "http:", "https:", "//")) for url in urls), urls
        head = await client.head("/docs")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == page.headers["content-length"]


async def test_each_linked_file_has_its_content_type_and_versioned_ones_are_cached_for_good(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        urls = linked((await client.get("/docs")).text)
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}
        for url in urls:
            answer = await client.get("/" + url)
            assert answer.status_code == 200, url
            assert answer.headers["content-type"] == types[Path(url).suffix], url
            assert answer.headers["x-content-type-options"] == "nosniff"
            versioned = url.startswith(f"docs/{VERSION}/")
            assert answer.headers["cache-control"] == (docs.IMMUTABLE if versioned else "no-cache"), url
            assert (await client.head("/" + url)).status_code == 200
        bundle = await client.get(f"/docs/{VERSION}/swagger-ui-bundle.js")
        assert bundle.content == (docs.static_folder() / "swagger-ui-bundle.js").read_bytes()
        initializer = (await client.get("/docs/gateway-docs.js")).text
        assert 'url: "openapi.json"' in initializer  # relative to the page
        assert "validatorUrl: null" in initializer  # the default badge calls validator.swagger.io


async def test_assets_are_sent_gzipped_from_bytes_compressed_once(gateway: str) -> None:
    path = f"/docs/{VERSION}/swagger-ui-bundle.js"
    original = (docs.static_folder() / "swagger-ui-bundle.js").read_bytes()
    async with httpx.AsyncClient(base_url=gateway) as client:
        for name in docs.ASSETS:
            answer = await client.get(f"/docs/{VERSION}/{name}", headers={"accept-encoding": "gzip"})
            assert answer.headers["content-encoding"] == "gzip", name
            assert answer.headers["vary"] == "Accept-Encoding", name
            assert answer.content == (docs.static_folder() / name).read_bytes(), name  # httpx inflates it
        stored = docs._gzipped["swagger-ui-bundle.js"]
        async with client.stream("GET", path, headers={"accept-encoding": "gzip"}) as raw:
            sent = b"".join([part async for part in raw.aiter_raw()])
        assert sent == stored
        assert len(stored) < len(original) / 3
        assert docs._gzipped["swagger-ui-bundle.js"] is stored  # not made again
        for refused in ("identity", "gzip;q=0", "br, gzip;q=0"):
            answer = await client.get(path, headers={"accept-encoding": refused})
            assert "content-encoding" not in answer.headers, refused
            assert answer.headers["vary"] == "Accept-Encoding", refused
            assert answer.content == original
        head = await client.head(path, headers={"accept-encoding": "gzip"})
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == len(stored)


async def test_a_trailing_slash_redirects_to_the_page_by_a_relative_url(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        answer = await client.get("/docs/", headers={"host": "attacker.example"})
        assert answer.status_code == 307
        assert answer.headers["location"] == "../docs"  # not built from the Host header
        followed = await client.get("/docs/", follow_redirects=True)
        assert followed.status_code == 200
        assert str(followed.url) == f"{gateway}/docs"


@pytest.mark.parametrize("path", [
    f"/docs/{VERSION}/swagger-editor-bundle.js",  # in the package's folder, not in the allow-list
    f"/docs/{VERSION}/LICENSE",
    f"/docs/{VERSION}/oauth2-redirect.html",
    f"/docs/{VERSION}/index.html",
    "/docs/0.0.1/swagger-ui-bundle.js",  # another version's URL
    "/docs/swagger-ui-bundle.js",
    "/docs/index.html",
    "/docs//",
    f"/docs/{VERSION}/%2e%2e/core.py",
    f"/docs/{VERSION}/..%2fcore.py",
    f"/docs/{VERSION}/..%2f..%2fswagger_ui%2fcore.py",
    "/docs/..%2f..%2f..%2fetc%2fpasswd",
    f"/docs/{VERSION}/swagger-ui.css%00.png",
])
async def test_nothing_else_is_served_under_docs(gateway: str, path: str) -> None:
    host, port = urlsplit(gateway).hostname, urlsplit(gateway).port
    assert host is not None
    # Over a raw socket: HTTP clients would normalise the dot segments before sending them.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), (path, head)
    assert orjson.loads(body)["error"]["code"] == "not_found"


async def test_only_get_and_head_are_answered(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        for path in ("/docs", "/docs/gateway-docs.js", f"/docs/{VERSION}/swagger-ui.css"):
            answer = await client.post(path)
            assert answer.status_code == 405
            assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


@dataclass
class Traffic:
    """Every request the page made, and those refused for leaving loopback."""

    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        url = route.request.url
        self.requested.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOOPBACK_HOSTS:
            await route.continue_()
        else:
            self.refused.append(url)
            await route.abort("blockedbyclient")


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; its absence fails the test (`make test` installs it), never skips it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium package "
                    "(`make test` installs it; or run `apt-get install -y chromium`)")
    return CHROMIUM


async def response_json(page: Page, operation: str) -> tuple[str, object]:
    """The status and parsed body Swagger UI shows for the executed `operation` block."""
    block = page.locator(operation)
    status = block.locator(".live-responses-table .response .response-col_status")
    await status.wait_for(timeout=15_000)
    body = block.locator(".live-responses-table .response-col_description .highlight-code pre").first
    return (await status.inner_text()).strip(), orjson.loads(await body.inner_text())


@contextlib.asynccontextmanager
async def browser_page(chromium: Path, profile: Path, traffic: Traffic,
                       problems: list[str]) -> AsyncIterator[Page]:
    """A page of a fresh headless Chromium whose every request goes through `traffic`, its
    script errors and console errors collected in `problems`."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            await context.route("**/*", traffic.route)
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                    if message.type == "error" else None)
            yield page
        finally:
            await context.close()


def application_operation(name: str) -> str:
    """The selector of Swagger UI's block for POST /gateway/applications/<name>."""
    return f'.opblock-post:has(.opblock-summary-path[data-path="/gateway/applications/{name}"])'


async def try_it_out(page: Page, operation: str) -> tuple[str, object]:
    """Open `operation`, "Try it out" with its example, "Execute": the answer's status and body."""
    block = page.locator(operation)
    await block.locator(".opblock-summary").first.click(timeout=15_000)
    await block.get_by_role("button", name="Try it out").click()
    await block.get_by_role("button", name="Execute").click()
    return await response_json(page, operation)


@pytest.mark.browser
async def test_the_page_lists_increment_app_and_runs_it_without_leaving_loopback(
        gateway: str, chromium: Path, tmp_path: Path) -> None:
    traffic, problems = Traffic(), list[str]()
    async with browser_page(chromium, tmp_path / "profile", traffic, problems) as page:
        await page.goto(gateway + "/docs")
        status, body = await try_it_out(page, application_operation("increment_app"))
        assert status == "200"
        assert body == {"number": [2]}
    assert traffic.refused == []
    assert any(url.endswith("/openapi.json") for url in traffic.requested), traffic.requested
    assert problems == []


@pytest.mark.browser
async def test_the_authorize_button_takes_an_api_key_and_lists_what_it_may_call(
        example_config: Config, chromium: Path, tmp_path: Path) -> None:
    key = ApiKey(name="docs", sha256=hashlib.sha256(b"s3cret").hexdigest(), applications=("increment_app",))
    settings = Settings(access_log=False, auth=AuthSettings(api_keys=(key,)))
    traffic, problems = Traffic(), list[str]()
    async with serve_app(create_app(settings, example_config)) as url, \
            browser_page(chromium, tmp_path / "profile", traffic, problems) as page:
        await page.goto(url + "/docs")
        authorize = page.locator(".auth-wrapper .authorize")
        await authorize.click(timeout=15_000)
        dialog = page.locator(".modal-ux")
        section = dialog.locator(".auth-container", has_text="ApiKeyHeader")
        await section.locator("input").fill("s3cret")
        await section.locator("button.modal-btn.authorize").click()
        await dialog.locator("button.btn-done").first.click()
        # The document is loaded again with the key: what it may call is listed, and called with it.
        status, body = await try_it_out(page, application_operation("increment_app"))
        assert status == "200"
        assert body == {"number": [2]}
        assert await page.locator(application_operation("scaler_app")).count() == 0
    assert traffic.refused == []
    assert sum(url.endswith("/openapi.json") for url in traffic.requested) >= 2, traffic.requested
    assert problems == [], problems
