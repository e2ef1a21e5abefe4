"""Hot reload: re-read the manifests, validate them fully, start the runtimes of new and changed
local models, then swap the registry at once.

A reload is all or nothing: an invalid manifest, or a new or changed model that does not come up
within `runtime_start_timeout_s` or whose warmup fails (runtime.warmup, gateway.warmup), refuses
the whole reload with its error, stops the runtimes it started, and the old config keeps serving
unchanged. Requests in flight finish on the config they
started with (they hold its objects). Channels to targets still in use are reused; runtimes and
channels that are no longer needed are closed after the drain timeout. Settings (gateway.yaml) are
read once at start: a reload applies models and applications only.

Two halves: `ConfigStager` (validate, start runtimes) runs where the runtimes live, `Reloader.apply`
(swap) in every process serving HTTP. With one process `Reloader.reload` does both; with workers the
parent stages once and every worker applies (gateway/serving/worker_reloads.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.backends.pool import ChannelPool
from gateway.dataplane import DISCOVERY_TIMEOUT_S, DataPlane
from gateway.errors import ConfigError, GatewayError
from gateway.health_watch import HealthWatcher
from gateway.manifests import Config, RuntimeAddress, load_config
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store.changes import ConfigChange, Prepared
from gateway.store.journal import Committed, ConfigStore, is_read_only, read_only_conflict
from gateway.supervisor import ModelKey, RuntimeProcess, RuntimeStartError, Staged, Supervisor, runs_alike
from gateway.warmup import remote_warmups, warm_remotes
from modelfolder.warmup import WarmupStamp, stamp

log = logging.getLogger("gateway.reload")

SHUTTING_DOWN = "the gateway is shutting down; the reload was abandoned"

T = TypeVar("T")


async def _to_end(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread (file system work off the event loop), waited for to its
    end even when the caller is cancelled meanwhile, which is then raised: a change is never
    left half made by a cancellation."""
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(function, *args))
    cancelled = False
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)
            continue
        cancelled = cancelled or not future.cancelled()  # the caller was (even if the work ended meanwhile)
    result = future.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


@dataclass
class ReloadResult:
    """What a reload did, as the admin route reports it."""

    applied: bool
    error: str | None = None
    applications: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    shutting_down: bool = False
    refused_status: int = 422  # when not applied: 422 invalid config, 500 a fault, 504 no answer in time
    detail: dict[str, Any] = field(default_factory=dict)  # what a config change tells its caller

    @property
    def status(self) -> int:
        """The admin route's HTTP status."""
        return 200 if self.applied else 503 if self.shutting_down else self.refused_status


def failed_reload(error: BaseException) -> ReloadResult:
    """A reload that failed on a fault (not an invalid config): logged with its traceback, the
    current config keeps serving."""
    log.error("reload failed, the current config keeps serving", exc_info=error)
    return ReloadResult(False, f"the reload failed: {type(error).__name__}: {error}", refused_status=500)


def abandoned(applied: ReloadResult | None) -> ReloadResult:
    """The answer to a reload given up because the gateway is stopping: what it had applied
    by then (the swap is done once committed), else that it was abandoned."""
    if applied is not None:
        return ReloadResult(True, "applied; the gateway is shutting down", applied.applications,
                            applied.models, applied.failed)
    return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)


class Reloads(Protocol):
    """What carries out a reload asked for in one process: its `Reloader`, or a worker's link
    to the parent that reloads every worker."""

    async def reload(self) -> ReloadResult: ...

    async def change(self, change: ConfigChange) -> ReloadResult:
        """Make `change` to the config directory, then reload (reverted when the reload is
        refused)."""
        ...

    def abandon(self) -> None: ...


@dataclass
class StagedConfig:
    """A validated config bound to its runtimes, not serving yet."""

    config: Config
    failed: dict[ModelKey, str]
    runtimes: Staged | None = None


