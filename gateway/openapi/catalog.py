"""What the OpenAPI document is built from: the applications and model versions a caller may
call, each with its contract or None when it is not known yet, made from the live registry
(`from_registry`: discovered contracts too) or from a config's manifests alone (`from_config`:
what `gateway openapi` writes offline). Both read the same rules, so that a config whose
contracts are all declared gives the same catalog either way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.backends.capabilities import Classifies, HasMetadata, Kind, Regresses, ReportsStatus, offered
from gateway.backends.tfserving import RuntimeBackend, TFServingBackend
from gateway.manifests import ApplicationManifest, Config, ModelManifest, Plan, manifest_plan, version_labels
from gateway.registry import Model, Registry, target_contract
from gateway.settings import AuthSettings
from tensorcodecs import Signature

# The optional calls of TF Serving's REST API, by the name the document gives them.
CAPABILITIES: dict[str, Kind[object]] = {
    "classify": Classifies, "regress": Regresses, "status": ReportsStatus, "metadata": HasMetadata}
# What each backend protocol offers when no backend runs (offline, or a runtime that did not
# start: its routes answer 503, they exist all the same).
_PROTOCOL_BACKENDS: dict[str, type] = {"tensorflow-serving": TFServingBackend}
_LOCAL_BACKEND: type = RuntimeBackend

Allowed = Callable[[str], bool]  # whether the caller may call the application or model of that name


@dataclass(frozen=True, slots=True)
class AppEntry:
    """An application: its contract (None: discovered from its backends, not yet), whether
    callers may force its variants, and its stages as `x-gateway-variants` names them."""

    name: str
    signature: Signature | None
    allow_variant_override: bool = False
    stages: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model version: its contract (None: not known yet) and where it comes from
    (`declared`, `discovered`, `unknown`), the labels pointing at it, whether it is floating
    (every version its backend serves), the optional calls its backend offers and the method of
    each of its signatures (Classify and Regress take only their own)."""

    name: str
    version: int
    signature: Signature | None
    contract: str
    kind: str
    labels: tuple[str, ...] = ()
    floating: bool = False
    capabilities: frozenset[str] = frozenset()
    # Each signature's name and method (SignatureDef.method_name); None: not known (a remote
    # model not described yet, or whose contract is declared: its server may have others).
    methods: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Catalog:
    """Everything the document lists, sorted by name (and version); `api_keys` / `admin_tokens`:
    whether keys or admin tokens are configured (the document's security schemes)."""

    applications: tuple[AppEntry, ...] = ()
    models: tuple[ModelEntry, ...] = ()
    api_keys: bool = False
    admin_tokens: bool = False
    model_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_names", tuple(dict.fromkeys(m.name for m in self.models)))

    def versions(self, name: str) -> tuple[ModelEntry, ...]:
        """The versions of model `name`, lowest first."""
        return tuple(m for m in self.models if m.name == name)


def everyone(name: str) -> bool:
    return True


def from_registry(registry: Registry, auth: AuthSettings, allowed: Allowed = everyone) -> Catalog:
    """The catalog of the live registry: declared and discovered contracts."""
    manifests = {key: model.manifest for key, model in registry.models.items()}
    apps = []
    for name in sorted(registry.applications):
        if not allowed(name):
            continue
        app = registry.applications[name]
        first, last = app.stages[0].live[0], app.stages[-1].live[0]
        known = target_contract(first.target) is not None and target_contract(last.target) is not None
        apps.append(AppEntry(name, app.signature if known else None, app.manifest.allow_variant_override,
                             tuple(tuple(v.name for v in stage.live) for stage in app.stages)))
    models = [_model_entry(model.manifest, manifests, _live_contract(model), _live_capabilities(model),
                           _live_methods(model))
              for key, model in sorted(registry.models.items()) if allowed(key[0])]
    return Catalog(tuple(apps), tuple(models), bool(auth.api_keys), bool(auth.admin_token_sha256))


def from_config(config: Config, auth: AuthSettings, allowed: Allowed = everyone) -> Catalog:
    """The catalog of a config's manifests alone: contracts not declared are not known."""
    apps = [_config_app(app, config.models) for name, app in sorted(config.applications.items()) if allowed(name)]
    models = [_model_entry(manifest, config.models,
                           (manifest.signature, "declared") if manifest.contract_declared else (None, "unknown"),
                           _protocol_capabilities(manifest), _declared_methods(manifest))
              for key, manifest in sorted(config.models.items()) if allowed(key[0])]
    return Catalog(tuple(apps), tuple(models), bool(auth.api_keys), bool(auth.admin_token_sha256))


def _config_app(app: ApplicationManifest, models: Mapping[tuple[str, int], ModelManifest]) -> AppEntry:
    plan: Plan = manifest_plan(app, models)
    first, last = plan.stages[0].live[0].signature, plan.stages[-1].live[0].signature
    signature = Signature(app.name, first.inputs, last.outputs) if first is not None and last is not None else None
    return AppEntry(app.name, signature, app.allow_variant_override,
                    tuple(tuple(v.model for v in stage.live) for stage in plan.stages))


def _model_entry(manifest: ModelManifest, manifests: Mapping[tuple[str, int], ModelManifest],
                 contract: tuple[Signature | None, str], capabilities: frozenset[str],
                 methods: tuple[tuple[str, str], ...] | None) -> ModelEntry:
    served = {version for name, version in manifests if name == manifest.name}
    # A label reaches its version's manifest, else the floating one, which forwards it.
    labels = tuple(sorted(label for label, version in version_labels(manifests, manifest.name).items()
                          if version == manifest.version or (manifest.floating and version not in served)))
    kind = "local" if manifest.folder is not None else manifest.backend.protocol if manifest.backend else "local"
    return ModelEntry(manifest.name, manifest.version, contract[0], contract[1], kind, labels,
                      manifest.floating, capabilities, methods)


def _live_contract(model: Model) -> tuple[Signature | None, str]:
    """The contract requests are checked against, as GET /gateway/models reports it."""
    if model.manifest.contract_declared:
        return model.manifest.signature, "declared"
    if model.contracts.by_selector.get(None):
        return model.signature, "discovered"
    return None, "unknown"


def _declared_methods(manifest: ModelManifest) -> tuple[tuple[str, str], ...] | None:
    """A local model's one signature (the runtime's contract is Predict's); None for a remote one."""
    return ((manifest.signature.name, manifest.signature.method),) if manifest.folder is not None else None


def _live_methods(model: Model) -> tuple[tuple[str, str], ...] | None:
    """The methods of the signatures its backend described for its default version, else as
    offline."""
    discovered = model.contracts.by_selector.get(None)
    if model.manifest.folder is None and discovered:
        return tuple(sorted((name, signature.method) for name, signature in discovered.items()))
    return _declared_methods(model.manifest)


def _live_capabilities(model: Model) -> frozenset[str]:
    """What its backend offers; a model whose runtime did not start: what its protocol offers
    (those routes answer its 503, as its predictions do)."""
    if model.unavailable is not None:
        return _protocol_capabilities(model.manifest)
    return frozenset(name for name, kind in CAPABILITIES.items() if offered(model.backend, kind) is not None)


def _protocol_capabilities(manifest: ModelManifest) -> frozenset[str]:
    backend = _LOCAL_BACKEND if manifest.folder is not None else (
        _PROTOCOL_BACKENDS.get(manifest.backend.protocol) if manifest.backend else None)
    offers: frozenset[type] = getattr(backend, "capabilities", frozenset())
    return frozenset(name for name, kind in CAPABILITIES.items() if kind in offers)
