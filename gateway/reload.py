"""Hot reload: re-read the manifests, validate them fully, then swap the registry at once.

An invalid config is refused with its error and the old one keeps serving. Requests in flight
finish on the config they started with (they hold its objects). Channels to targets still in
use are reused; runtimes and channels that are no longer needed are closed after the drain
timeout. Settings (gateway.yaml) are read once at start: a reload applies models and
applications only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gateway.backends.pool import ChannelPool
from gateway.dataplane import DISCOVERY_TIMEOUT_S, DataPlane
from gateway.errors import ConfigError
from gateway.health_watch import HealthWatcher
from gateway.manifests import Config, RuntimeAddress, load_config
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.supervisor import ModelKey, RuntimeProcess, Supervisor

log = logging.getLogger("gateway.reload")


@dataclass
class ReloadResult:
    """What a reload did, as the admin route reports it."""

    applied: bool
    error: str | None = None
    applications: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Reloader:
    """Owns the current config and swaps it for a new one on request."""

    def __init__(self, settings: Settings, config: Config, dataplane: DataPlane, pool: ChannelPool,
                 watcher: HealthWatcher, supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.config = config
        self.dataplane = dataplane
        self.pool = pool
        self.watcher = watcher
        self.supervisor = supervisor
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._draining: list[Registry] = []  # replaced registries whose requests may still run

    async def reload(self) -> ReloadResult:
        """Load, validate and apply the config directory; one reload at a time."""
        async with self._lock:
            try:
                config = load_config(self.settings.config_dir)
            except ConfigError as error:
                log.error("reload refused, the current config keeps serving: %s", error)
                return ReloadResult(False, str(error))
            if config.gateway != self.config.gateway:
                log.warning("gateway.yaml changed; settings apply at the next restart")
            targets, failed = await self._runtimes(config)
            bound = config.with_targets(targets)
            registry = Registry.build(bound, self.pool, failed)
            replaced = self.dataplane.registry
            self.dataplane.registry = registry  # the swap: one assignment
            self.config = bound
            self._draining.append(replaced)
            retired = self.supervisor.take_retiring() if self.supervisor is not None else []
            await self.dataplane.discover(min(self.settings.request_timeout_s, DISCOVERY_TIMEOUT_S))
            await self.watcher.check_now()
            task = asyncio.create_task(self._retire(replaced, retired))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("reloaded: %d applications, %d models", len(registry.applications), len(registry.models))
            return ReloadResult(True, None, sorted(registry.applications),
                                sorted(model.label for model in registry.models.values()),
                                {f"{name}:{version}": reason for (name, version), reason in failed.items()})

    async def _runtimes(self, config: Config) -> tuple[dict[ModelKey, RuntimeAddress], dict[ModelKey, str]]:
        local = config.local_models()
        if self.supervisor is not None:
            return await self.supervisor.sync(local)
        # Without a supervisor (the app embedded elsewhere), local models keep their bindings.
        current = self.config.models
        targets = {m.key: RuntimeAddress(backend.target, backend.local_socket) for m in local
                   if m.key in current and (backend := current[m.key].backend) is not None}
        failed = {m.key: "no runtime: the gateway was not started by `gateway serve`"
                  for m in local if m.key not in targets}
        return targets, failed

    async def _retire(self, replaced: Registry, runtimes: list[RuntimeProcess]) -> None:
        """Once requests that started on `replaced` have had the drain timeout to finish, stop
        the runtimes this reload set aside and close the channels no registry still uses."""
        await asyncio.sleep(self.settings.drain_timeout_s)
        self._draining.remove(replaced)
        in_use = {model.backend.target for registry in (self.dataplane.registry, *self._draining)
                  for model in registry.models.values()}
        await self.pool.close_except(in_use)
        if self.supervisor is not None:
            await self.supervisor.retire(runtimes)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
