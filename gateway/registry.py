"""The live set of models and applications, each model bound to its backend."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.backends import Backend, Selector, UnavailableBackend
from gateway.backends.base import default_signature
from gateway.backends.pool import ChannelPool
from gateway.backends.protocols import PROTOCOLS
from gateway.backends.scheduling import scheduled
from gateway.backends.sharing import CallObserver
from gateway.errors import ConfigError, NotFound
from gateway.manifests import (
    ApplicationManifest,
    Config,
    ModelManifest,
    ModelRef,
    Plan,
    PlannedStage,
    PlannedVariant,
    Resolution,
    VariantManifest,
    resolve_ref,
    resolved_name,
)
from gateway.routing import Router
from tensorcodecs import Signature

# (model name, version) -> where that batching model's scheduler reports its calls
BatchObservers = Callable[[str, int], CallObserver]

log = logging.getLogger("gateway.registry")


@dataclass(slots=True)
class Contracts:
    """Signatures a backend described (GetModelMetadata), per version or label asked for (None:
    the pinned one; resolution never answers an empty Selector, so None is its only key)."""

    by_selector: dict[Selector | None, dict[str, Signature]] = field(default_factory=dict)
    # Why the last lookup of a version or label failed (its backend does not serve it yet):
    # the variants reaching it answer 503 and readiness lists them, until a lookup succeeds.
    failures: dict[Selector | None, str] = field(default_factory=dict)

    def clear(self) -> None:
        self.by_selector.clear()
        self.failures.clear()


@dataclass(frozen=True, slots=True)
class Model:
    """A model version and the backend that runs it."""

    manifest: ModelManifest
    backend: Backend
    contracts: Contracts = field(default_factory=Contracts, compare=False)
    # For a model some application uses as a shadow: its backend without the target's circuit
    # breaker or a call scheduler, through which shadow copies go (gateway.shadows).
    shadow_backend: Backend | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"

    @property
    def unavailable(self) -> str | None:
        """Why the model is not served (its runtime did not start, its warmup failed); None: it is."""
        return self.backend.reason if isinstance(self.backend, UnavailableBackend) else None

    @property
    def signature_name(self) -> str:
        """The signature requests use unless they name one."""
        return self.manifest.backend.signature_name if self.manifest.backend else self.manifest.signature.name

    @property
    def signature(self) -> Signature:
        """The contract: the manifest's, else the one discovered for the default version
        (empty until discovered)."""
        if self.manifest.contract_declared:
            return self.manifest.signature
        discovered = self.contracts.by_selector.get(None, {})
        return discovered.get(self.signature_name, self.manifest.signature)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request reaches: a model, and the version or label to ask its backend for."""

    model: Model
    selector: Selector | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """One model serving a stage (a manifest's `VariantManifest` bound to its model), the share of
    traffic it gets and the version or label to ask its backend for."""

    model: Model
    weight: int
    selector: Selector | None = None
    manifest: VariantManifest | None = None  # as the application's manifest names it
    # `name:version` as requests name it (`x-gateway-variant`) and answers report it
    # (`x-gateway-variants`): `resolved_name`, as plans name it too; made once, read per request.
    name: str = field(init=False, compare=False)
    # What a request to it reaches (made once: every request of its stage asks for it).
    target: Target = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", resolved_name(Resolution(self.model.manifest, self.selector)))
        object.__setattr__(self, "target", Target(self.model, self.selector))


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of an application: the live variants that share its traffic (one serves each
    request) and the shadows that get copies of it. `number` counts from 1, as errors say."""

    number: int
    live: tuple[Variant, ...]
    shadows: tuple[Variant, ...] = ()
    router: Router = field(init=False, repr=False, compare=False)  # built once per stage, not per request

    def __post_init__(self) -> None:
        object.__setattr__(self, "router", Router(self.live, self.shadows))

    @property
    def variants(self) -> tuple[Variant, ...]:
        return self.live + self.shadows


@dataclass(frozen=True, slots=True)
class Application:
    """An application resolved to models: its contract is its first stage's inputs and
    its last stage's outputs."""

    name: str
    stages: tuple[Stage, ...]
    signature: Signature
    manifest: ApplicationManifest
    # What its live variants reach whose contract comes from the backend, each model's version
    # or label once (known once at build: requests to an application of declared contracts
    # never look for one).
    from_backend: tuple[Target, ...] = field(init=False)
    # The contract rules its known contracts break (discovered ones: declared ones are checked
    # at load) between live variants; while there are any it is not ready and answers
    # ApplicationContractMismatch.
    problems: tuple[str, ...] = field(init=False)
    # Those about a shadow variant: the shadow gets no copies (`disabled_shadows`, by name) unless
    # its answers can still be compared (an output of another dtype of one kind: a note), the
    # application keeps serving.
    shadow_problems: tuple[str, ...] = field(init=False)
    disabled_shadows: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        undeclared = {(id(variant.model), variant.selector): variant.target
                      for stage in self.stages for variant in stage.live
                      if not variant.model.manifest.contract_declared}
        object.__setattr__(self, "from_backend", tuple(undeclared.values()))
        found = self.plan().problems()
        object.__setattr__(self, "problems", tuple(problem.message for problem in found if not problem.shadow))
        object.__setattr__(self, "shadow_problems", tuple(problem.message for problem in found if problem.shadow))
        object.__setattr__(self, "disabled_shadows", frozenset(problem.shadow for problem in found
                                                               if problem.shadow and not problem.note))

    def plan(self) -> Plan:
        """Its stages with the contracts known now (`target_contract`: declared, or discovered;
        None until then)."""
        return Plan(self.name, tuple(
            PlannedStage(stage.number, tuple(_planned(variant) for variant in stage.variants))
            for stage in self.stages))

    def models(self) -> list[Model]:
        """The models of its live variants (what its answers and readiness depend on)."""
        return [variant.model for stage in self.stages for variant in stage.live]

    def shadow_models(self) -> list[Model]:
        return [variant.model for stage in self.stages for variant in stage.shadows]

    def unserved(self) -> list[tuple[Stage, Variant, str]]:
        """Its live variants whose contract lookup failed (`Contracts.failures`), with the reason:
        the requests routed to them answer 503, the other variants keep serving."""
        found = []
        for stage in self.stages:
            for variant in stage.live:
                contracts = variant.model.contracts
                reason = contracts.failures.get(variant.selector)
                if reason is not None and variant.selector not in contracts.by_selector:
                    found.append((stage, variant, reason))
        return found


