"""A whole config directory: every manifest in it, validated and cross-checked.

Layout of a config directory:
    gateway.yaml                     kind Gateway (optional)
    applications/*.yaml              kind Application
    models/<folder>/serving.yaml     kind Model served by the embedded runtime (version 1)
    models/<folder>/<N>/serving.yaml version N of a model served by the embedded runtime
    models/*.yaml                    kind Model with a `backend:` (a remote server)
Any other *.yaml directly in the directory is read too and dispatched on its `kind`.
"""

from __future__ import annotations

from pathlib import Path

from gateway.manifests.application_kind import parse_application
from gateway.manifests.gateway_kind import parse_gateway
from gateway.manifests.model_kind import load_model_manifest, parse_model
from gateway.manifests.plan import manifest_plan
from gateway.manifests.request_log_kind import redacted_url
from gateway.manifests.resolve import resolve_model, resolve_ref, resolved_name
from gateway.manifests.types import (
    ApplicationManifest,
    CloudEventsSpec,
    Config,
    FileSinkSpec,
    GatewayManifest,
    ModelManifest,
    ModelRef,
    Selector,
    VariantManifest,
)
from modelfolder import ConfigError, model_folders, read_documents


def load_config(directory: Path) -> Config:
    """Every manifest under `directory`, validated and cross-checked."""
    if not directory.is_dir():
        raise ConfigError("config directory does not exist", str(directory))
    gateway = GatewayManifest()
    models: dict[tuple[str, int], ModelManifest] = {}
    applications: dict[str, ApplicationManifest] = {}

    def add_model(model: ModelManifest) -> None:
        if model.key in models:
            raise ConfigError(f"model {model.name}:{model.version} is also defined at "
                              f"{models[model.key].source}", model.source)
        models[model.key] = model

    models_dir = directory / "models"
    if models_dir.is_dir():
        for folder in model_folders(models_dir):
            add_model(load_model_manifest(folder))
    for path in _manifest_files(directory):
        for doc in read_documents(path):
            kind = doc.get("kind")
            if kind == "Model":
                add_model(parse_model(doc, path, folder=None))
            elif kind == "Application":
                app = parse_application(doc, path)
                if app.name in applications:
                    raise ConfigError(f"application {app.name} is also defined at "
                                      f"{applications[app.name].source}", app.source)
                applications[app.name] = app
            elif kind == "Gateway":
                gateway = parse_gateway(doc, path)
            else:
                raise ConfigError(f"kind: expected Model, Application or Gateway, got {kind!r}",
                                  f"{path}:{doc.line}")
    config = Config(gateway, models, applications)
    check_config(config, directory)
    return config


def check_config(config: Config, directory: Path) -> None:
    """The cross-checks between the manifests of `config` (read from `directory`, or built in
    memory from what an apply would write there): labels, references, variants, contracts,
    request logs. ConfigError for the first that fails."""
    _check_labels(config)
    _check_references(config)
    _check_variants(config)
    _check_contracts(config)
    _check_request_logs(config, directory)


def _manifest_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for folder in (directory, directory / "applications", directory / "models"):
        if folder.is_dir():
            files.extend(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    return sorted(files)


def _check_references(config: Config) -> None:
    for app in config.applications.values():
        for stage in app.stages:
            for variant in stage.variants:
                resolve_model(config.models, variant.model, variant.source or app.source)


def _check_variants(config: Config) -> None:
    """No model is two variants of one stage under two spellings (`toy` and `toy:2` of one
    manifest): answers, routing and the override know variants by what they resolve to."""
    for app in config.applications.values():
        for number, stage in enumerate(app.stages, start=1):
            seen: dict[str, VariantManifest] = {}
            for variant in stage.variants:
                name = resolved_name(resolve_ref(config.models, variant.model, variant.source or app.source))
                earlier = seen.setdefault(name, variant)
                if earlier is not variant:
                    raise ConfigError(f"stage {number}: {variant.model} (as {name}) is the same model as the "
                                      f"variant at {earlier.source} (as {earlier.model})", variant.source or app.source)


def _check_contracts(config: Config) -> None:
    """The declared contracts of each application's variants fit (gateway.manifests.plan)."""
    for app in config.applications.values():
        problems = manifest_plan(app, config.models).problems()
        if problems:  # all of them, so that one run shows every fix to make
            others = "".join(f"; and at {p.source or app.source}: {p.message}" for p in problems[1:])
            raise ConfigError(problems[0].message + others, problems[0].source or app.source)


def _check_request_logs(config: Config, directory: Path) -> None:
    """File sinks write outside the config directory (a --watch reload would fire on every
    record), and manifests naming one directory (or one CloudEvents URL) agree on its limits
    (one writer per directory, one sink per URL)."""
    config_dir = directory.resolve()
    seen: dict[Path, tuple[FileSinkSpec, str]] = {}
    urls: dict[str, tuple[CloudEventsSpec, str]] = {}
    shown: dict[str, tuple[str, str]] = {}  # redacted URL -> the URL and manifest that showed it first
    specs = [m.request_log for m in config.models.values()] + [a.request_log for a in config.applications.values()]
    for spec in specs:
        if spec is not None and spec.cloudevents is not None:
            events = spec.cloudevents
            first = urls.setdefault(events.url, (events, spec.source))
            if first[0] != events:  # one URL is one sink: its name in health and metrics
                raise ConfigError(f"request_log.cloudevents: {redacted_url(events.url)} is also a CloudEvents sink at "
                                  f"{first[1]} with other settings (timeout_s, retries, max_event_bytes); one URL "
                                  "is one sink: give both the same settings", spec.source)
            name = redacted_url(events.url)
            url, where = shown.setdefault(name, (events.url, spec.source))
            if url != events.url:  # two sinks one name: health and metrics would merge them
                raise ConfigError(f"request_log.cloudevents: {name} is shown as a CloudEvents sink at {where} "
                                  "too, whose URL differs only in its credentials or query values; one name is "
                                  "one sink: send both to one URL", spec.source)
        if spec is None or spec.file is None:
            continue
        file = spec.file
        if file.dir == config_dir or file.dir.is_relative_to(config_dir):
            raise ConfigError(f"request_log.file.dir: {file.dir} is inside the config directory {config_dir}; "
                              "write request logs elsewhere (a watched config would reload on every record)",
                              spec.source)
        earlier = seen.setdefault(file.dir, (file, spec.source))
        if earlier[0] != file:
            raise ConfigError(f"request_log.file: {file.dir} is also a request-log directory at {earlier[1]} with "
                              "other limits (max_bytes, max_files, max_record_bytes); one directory has one "
                              "writer: give both the same limits", spec.source)


def _check_labels(config: Config) -> None:
    """Labels of one model agree across its manifests and name versions that can be served."""
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for model in config.models.values():
        for label, version in model.version_labels.items():
            earlier = seen.get((model.name, label))
            if earlier is not None and earlier[0] != version:
                raise ConfigError(f"version_labels.{label}: model {model.name} labels version {version} "
                                  f"here and version {earlier[0]} at {earlier[1]}", model.source)
            seen[(model.name, label)] = (version, model.source)
            resolve_ref(config.models, ModelRef(model.name, Selector(label=label)), model.source)
