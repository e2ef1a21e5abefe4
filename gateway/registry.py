"""The live set of models and applications, each model bound to its backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.backends import Backend, UnavailableBackend
from gateway.backends.pool import ChannelPool
from gateway.backends.tfserving import TFServingBackend
from gateway.errors import NotFound
from gateway.manifests import ApplicationManifest, Config, ModelManifest, resolve_model
from tensorcodecs import Signature


@dataclass(frozen=True, slots=True)
class Model:
    """A model version and the backend that runs it."""

    manifest: ModelManifest
    backend: Backend

    @property
    def label(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"


@dataclass(frozen=True, slots=True)
class Variant:
    model: Model
    weight: int


@dataclass(frozen=True, slots=True)
class Application:
    """An application resolved to models: its contract is its first stage's inputs and
    its last stage's outputs."""

    name: str
    stages: tuple[tuple[Variant, ...], ...]
    signature: Signature
    manifest: ApplicationManifest

    def models(self) -> list[Model]:
        return [variant.model for stage in self.stages for variant in stage]


class Registry:
    """Models and applications by name; built from a validated `Config`."""

    def __init__(self, models: Mapping[tuple[str, int], Model],
                 applications: Mapping[str, Application]) -> None:
        self.models = dict(models)
        self.applications = dict(applications)

    @classmethod
    def build(cls, config: Config, pool: ChannelPool,
              failed: Mapping[tuple[str, int], str] | None = None) -> Registry:
        """Bind every model to a backend on the pool; `failed` gives reasons for local models
        whose runtime did not start."""
        failed = failed or {}
        models = {key: Model(manifest, _backend_for(manifest, pool, failed.get(key)))
                  for key, manifest in config.models.items()}
        applications = {name: _resolve(app, config, models)
                        for name, app in config.applications.items()}
        return cls(models, applications)

    def application(self, name: str) -> Application:
        """The application called `name`, or NotFound."""
        app = self.applications.get(name)
        if app is None:
            raise NotFound(f"application {name!r} does not exist")
        return app


def _backend_for(manifest: ModelManifest, pool: ChannelPool, failure: str | None) -> Backend:
    if manifest.backend is None:
        reason = failure or "its runtime is not running"
        return UnavailableBackend(f"model {manifest.name}:{manifest.version} is unavailable: {reason}")
    return TFServingBackend(pool.channel(manifest.backend.target), manifest)


def _resolve(app: ApplicationManifest, config: Config,
             models: Mapping[tuple[str, int], Model]) -> Application:
    stages = tuple(
        tuple(Variant(models[resolve_model(config.models, v.model, app.source).key], v.weight)
              for v in stage.variants)
        for stage in app.stages
    )
    first, last = stages[0][0].model.manifest.signature, stages[-1][0].model.manifest.signature
    signature = Signature(app.name, first.inputs, last.outputs)
    return Application(app.name, stages, signature, app)