class Registry:
    """Models and applications by name; built from a validated `Config`."""

    def __init__(self, models: Mapping[tuple[str, int], Model],
                 applications: Mapping[str, Application]) -> None:
        self.models = dict(models)
        self.applications = dict(applications)
        self._manifests = {key: model.manifest for key, model in self.models.items()}

    @classmethod
    def build(cls, config: Config, pool: ChannelPool,
              failed: Mapping[tuple[str, int], str] | None = None,
              batch_observer: BatchObservers | None = None) -> Registry:
        """Bind every model to a backend on the pool; `failed` gives reasons for models that
        are not served (a local model whose runtime did not start, a failed warmup);
        `batch_observer(name, version)`: where a batching model reports its calls (metrics)."""
        failed = failed or {}
        shadowed = _shadow_models(config)
        models = {key: Model(manifest, _backend_for(manifest, pool, failed.get(key), batch_observer),
                             shadow_backend=_shadow_backend_for(manifest, pool, failed.get(key))
                             if key in shadowed else None)
                  for key, manifest in config.models.items()}
        applications = {name: _resolve(app, config.models, models)
                        for name, app in config.applications.items()}
        return cls(models, applications)

    def application(self, name: str) -> Application:
        """The application called `name`, or NotFound."""
        app = self.applications.get(name)
        if app is None:
            raise NotFound(f"application {name!r} does not exist")
        return app

    def resolve(self, name: str, selector: Selector | None = None) -> Target:
        """The model `name` (or, failing that, the one whose backend serves a model of that
        name) at the `selector`'s version or label; NotFound otherwise."""
        selector = selector or Selector()
        if selector.version is not None and selector.version >= 2**63:  # TF Serving's versions are int64
            raise NotFound(f"model {name!r} has no version {selector.version}")
        if not any(model_name == name for model_name, _ in self._manifests):
            serving = [m for m in self._manifests.values()
                       if m.backend is not None and m.backend.model_name == name]
            # Several gateway models may front it: the floating one (every version) wins.
            served = sorted({m.name for m in serving if m.floating} or {m.name for m in serving})
            if len(served) != 1:
                raise NotFound(f"model {name!r} does not exist" if not served else
                               f"model {name!r} is served as {', '.join(served)}: use one of these names")
            name = served[0]
        try:
            resolution = resolve_ref(self._manifests, ModelRef(name, selector))
        except ConfigError as error:
            raise NotFound(error.message) from None
        return Target(self.models[resolution.manifest.key], resolution.selector)

    def refresh_applications(self) -> None:
        """Recompute application contracts (and their problems) after model contracts were discovered."""
        before = self.applications
        self.applications = {name: dataclasses.replace(app, signature=_app_signature(app.name, app.stages))
                             for name, app in self.applications.items()}
        for name, app in self.applications.items():
            if app.problems != before[name].problems:
                if app.problems:
                    log.warning("application %s is not ready: %s", name, "; ".join(app.problems))
                else:
                    log.warning("application %s: its discovered contracts fit together again", name)
            if app.shadow_problems != before[name].shadow_problems:
                if app.disabled_shadows:
                    log.warning("application %s: shadow(s) %s get no copies: %s", name,
                                ", ".join(sorted(app.disabled_shadows)), "; ".join(app.shadow_problems))
                elif app.shadow_problems:  # differences their answers are compared across
                    log.warning("application %s: shadow(s) differ but are still compared: %s", name,
                                "; ".join(app.shadow_problems))
                else:
                    log.warning("application %s: its shadows' discovered contracts fit again", name)


