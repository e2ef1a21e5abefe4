"""`create_app`: the one place that wires routes, the HTTP pipeline's layers and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.auth import Authenticator, AuthMiddleware
from gateway.backends.pool import ChannelPool
from gateway.dataplane import DISCOVERY_TIMEOUT_S, DataPlane
from gateway.grpc_api.calls import DoorState
from gateway.grpc_api.server import GrpcFrontDoor
from gateway.health_watch import HealthWatcher
from gateway.manifests import Config, load_config
from gateway.observability import CIRCUIT_STATES, AccessLog, Metrics, ObservabilityMiddleware, RequestObserver
from gateway.pipeline import GZIP_MIN_BYTES, Endpoints, GZipMiddleware, UnexpectedErrors
from gateway.registry import Registry
from gateway.reload import Reloader
from gateway.requestlog.logs import RequestLogs
from gateway.routes import (
    admin,
    admin_apply,
    admin_upload,
    applications,
    docs,
    health,
    metrics,
    models,
    native,
    tfserving,
    v2,
)
from gateway.routes import openapi as openapi_routes
from gateway.settings import Settings
from gateway.shadows import CLOSE_WAIT_S, ShadowTraffic
from gateway.supervisor import Supervisor


def create_app(settings: Settings, config: Config | None = None,
               failed: Mapping[tuple[str, int], str] | None = None,
               supervisor: Supervisor | None = None) -> GatewayApp:
    """The gateway as an ASGI app serving `config` (read from `settings.config_dir` if None).

    `failed` names local models whose runtime could not start, with the reason; `supervisor`
    (from `gateway serve`) runs the local models' runtimes and is asked for new ones on reload.
    """
    config = config if config is not None else load_config(settings.config_dir)
    meters = Metrics()
    observer = RequestObserver(meters, AccessLog(meters) if settings.access_log else None)
    authenticator = Authenticator(settings.auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = ChannelPool(settings.retry_attempts, settings.circuit_failures, settings.circuit_cooldown_s,
                           on_circuit_change=lambda target, state: meters.circuit_state.labels(target).set(
                               CIRCUIT_STATES[state.value]),
                           dns_refresh_s=settings.dns_refresh_s or None, close_grace_s=settings.max_request_timeout_s,
                           client=settings.backend_client)
        app.state.settings = settings
        app.state.metrics = meters
        app.state.draining = False
        shadows = ShadowTraffic.from_settings(settings, meters)
        shadows.draining = lambda: bool(app.state.draining)  # SIGTERM: copies are no longer made
        registry = Registry.build(config, pool, failed, meters.batch_observer)
        request_logs = RequestLogs.from_settings(settings, meters)
        request_logs.for_registry(registry)
        dataplane = DataPlane(registry, settings.max_concurrency, meters, shadows, request_logs)
        app.state.dataplane = dataplane
        # Contracts not in the manifests come from the backends' metadata (again on first use
        # for those that cannot answer yet).
        await dataplane.discover(min(settings.request_timeout_s, DISCOVERY_TIMEOUT_S))
        watcher = HealthWatcher(dataplane, settings.health_interval_s, settings.health_check_timeout_s)
        await watcher.check_now()
        watcher.start()
        app.state.health = watcher
        app.state.reloader = Reloader(settings, config, dataplane, pool, watcher, supervisor, failed)
        pool.start()  # dns: targets re-resolved every dns_refresh_s
        grpc_door = app.state.grpc_door = None
        try:
            if settings.grpc_port is not None:  # a port taken since serve's check fails the start, cleaned up
                grpc_door = app.state.grpc_door = GrpcFrontDoor(DoorState(
                    settings, dataplane, observer, authenticator, watcher, lambda: bool(app.state.draining)))
                app.state.grpc_port = await grpc_door.start()
            yield
        finally:
            if grpc_door is not None:
                await grpc_door.stop(settings.drain_timeout_s)  # begun with HTTP's drain (serve_app)
            await shadows.close(min(CLOSE_WAIT_S, settings.drain_timeout_s))
            # After the drain: what requests recorded is written and every .partial file renamed.
            await asyncio.to_thread(request_logs.close, settings.drain_timeout_s)
            await watcher.stop()
            await app.state.reloader.close()
            await pool.close(grace=settings.drain_timeout_s)
            if observer.access_log is not None:
                observer.access_log.close()

    app = GatewayApp(
        meters,
        routes=[*applications.routes, *models.routes, *native.routes, *tfserving.routes, *v2.routes, *admin.routes,
                *admin_upload.routes, *admin_apply.routes,
                *health.routes, *metrics.routes, *openapi_routes.routes, *docs.routes],
        middleware=[Middleware(UnexpectedErrors),  # outermost: a fault in any layer is answered too
                    Middleware(ObservabilityMiddleware, observer=observer),
                    Middleware(AuthMiddleware, authenticator=authenticator),
                    Middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES)],
        lifespan=lifespan,
    )
    app.state.observer = observer
    # A path with a trailing slash is a 404, not a redirect: Starlette builds its redirect's
    # Location from the client's Host header.
    app.router.redirect_slashes = False
    return app


class GatewayApp(Starlette):
    """Starlette with the gateway's pipeline (gateway.pipeline): the `middleware` given, then
    `Endpoints` (the predict shortcut ahead of the router, and the answers to what routes
    raise); Starlette's own ServerErrorMiddleware and ExceptionMiddleware are not used, so what
    only they would honour (exception handlers, `debug` tracebacks, `max_body_size`) is refused
    rather than ignored: errors are answered in gateway.answers, bodies limited by the settings."""

    def __init__(self, metrics: Metrics, *, debug: bool = False, exception_handlers: Mapping[Any, Any] | None = None,
                 max_body_size: int | None = None, **kwargs: Any) -> None:
        if exception_handlers:
            raise TypeError("GatewayApp takes no exception_handlers: errors are answered by gateway.answers")
        if debug:
            raise ValueError("GatewayApp has no debug mode: an unexpected error is answered 500 `internal` and logged")
        if max_body_size is not None:
            raise TypeError("GatewayApp takes no max_body_size: body limits are the gateway's settings")
        for middleware in kwargs.get("middleware") or ():
            _refuse_error_layer(middleware.cls)
        super().__init__(**kwargs)
        self.metrics = metrics
        # The routes served ahead of the router (None: every request through the router).
        self.fast_path: list[Route] | None = [
            route for route in self.router.routes
            if isinstance(route, Route) and (route.endpoint is native.predict_application
                                             or route.path == v2.INFER_PATH)]

    def add_exception_handler(self, exc_class_or_status_code: Any, handler: Any) -> None:
        raise TypeError("GatewayApp takes no exception handlers: errors are answered by gateway.answers")

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        _refuse_error_layer(middleware_class)
        super().add_middleware(middleware_class, *args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        app: ASGIApp = Endpoints(self.router, self.metrics, self.fast_path or ())
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app


def _refuse_error_layer(cls: object) -> None:
    """Starlette's error layers would answer errors a second way, beside gateway.pipeline's."""
    if cls in (ServerErrorMiddleware, ExceptionMiddleware):
        raise TypeError(f"GatewayApp answers errors itself (gateway.pipeline): no {getattr(cls, '__name__', cls)}")