class ConfigStager:
    """Loads and validates the config directory and starts the runtimes of its new and changed
    local models (all or nothing); `commit` makes the result current."""

    def __init__(self, settings: Settings, config: Config, supervisor: Supervisor | None,
                 failed: Mapping[ModelKey, str] | None = None) -> None:
        self.settings = settings
        self.config = config
        self.supervisor = supervisor
        self.store = ConfigStore(settings.config_dir)
        self.unwarmed: dict[ModelKey, str] = {}  # remote models not served: their warmup failed
        # The warmup file each remote model was warmed with (a new file at the same path warms again).
        self._warmed: dict[ModelKey, WarmupStamp] = {m.key: stamp(m.warmup)
                                                     for m in remote_warmups(config.models.values())}
        self._keep_unwarmed(config, failed or {})

    async def stage(self) -> StagedConfig:
        """The config directory, validated, with runtimes for every local model and remote
        models warmed; ConfigError when a manifest is invalid or a new or changed model does not
        start or warm up (then nothing started stays running). Cancelling it stops what it
        started."""
        config = load_config(self.settings.config_dir)
        if config.gateway != self.config.gateway:
            log.warning("gateway.yaml changed; settings apply at the next restart")
        unwarmed = await self._warm_remotes(config)
        if self.supervisor is None:
            targets, failed = self._kept_bindings(config)
            return StagedConfig(config.with_targets(targets), {**failed, **unwarmed})
        try:
            staged = await self.supervisor.stage(config.local_models())
        except RuntimeStartError as error:
            raise ConfigError(str(error)) from None
        return StagedConfig(config.with_targets(staged.targets), {**staged.failed, **unwarmed}, staged)

    async def _warm_remotes(self, config: Config) -> dict[ModelKey, str]:
        """Warm the new and changed remote models with a warmup file (and those whose warmup
        failed before); ConfigError when a new or changed one fails. The failures of models
        unchanged since theirs failed: they stay not served."""
        current = self.config.models
        wanted = [m for m in remote_warmups(config.models.values())
                  if not runs_alike(current.get(m.key), m) or m.key in self.unwarmed
                  or self._warmed.get(m.key) != stamp(m.warmup)]
        failures = await warm_remotes(wanted, self.settings.warmup_timeout_s,
                                      max_elements=self.settings.max_elements)
        self._warmed.update({m.key: stamp(m.warmup) for m in wanted if m.key not in failures})
        refused = {key: reason for key, reason in failures.items()
                   if key not in self.unwarmed or not runs_alike(current.get(key), config.models[key])}
        if refused:
            raise ConfigError("; ".join(f"model {name}:{version} is not served: {reason}"
                                        for (name, version), reason in sorted(refused.items())))
        return failures

    def _keep_unwarmed(self, config: Config, failed: Mapping[ModelKey, str]) -> None:
        self.unwarmed = {key: reason for key, reason in failed.items()
                         if key in config.models and config.models[key].folder is None}

    def _kept_bindings(self, config: Config) -> tuple[dict[ModelKey, RuntimeAddress], dict[ModelKey, str]]:
        # Without a supervisor (the app embedded elsewhere) local models keep their bindings,
        # and a new one cannot be started: refused rather than served as unavailable.
        current = self.config.models
        targets = {m.key: RuntimeAddress(backend.target, backend.local_socket) for m in config.local_models()
                   if m.key in current and (backend := current[m.key].backend) is not None}
        new = [m for m in config.local_models() if m.key not in targets]
        if new:
            raise ConfigError(f"model {new[0].name}:{new[0].version} is new, and this gateway does not run "
                              "model runtimes (`gateway serve` does): restart it to add local models",
                              new[0].source)
        return targets, {}

    def commit(self, staged: StagedConfig) -> list[RuntimeProcess]:
        """Make `staged` current; returns the runtimes it replaces (to `retire` after a drain)."""
        self.config = staged.config
        self._keep_unwarmed(staged.config, staged.failed)
        if self.supervisor is None or staged.runtimes is None:
            return []
        return self.supervisor.commit(staged.runtimes)

    async def retire(self, runtimes: list[RuntimeProcess]) -> None:
        if self.supervisor is not None and runtimes:
            await self.supervisor.retire(runtimes)


