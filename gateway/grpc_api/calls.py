"""One call at the gRPC front door, from its metadata to its status.

`unary(method, handler, door)` makes the gRPC server's handler of one upstream method: it gives the
request its id (the client's `x-request-id` metadata when sane, echoed in the trailing
metadata), checks the API key (`authorization: Bearer <key>` or `x-api-key`, as on HTTP), runs
`handler(request, call)`, answers a `GatewayError` with its `grpc_code` and message (never a
traceback; anything else is INTERNAL, logged with the request id) and counts and logs the
call as the HTTP front door does (route label: the method path).

A handler builds its `RequestContext` with `call.context(app)`: the deadline is the client's
gRPC deadline (capped at `max_request_timeout_s`), else the application's `timeout_s`, else
the gateway's default.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.auth import Authenticator, check_admin_token
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BadRequest, GatewayError, PermissionDenied, Unauthenticated
from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.server import RefusedCall
from gateway.grpc_server.status import RpcStatus
from gateway.health_watch import HealthWatcher
from gateway.observability import CallRecord, RequestObserver
from gateway.registry import Application
from gateway.settings import ApiKey, Settings
from protos.services import Method

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)
log = logging.getLogger("gateway.grpc")
REQUEST_ID_KEY = "x-request-id"
# The HTTP status a call ending with a gRPC code but no GatewayError (cancelled, past its
# deadline, an unexpected fault) is counted as in the request metrics.
_STATUS_OF_CODE = {grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
                   grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
                   grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
                   grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                   grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
                   grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
                   grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
                   grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401}


@dataclass(slots=True)
class DoorState:
    """What every call reads: the gateway's settings, its data plane (its registry is swapped
    in place by reloads), the request observer and the API-key checker of the HTTP app."""

    settings: Settings
    dataplane: DataPlane
    observer: RequestObserver
    authenticator: Authenticator
    watcher: HealthWatcher  # the backends' health (readiness)
    draining: Callable[[], bool]


class Call:
    """One gRPC call being served: its id, metadata, caller and the context it runs with."""

    __slots__ = ("api_key", "door", "metadata", "peer", "request_context", "request_id", "server_call")

    def __init__(self, door: DoorState, server_call: ServerCall, request_id: str, metadata: dict[str, str]) -> None:
        self.door = door
        self.server_call = server_call
        self.request_id = request_id
        self.metadata = metadata  # lower-case keys; text values only (binary `-bin` keys are left out)
        self.peer = server_call.peer
        self.api_key: ApiKey | None = None
        self.request_context: RequestContext | None = None

    @property
    def dataplane(self) -> DataPlane:
        return self.door.dataplane

    @property
    def settings(self) -> Settings:
        return self.door.settings

    def context(self, app: Application | None = None) -> RequestContext:
        """The call's `RequestContext` (labelled with `app`'s name when given), its deadline the
        client's (capped), else the application's timeout, else the gateway's; kept for the
        metrics and the access log."""
        settings = self.door.settings
        timeout = settings.request_timeout_s
        if app is not None and app.manifest.timeout_s is not None:
            timeout = app.manifest.timeout_s
        remaining = self.server_call.time_remaining()
        if remaining is not None:
            timeout = min(max(remaining, 0.0), settings.max_request_timeout_s)
        labels = {"application": app.name} if app is not None else {}
        context = self.request_context = RequestContext.start(self.request_id, timeout, labels)
        return context

    def authorize(self, name: str) -> None:
        """403 unless the caller's key (when keys are in use) may call application or model `name`."""
        if self.api_key is not None and not self.api_key.allows(name):
            raise PermissionDenied(f"this API key may not call {name!r}")

    def check_admin(self) -> None:
        """401/403 unless the caller may use admin methods (an admin token as `authorization:
        Bearer <token>`, else a loopback peer when no token is configured)."""
        check_admin_token(self.door.settings.auth, self._headers(), peer_host(self.peer))

    def _headers(self) -> dict[bytes, bytes]:
        return {key.encode("latin-1"): value.encode("latin-1") for key, value in self.metadata.items()}

    def authenticate(self) -> None:
        """Unauthenticated unless the call presents a configured API key (when keys are in use)."""
        authenticator = self.door.authenticator
        if not authenticator.keys:
            return
        key = authenticator.identify_headers(self._headers())
        if key is None:
            raise Unauthenticated("a valid API key is required (authorization: Bearer <key> or x-api-key metadata)")
        self.api_key = key


