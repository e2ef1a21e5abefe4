"""API keys for client routes and tokens for admin routes, both stored as SHA-256 digests.

Client keys come as `Authorization: Bearer <key>` or `x-api-key: <key>`. With no keys
configured, client routes are open. Health and metrics are always open. Admin routes need
a configured admin token, or, without any, a loopback client. Keys never reach logs or
error bodies.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import PermissionDenied, Unauthenticated
from gateway.settings import ApiKey, AuthSettings

CLIENT_PREFIXES = ("/gateway/applications/", "/gateway/application/", "/gateway/models/", "/v1/models")
TF_PREFIX = "/v1/"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def _bearer(headers: dict[bytes, bytes]) -> str:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token if scheme.lower() == "bearer" else ""


class AuthMiddleware:
    """Authenticates client routes when API keys are configured: 401 without a known key; the
    key is left in `scope["state"]["api_key"]` for `authorize`."""

    def __init__(self, app: ASGIApp, auth: AuthSettings) -> None:
        self.app = app
        self.keys = {key.sha256: key for key in auth.api_keys}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http" or not scope["path"].startswith(CLIENT_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        secret = _bearer(headers) or headers.get(b"x-api-key", b"").decode("latin-1")
        key = self.keys.get(_digest(secret)) if secret else None
        if key is None:
            message = "a valid API key is required (Authorization: Bearer <key> or x-api-key)"
            body = {"error": message} if scope["path"].startswith(TF_PREFIX) else \
                {"error": {"code": Unauthenticated.code, "message": message}}
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": orjson.dumps(body)})
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


def authorize(request: Request, name: str) -> None:
    """403 unless the caller's key (if keys are in use) may call application or model `name`."""
    key: ApiKey | None = request.scope.get("state", {}).get("api_key")
    if key is not None and not key.allows(name):
        raise PermissionDenied(f"this API key may not call {name!r}")


def check_admin(request: Request) -> None:
    """401/403 unless the caller may use admin routes."""
    tokens = request.app.state.settings.auth.admin_token_sha256
    if tokens:
        token = _bearer(dict(request.scope["headers"]))
        digest = _digest(token) if token else ""
        if not any(hmac.compare_digest(digest, known) for known in tokens):
            raise Unauthenticated("admin routes need Authorization: Bearer <admin token>")
    elif request.client is None or request.client.host not in LOOPBACK:
        raise PermissionDenied("admin routes answer loopback clients only unless an admin token is set")
