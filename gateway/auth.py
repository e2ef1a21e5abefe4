"""API keys for client routes and tokens for admin routes, both stored as SHA-256 digests.

Client keys come as `Authorization: Bearer <key>` or `x-api-key: <key>` (the one a request
uses when its Bearer is an admin token, as `x-gateway-variant` may need). With no keys
configured, client routes are open. Health and metrics are always open. Admin routes need
a configured admin token, or, without any, a loopback client. Keys never reach logs or
error bodies.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.answers import error_response, route_path
from gateway.errors import PermissionDenied, Unauthenticated
from gateway.settings import ApiKey, AuthSettings

# "/gateway/applications" and "/gateway/models" alone are the lists of applications and models (GET).
# On /v2 the models' routes (metadata, readiness, inference); the server's (/v2, /v2/health) are open.
CLIENT_PREFIXES = ("/gateway/applications", "/gateway/application/", "/gateway/models", "/v1/models", "/v2/models")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def _bearer(headers: dict[bytes, bytes]) -> str:
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token if scheme.lower() == "bearer" else ""


class Authenticator:
    """Checks client routes' API keys when keys are configured."""

    def __init__(self, auth: AuthSettings) -> None:
        self.keys = {key.sha256: key for key in auth.api_keys}

    def admit(self, scope: Scope) -> bool:
        """Whether the request may go on: True on routes that need no key or with a known key
        (left in `scope["state"]["api_key"]` for `authorize`)."""
        if not self.keys or not route_path(scope).startswith(CLIENT_PREFIXES):
            return True
        key = self.identify(scope)
        if key is None:
            return False
        scope.setdefault("state", {})["api_key"] = key
        return True

    def identify(self, scope: Scope) -> ApiKey | None:
        """The configured key the request presents (its Bearer, else its x-api-key), or None."""
        return self.identify_headers(dict(scope["headers"]))

    def identify_headers(self, headers: dict[bytes, bytes]) -> ApiKey | None:
        """`identify` for headers (or gRPC metadata) by lower-case name."""
        bearer, api_key = _bearer(headers), headers.get(b"x-api-key", b"").decode("latin-1")
        key = self.keys.get(_digest(bearer)) if bearer else None
        if key is None and api_key:  # the Bearer may be an admin token (x-gateway-variant)
            key = self.keys.get(_digest(api_key))
        return key

    @staticmethod
    def refusal(scope: Scope) -> Response:
        """The 401 answer, in the request's error shape."""
        return error_response(scope, 401, Unauthenticated.code,
                              "a valid API key is required (Authorization: Bearer <key> or x-api-key)",
                              headers={"www-authenticate": "Bearer"})


class AuthMiddleware:
    """Authenticates client routes when API keys are configured: 401 without a known key."""

    __slots__ = ("app", "authenticator")

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.authenticator.admit(scope):
            await self.app(scope, receive, send)
            return
        await self.authenticator.refusal(scope)(scope, receive, send)


def authorize(request: Request, name: str) -> None:
    """403 unless the caller's key (if keys are in use) may call application or model `name`."""
    key: ApiKey | None = request.scope.get("state", {}).get("api_key")
    if key is not None and not key.allows(name):
        raise PermissionDenied(f"this API key may not call {name!r}")


def check_admin(request: Request) -> None:
    """401/403 unless the caller may use admin routes."""
    check_admin_token(request.app.state.settings.auth, dict(request.scope["headers"]),
                      request.client.host if request.client is not None else None)


def check_admin_token(auth: AuthSettings, headers: dict[bytes, bytes], client_host: str | None) -> None:
    """`check_admin` for any front door: the caller's headers (or gRPC metadata) and address."""
    tokens = auth.admin_token_sha256
    if tokens:
        token = _bearer(headers)
        digest = _digest(token) if token else ""
        if not any(hmac.compare_digest(digest, known) for known in tokens):
            raise Unauthenticated("admin routes need Authorization: Bearer <admin token>")
    elif client_host not in LOOPBACK:
        raise PermissionDenied("admin routes answer loopback clients only unless an admin token is set")
