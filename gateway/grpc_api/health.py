"""grpc.health.v1.Health on the gRPC port, following the gateway's readiness.

The overall status ("") and each served service's follow what `/health/ready` answers
(gateway.routes.health.readiness): SERVING when ready, NOT_SERVING otherwise and from the
start of a drain on (NOT_SERVING for good, as grpc's graceful shutdown sets it). Checked every
`health_interval_s`; a service this port does not serve is NOT_FOUND (Check) as grpc answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from gateway.grpc_api.calls import DoorState
from gateway.routes.health import readiness
from protos.services import HYDRO_GATEWAY_SERVICE, TF_MODEL_SERVICE, TF_PREDICTION_SERVICE

log = logging.getLogger("gateway.grpc")
SERVICE_NAMES = ("", TF_PREDICTION_SERVICE, TF_MODEL_SERVICE, HYDRO_GATEWAY_SERVICE)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ReadinessHealth:
    """The Health servicer and the task that keeps its statuses at the gateway's readiness."""

    def __init__(self, door: DoorState) -> None:
        self.door = door
        self.servicer = HealthServicer()
        self._task: asyncio.Task[None] | None = None
        self._status: int | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    def stop(self) -> None:
        """The drain began: NOT_SERVING from now on."""
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._set(_NOT_SERVING))

    def ready(self) -> bool:
        door = self.door
        return readiness(door.dataplane, door.watcher, door.draining())[0]

    async def _follow(self) -> None:
        interval = self.door.settings.health_interval_s
        while True:
            try:
                await self._set(_SERVING if self.ready() else _NOT_SERVING)
            except Exception:  # the next round tries again
                log.exception("gRPC health: readiness could not be read")
            await asyncio.sleep(min(interval, 1.0))

    async def _set(self, status: int) -> None:
        if status == self._status:
            return
        self._status = status
        for name in SERVICE_NAMES:
            await self.servicer.set(name, status)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def add_to_server(health: ReadinessHealth, server: grpc.aio.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
