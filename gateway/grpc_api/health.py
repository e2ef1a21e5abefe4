"""grpc.health.v1.Health on the gRPC port, following the gateway's readiness.

The overall status ("") and each served service's follow what `/health/ready` answers
(gateway.routes.health.readiness): SERVING when ready, NOT_SERVING otherwise and from the
start of a drain on (`drain()`: at once, for good). Checked every `health_interval_s` (at
most every second); a service this port does not serve is NOT_FOUND (Check) as grpc answers.
`close()` ends the Watch streams, which would otherwise hold the server's stop for its grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2

from gateway.grpc_api.calls import DoorState
from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.status import RpcStatus
from gateway.routes.health import readiness
from protos.services import HYDRO_GATEWAY_SERVICE, OIP_SERVICE, TF_MODEL_SERVICE, TF_PREDICTION_SERVICE

log = logging.getLogger("gateway.grpc")
SERVICE_NAMES = ("", TF_PREDICTION_SERVICE, TF_MODEL_SERVICE, HYDRO_GATEWAY_SERVICE, OIP_SERVICE)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
Response = health_pb2.HealthCheckResponse
HEALTH_SERVICE = "grpc.health.v1.Health"


class ClosingHealthServicer:
    """Check and Watch as grpc's reference servicer answers them (and List), over statuses set with
    `set_all`; `close()` ends every Watch once it has sent the last status (grpc's own servicer
    keeps them open forever, so a watching client would hold a graceful stop for all its grace)."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._closed = False

    def handlers(self) -> dict[str, RpcHandler]:
        """The service's handlers by method path."""
        return {f"/{HEALTH_SERVICE}/Check": RpcHandler(unary=self.check),
                f"/{HEALTH_SERVICE}/List": RpcHandler(unary=self.list),
                f"/{HEALTH_SERVICE}/Watch": RpcHandler(stream=self.watch)}

    async def check(self, raw: bytes, call: ServerCall) -> bytes:
        status = self._statuses.get(_parse(health_pb2.HealthCheckRequest, raw).service)
        if status is None:
            raise RpcStatus(grpc.StatusCode.NOT_FOUND)  # as grpc's reference servicer: no details
        answer: bytes = Response(status=status).SerializeToString()
        return answer

    async def list(self, raw: bytes, call: ServerCall) -> bytes:
        _parse(health_pb2.HealthListRequest, raw)
        answer: bytes = health_pb2.HealthListResponse(
            statuses={name: Response(status=status) for name, status in self._statuses.items()}).SerializeToString()
        return answer

    async def watch(self, raw: bytes, call: ServerCall) -> AsyncIterator[bytes]:
        last: int | None = None
        service = _parse(health_pb2.HealthCheckRequest, raw).service
        while True:
            async with self._changed:  # not held while writing: a slow watcher holds up no one
                while not self._closed and self._statuses.get(service, _UNKNOWN) == last:
                    await self._changed.wait()
                status, closed = self._statuses.get(service, _UNKNOWN), self._closed
            if status != last:
                yield Response(status=status).SerializeToString()
                last = status
            if closed:
                return

    async def set_all(self, names: Iterable[str], status: int) -> None:
        async with self._changed:
            for name in names:
                self._statuses[name] = status
            self._changed.notify_all()

    async def close(self) -> None:
        """End every Watch (after its last status); new ones answer the status and end."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class ReadinessHealth:
    """The Health servicer and the task that keeps its statuses at the gateway's readiness."""

    def __init__(self, door: DoorState) -> None:
        self.door = door
        self.servicer = ClosingHealthServicer()
        self._task: asyncio.Task[None] | None = None
        self._draining = asyncio.Event()
        self._status: int | None = None

    async def start(self) -> None:
        """The first statuses now (before the port is announced), then follow readiness."""
        await self._round()
        self._task = asyncio.create_task(self._follow())

    def drain(self) -> None:
        """The drain began: NOT_SERVING at once and from now on."""
        self._draining.set()

    def ready(self) -> bool:
        door = self.door
        return readiness(door.dataplane, door.watcher, door.draining())[0]

    async def _round(self) -> None:
        try:
            await self._set(_SERVING if self.ready() else _NOT_SERVING)
        except Exception:  # the next round tries again
            log.exception("gRPC health: readiness could not be read")

    async def _follow(self) -> None:
        interval = min(self.door.settings.health_interval_s, 1.0)
        while not self._draining.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draining.wait(), interval)
            if not self._draining.is_set():
                await self._round()
        await self._set(_NOT_SERVING)

    async def _set(self, status: int) -> None:
        if status == self._status:
            return
        self._status = status
        await self.servicer.set_all(SERVICE_NAMES, status)

    async def close(self) -> None:
        """NOT_SERVING for good, the follow task ended and awaited, every Watch ended."""
        self.drain()
        if self._task is not None:
            await self._task
        else:
            await self._set(_NOT_SERVING)
        await self.servicer.close()


MessageT = TypeVar("MessageT", bound=Message)


def _parse(kind: type[MessageT], raw: bytes) -> MessageT:
    try:
        return kind.FromString(raw)
    except DecodeError as error:
        raise RpcStatus(grpc.StatusCode.INVALID_ARGUMENT,
                        f"the request is not a valid {kind.DESCRIPTOR.full_name}: {error}") from None