@functools.lru_cache(maxsize=4096)  # one parse per client address, not per call
def peer_host(peer: str | None) -> str | None:
    """The address in a gRPC peer string (`ipv4:127.0.0.1:5000`, `ipv6:%5B::1%5D:5000` as grpc
    writes it, `ipv6:[::1]:5000`), an IPv4-mapped IPv6 one as IPv4 (what the client is); else None."""
    if not peer:
        return None
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


Handler = Callable[[RequestT, Call], Awaitable[ResponseT]]


def unary(method: Method[RequestT, ResponseT], handler: Handler[RequestT, ResponseT], door: DoorState, *,
          admin: bool = False) -> RpcHandler:
    """The server's handler of `method`: bytes in and out (a request that does not parse is
    INVALID_ARGUMENT, answered like every error), `handler` in between. `admin`: the method
    needs the admin token, not an API key."""
    parse = method.request.FromString
    path = method.path

    async def serve(raw: bytes, server_call: ServerCall) -> bytes:
        started = time.perf_counter()
        metadata = {key: value for key, value in server_call.metadata if not key.endswith("-bin")}  # names lower-case
        observer = door.observer
        request_id = observer.begin_call(metadata.get(REQUEST_ID_KEY))
        call = Call(door, server_call, request_id, metadata)
        code, answer = grpc.StatusCode.OK, b""
        message, status = "", 200
        try:
            server_call.trailing_metadata.append((REQUEST_ID_KEY, request_id))
            if admin:
                call.check_admin()
            else:
                call.authenticate()
            try:
                request = parse(raw)
            except DecodeError as error:
                raise BadRequest(f"the request is not a valid {method.request.DESCRIPTOR.full_name}: {error}") from None
            answer = (await handler(request, call)).SerializeToString()
            return answer
        except GatewayError as error:
            code, message, status = error.grpc_code, error.message, error.status
            log.info("request %s: %s %s: %s%s", request_id, path, code.name, message,
                     f" [{error.log_detail}]" if error.log_detail else "")
        except asyncio.CancelledError:  # the client went away or its deadline passed: nobody reads an answer
            remaining = server_call.time_remaining()
            past_deadline = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if past_deadline else grpc.StatusCode.CANCELLED
            status = _STATUS_OF_CODE[code]
            raise
        except Exception:
            code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
            status = _STATUS_OF_CODE[code]
            log.exception("request %s: %s failed", request_id, path)
        finally:
            request_context = call.request_context
            observer.end_call(CallRecord(
                request_id, "GRPC", path, status, code.name,
                time.perf_counter() - started, len(raw), len(answer), peer_host(call.peer), request_context))
            if request_context is not None:
                request_context.answered()
        raise RpcStatus(code, message)

    return RpcHandler(unary=serve)


def refused_calls(door: DoorState, methods: Container[str]) -> RefusedCall:
    """What the door's server tells of a call it ended before any handler ran: counted and logged
    as the HTTP front door counts a request refused before its route (a message over
    `max_body_bytes` as 413, a method not served with route `unmatched`), its request id in the
    trailing metadata."""

    def refused(server_call: ServerCall, code: grpc.StatusCode, message: str, received: int) -> None:
        sent_id = next((value for key, value in server_call.metadata if key == REQUEST_ID_KEY), None)
        request_id = door.observer.begin_call(sent_id)
        server_call.trailing_metadata.append((REQUEST_ID_KEY, request_id))
        route = server_call.path if server_call.path in methods else "unmatched"
        status = 413 if code is grpc.StatusCode.RESOURCE_EXHAUSTED else _STATUS_OF_CODE[code]
        log.info("request %s: %s %s: %s", request_id, server_call.path, code.name, message)
        door.observer.end_call(CallRecord(request_id, "GRPC", route, status, code.name, 0.0, received, 0,
                                          peer_host(server_call.peer), None))

    return refused
