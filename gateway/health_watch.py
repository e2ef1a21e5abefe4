"""Backend health, watched in the background so that `/health/ready` never waits on a backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from gateway.dataplane import DataPlane

log = logging.getLogger("gateway.health")


@dataclass(frozen=True, slots=True)
class BackendHealth:
    ready: bool
    checked_at: float  # time.time()


class HealthWatcher:
    """Checks every model's backend each `interval_s`; keeps the latest answers."""

    def __init__(self, dataplane: DataPlane, interval_s: float, timeout_s: float) -> None:
        self.dataplane = dataplane
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.health: dict[str, BackendHealth] = {}
        self._task: asyncio.Task[None] | None = None

    async def check_now(self) -> None:
        """Check every backend once, all at the same time."""
        models = list(self.dataplane.registry.models.values())
        results = await asyncio.gather(*(m.backend.healthy(self.timeout_s) for m in models),
                                       return_exceptions=True)
        now = time.time()
        health: dict[str, BackendHealth] = {}
        for model, result in zip(models, results, strict=True):
            ready = result is True
            previous = self.health.get(model.label)
            if previous is not None and previous.ready != ready:
                log.warning("model %s (%s) is %s", model.label, model.backend.target,
                            "ready again" if ready else "not ready")
            health[model.label] = BackendHealth(ready, now)
        self.health = health

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_now()
            except Exception:
                log.exception("health check round failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