class Connect(Protocol):
    """A backend protocol's `connect`: the backend of a manifest on the pool; `guarded=False`
    leaves the target's circuit breaker out (for shadow calls, which must not open it)."""

    def __call__(self, manifest: ModelManifest, pool: ChannelPool, *, guarded: bool = True) -> Backend: ...


# The backend of each protocol a manifest may name (`backend.protocol`): the `connect` of the
# module gateway.backends.protocols names for it.
BACKENDS: dict[str, Connect] = {
    name: importlib.import_module(module).connect for name, module in PROTOCOLS.items()
}


def _backend_for(manifest: ModelManifest, pool: ChannelPool, failure: str | None,
                 batch_observer: BatchObservers | None = None) -> Backend:
    spec = manifest.backend
    if spec is None or failure is not None:  # a local model without a runtime, or a failed warmup
        return UnavailableBackend.for_model(f"{manifest.name}:{manifest.version}",
                                            failure or "its runtime is not running", manifest.folder)
    backend = BACKENDS[spec.protocol](manifest, pool)
    observe = batch_observer(manifest.name, manifest.version) if batch_observer and manifest.batching else None
    return scheduled(backend, default_signature(manifest), manifest.signature.inputs, manifest.batching,
                     spec.shared_calls, observe)


def _shadow_backend_for(manifest: ModelManifest, pool: ChannelPool, failure: str | None) -> Backend:
    """The backend shadow copies of `manifest`'s model go through: unguarded and unscheduled."""
    spec = manifest.backend
    if spec is None or failure is not None:
        return UnavailableBackend.for_model(f"{manifest.name}:{manifest.version}",
                                            failure or "its runtime is not running", manifest.folder)
    return BACKENDS[spec.protocol](manifest, pool, guarded=False)


def _shadow_models(config: Config) -> set[tuple[str, int]]:
    """The models some application uses as a shadow variant."""
    return {resolve_ref(config.models, variant.model, variant.source or app.source).manifest.key
            for app in config.applications.values() for stage in app.stages for variant in stage.shadows}


def _resolve(app: ApplicationManifest, manifests: Mapping[tuple[str, int], ModelManifest],
             models: Mapping[tuple[str, int], Model]) -> Application:
    def bind(variant: VariantManifest) -> Variant:
        resolution = resolve_ref(manifests, variant.model, variant.source or app.source)
        return Variant(models[resolution.manifest.key], variant.weight, resolution.selector, variant)

    stages = tuple(Stage(number, tuple(map(bind, stage.live)), tuple(map(bind, stage.shadows)))
                   for number, stage in enumerate(app.stages, start=1))
    return Application(app.name, stages, _app_signature(app.name, stages), app)


def target_contract(target: Target) -> Signature | None:
    """The contract of the model `target` reaches: its manifest's, else the one its backend
    described for the target's version or label (None: that one not described yet, never
    another version's: the data plane asks for it before a request runs)."""
    model = target.model
    if model.manifest.contract_declared:
        return model.manifest.signature
    discovered = model.contracts.by_selector.get(target.selector)
    return discovered.get(model.signature_name) if discovered is not None else None


def _planned(variant: Variant) -> PlannedVariant:
    manifest, signature = variant.manifest, target_contract(variant.target)
    if manifest is None:
        return PlannedVariant(variant.name, variant.weight, signature=signature)
    return PlannedVariant(variant.name, variant.weight, manifest.shadow, manifest.sample, signature, manifest.source)


def _app_signature(name: str, stages: tuple[Stage, ...]) -> Signature:
    first, last = stages[0].live[0], stages[-1].live[0]
    inputs = (target_contract(first.target) or first.model.signature).inputs
    return Signature(name, inputs, (target_contract(last.target) or last.model.signature).outputs)
