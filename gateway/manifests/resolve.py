"""Request-time resolution of a model reference (`name`, `name:V`, `name@label`) to a manifest
and the version or label to forward: the one rule for native routes, /v1 routes and
application stages alike."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.backends.protocols import FORWARDS_LABELS
from gateway.manifests.types import ModelManifest, ModelRef, Resolution, Selector
from modelfolder import ConfigError


def version_labels(models: Mapping[tuple[str, int], ModelManifest], name: str) -> dict[str, int]:
    """Every label the manifests of model `name` define."""
    labels: dict[str, int] = {}
    for (model_name, _), model in sorted(models.items()):
        if model_name == name:
            labels.update(model.version_labels)
    return labels


def resolve_ref(models: Mapping[tuple[str, int], ModelManifest], ref: ModelRef,
                where: str | None = None) -> Resolution:
    """What `name`, `name:VERSION` or `name@LABEL` reaches.

    A label is looked up in the manifests' `version_labels`; an unknown label, or a version
    without a manifest, is forwarded to the backend when the model has a floating manifest
    (a label only to a server that knows labels: `FORWARDS_LABELS`; a v2 server has none).
    Without version or label: the highest version.
    """
    versions = sorted(v for (name, v) in models if name == ref.name)
    if not versions:
        raise ConfigError(f"model {ref.name} is not defined", where)
    floating = [models[(ref.name, v)] for v in versions if models[(ref.name, v)].floating]
    version, label = ref.selector.version, ref.selector.label
    if label is not None:
        labels = version_labels(models, ref.name)
        if label in labels:
            version = labels[label]
        elif floating and _forwards_labels(floating[-1]):
            return Resolution(floating[-1], Selector(label=label))
        else:
            defined = ", ".join(sorted(labels)) or "none"
            unlabelled = (f"; its {floating[-1].backend.protocol} backend has no labels of its own"
                          if floating and floating[-1].backend else "")
            raise ConfigError(f"model {ref.name} has no version label {label!r} (defined: {defined}{unlabelled})",
                              where)
    if version is None:
        return Resolution(models[(ref.name, versions[-1])])
    model = models.get((ref.name, version))
    if model is not None:
        return Resolution(model, Selector(version) if model.floating else None)
    if floating:
        return Resolution(floating[-1], Selector(version))
    raise ConfigError(f"model {ref.name} has no version {version} (defined: "
                      f"{', '.join(map(str, versions))})", where)


def _forwards_labels(model: ModelManifest) -> bool:
    return model.backend is not None and model.backend.protocol in FORWARDS_LABELS


def resolve_model(models: Mapping[tuple[str, int], ModelManifest], ref: ModelRef,
                  where: str | None = None) -> ModelManifest:
    """The manifest a reference names (see `resolve_ref`)."""
    return resolve_ref(models, ref, where).manifest


def resolved_name(resolution: Resolution) -> str:
    """How answers (`x-gateway-variants`), logs, metrics, plans and problems name what a
    reference reaches: `name:VERSION` for the version it asks for (else the manifest's own),
    `name@LABEL` for a label forwarded to a floating model, and `name` alone for a floating
    model asked for no version (the backend's latest: it has no version of its own)."""
    manifest, selector = resolution.manifest, resolution.selector
    if selector is not None and selector.version is not None:
        return f"{manifest.name}:{selector.version}"
    if selector is not None and selector.label is not None:
        return f"{manifest.name}@{selector.label}"
    return manifest.name if manifest.floating else f"{manifest.name}:{manifest.version}"