class SerialReloads(ABC):
    """Reloads one at a time, each staged by `stager` and then applied by `_apply` (a subclass:
    one process's swap, or every worker's). A caller is always answered: 422 for an invalid
    config, 500 for a fault; after `abandon` (the gateway is stopping), at once, with what the
    reload had applied by then."""

    def __init__(self, stager: ConfigStager) -> None:
        self.stager = stager
        self._lock = asyncio.Lock()
        self._reloading: set[asyncio.Task[ReloadResult]] = set()
        self._applied: dict[asyncio.Task[ReloadResult], ReloadResult] = {}  # reloads past their swap
        self._abandoned = False
        self._committing: Committed | None = None  # the change of the reload under way, until it swaps

    async def reload(self) -> ReloadResult:
        """Load, validate and apply the config directory; one reload at a time."""
        return await self._run(None)

    async def change(self, change: ConfigChange) -> ReloadResult:
        """Make `change` (committed to the config directory), then reload as `reload` does;
        a refused reload reverts the change (then nothing of it is left)."""
        return await self._run(change)

    async def _run(self, change: ConfigChange | None) -> ReloadResult:
        if self._abandoned:
            return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)
        task = asyncio.create_task(self._reload(change))
        self._reloading.add(task)
        task.add_done_callback(self._reloading.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._abandoned:
                return abandoned(self._applied.get(task))
            raise
        finally:
            self._applied.pop(task, None)

    async def _reload(self, change: ConfigChange | None) -> ReloadResult:
        async with self._lock:
            made: list[Prepared] = []  # set in the thread: known even when cancelled meanwhile
            prepared: Prepared | None = None
            try:
                if change is not None:
                    await _to_end(lambda: made.append(change.prepare(self.stager.config, self.stager.store)))
                    prepared = made[0]
                    await _to_end(prepared.transaction.commit)  # files in place; kept by a restart once served
                staged = await self.stager.stage()
            except BaseException as error:
                prepared = made[0] if made else None
                if prepared is not None:
                    await self._undo(prepared)  # a refused (or abandoned) reload leaves nothing of the change
                if is_read_only(error):
                    error = read_only_conflict(self.stager.settings.config_dir)
                if isinstance(error, GatewayError):
                    return ReloadResult(False, error.message, refused_status=error.status)
                if isinstance(error, ConfigError):
                    log.error("%s refused, the current config keeps serving: %s",
                              "reload" if change is None else "change", error)
                    return ReloadResult(False, str(error))
                if isinstance(error, Exception):  # answered (500), never left hanging
                    return failed_reload(error)
                raise
            committed = prepared.transaction.committed if prepared is not None else None
            self._committing = committed
            try:
                result = await self._apply(staged)
            except BaseException:
                if committed is not None and asyncio.current_task() not in self._applied:
                    await _to_end(committed.revert)  # not swapped: the old config serves on, and stays
                    committed = None
                raise
            finally:
                self._committing = None
                if committed is not None:  # swapped: the change stays, also when abandoned meanwhile
                    await _to_end(committed.finish)
            if prepared is not None:
                result.detail = prepared.detail
            return result

    async def _undo(self, prepared: Prepared) -> None:
        """Revert the change if it was committed, else drop what it prepared (to the end, even
        when cancelled meanwhile); a failure is logged (recover() completes it at the next start)."""
        transaction = prepared.transaction
        undo = transaction.committed.revert if transaction.committed is not None else transaction.discard
        try:
            await _to_end(undo)
        except Exception:
            log.exception("the change could not be undone; the next start of the gateway completes it")

    @abstractmethod
    async def _apply(self, staged: StagedConfig) -> ReloadResult:
        """Make `staged` serve (called with the lock held); `_swapped` as soon as it does."""

    def _swapped(self, result: ReloadResult) -> None:
        """The reload under way has swapped: the change it makes is marked served (a restart
        keeps it from now on), and an abandoned caller is told it applied."""
        if self._committing is not None:
            self._committing.mark_served()
            self._committing = None
        current = asyncio.current_task()
        if current is not None and current in self._reloading:
            self._applied[current] = result

    def abandon(self) -> None:
        """Give up reloads under way (the gateway is stopping): what they started is stopped,
        and their callers are answered at once rather than holding up the drain."""
        self._abandoned = True
        for task in self._reloading:
            task.cancel()


class Reloader(SerialReloads):
    """Owns the current config of one HTTP-serving process and swaps it for a new one."""

    def __init__(self, settings: Settings, config: Config, dataplane: DataPlane, pool: ChannelPool,
                 watcher: HealthWatcher, supervisor: Supervisor | None = None,
                 failed: Mapping[ModelKey, str] | None = None) -> None:
        self.settings = settings
        self.config = config
        self.dataplane = dataplane
        self.pool = pool
        self.watcher = watcher
        super().__init__(ConfigStager(settings, config, supervisor, failed))
        self._retiring: set[asyncio.Task[None]] = set()
        self._draining: list[Registry] = []  # replaced registries whose requests may still run

    async def _apply(self, staged: StagedConfig) -> ReloadResult:
        return await self._swap(staged.config, staged.failed, self.stager.commit(staged))

    async def apply(self, config: Config, failed: Mapping[ModelKey, str]) -> ReloadResult:
        """Swap to `config`, already validated and bound to running runtimes elsewhere (a
        worker told by the parent); one swap at a time."""
        async with self._lock:
            return await self._swap(config, failed, ())

    async def _swap(self, config: Config, failed: Mapping[ModelKey, str],
                    retiring: Sequence[RuntimeProcess]) -> ReloadResult:
        """Swap to `config`; `retiring` are runtimes to stop once requests on the replaced
        config have drained."""
        metrics = self.dataplane.metrics
        registry = Registry.build(config, self.pool, failed, metrics.batch_observer if metrics is not None else None)
        replaced = self.dataplane.registry
        self.dataplane.registry = registry  # the swap: one assignment
        if self.dataplane.shadows is not None:
            self.dataplane.shadows.keep_only(registry)  # removed shadows' queues end
        if self.dataplane.request_logs is not None:
            self.dataplane.request_logs.keep_only(registry)  # removed sinks close, kept ones keep their files
        result = ReloadResult(True, None, sorted(registry.applications),
                              sorted(model.label for model in registry.models.values()),
                              {f"{name}:{version}": reason for (name, version), reason in failed.items()})
        self._swapped(result)
        self.config = config
        self.stager.config = config
        self._draining.append(replaced)
        task = asyncio.create_task(self._retire(replaced, list(retiring)))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        await self.dataplane.discover(min(self.settings.request_timeout_s, DISCOVERY_TIMEOUT_S))
        await self.watcher.check_now()
        log.info("reloaded: %d applications, %d models", len(registry.applications), len(registry.models))
        return result

    async def _retire(self, replaced: Registry, runtimes: list[RuntimeProcess]) -> None:
        """Once requests that started on `replaced` have had the drain timeout to finish, stop
        the runtimes this reload set aside and close the channels no registry still uses."""
        await asyncio.sleep(self.settings.drain_timeout_s)
        self._draining.remove(replaced)
        models = [model for registry in (self.dataplane.registry, *self._draining)
                  for model in registry.models.values()]
        channels = {(model.manifest.backend.target, model.manifest.backend.tls) for model in models
                    if model.manifest.backend is not None}
        await self.pool.close_except({model.backend.target for model in models}, channels=channels)
        await self.stager.retire(runtimes)

    async def close(self) -> None:
        self.abandon()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._reloading, *self._retiring, return_exceptions=True)
