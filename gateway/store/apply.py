"""`gateway apply -f`: YAML documents (kinds Application and remote Model) applied to the config
directory as one change.

The documents are read with the client's file name in every error, replacing the manifests of
the same application name or model key in the config serving now (added otherwise), and the
result is cross-checked as start-up checks a directory (`check_config`). An existing document is
rewritten where it is defined (the other documents of its file kept byte for byte); a new one
gets a file of its own (`applications/<name>.yaml`, `models/<name>-<version>.yaml`). Every file
is written in one transaction: one atomic switch, then a reload that reverts it when refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import Conflict, InvalidManifest
from gateway.manifests import (
    ApplicationManifest,
    Config,
    ModelManifest,
    Plan,
    check_config,
    diff,
    manifest_plan,
    parse_application,
    parse_model,
    plan_from_json,
    plan_lines,
    plan_to_json,
    resolve_ref,
    with_running_contracts,
)
from gateway.store.changes import Prepared
from gateway.store.documents import document_at, normalised, replace_document, split_documents
from gateway.store.journal import ConfigStore
from modelfolder import ConfigError, LineMapping, read_text_documents

MAX_FILE_STEM = 100  # longer names get a shortened file name (with a digest keeping it unique)


@dataclass(frozen=True, slots=True)
class Located:
    """Where a manifest of the config serving now is defined: its file (relative to the
    config directory) and the index of its document there."""

    path: str
    index: int


@dataclass(frozen=True, slots=True)
class Document:
    """One document of an apply, parsed."""

    kind: str  # "Application" | "Model"
    manifest: ApplicationManifest | ModelManifest
    body: str  # its text as the client sent it
    location: str  # file:line in the client's file

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int | None:
        return self.manifest.version if isinstance(self.manifest, ModelManifest) else None

    def describe(self) -> str:
        if isinstance(self.manifest, ModelManifest):
            return f"model {self.manifest.name}:{self.manifest.version}"
        return f"application {self.manifest.name}"


@dataclass
class ApplyPlan:
    """What an apply would do: each document's action, the files to write, the plans."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    writes: dict[str, bytes] = field(default_factory=dict)
    plans: dict[str, list[str]] = field(default_factory=dict)  # plan lines of each applied application
    proposed: dict[str, dict[str, Any]] = field(default_factory=dict)  # plans (JSON) of every affected application

    def detail(self) -> dict[str, Any]:
        """What the caller is told (plain JSON values: it may travel between processes)."""
        return {"documents": self.documents, "plans": self.plans, "proposed": self.proposed}


@dataclass(frozen=True)
class ApplyManifests:
    """The config change of `gateway apply -f FILE` (picklable: the file's name and text)."""

    file: str
    text: str

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        planned = self.plan(config, store.config_dir)
        transaction = store.begin()
        try:
            for path, data in planned.writes.items():
                transaction.put_file(path, data)
        except BaseException:
            transaction.discard()
            raise
        return Prepared(transaction, planned.detail())

    def plan(self, config: Config, config_dir: Path) -> ApplyPlan:
        """What applying the documents to `config` (read from `config_dir`) would do; nothing
        is written. InvalidManifest (422) for an invalid document or resulting config."""
        try:
            return _plan(self.file, self.text, config, config_dir)
        except ConfigError as error:
            raise InvalidManifest(str(error)) from None


def _plan(file: str, text: str, config: Config, config_dir: Path) -> ApplyPlan:
    documents = read_apply(file, text, config, config_dir)
    applications = dict(config.applications)
    models = dict(config.models)
    for document in documents:
        if isinstance(document.manifest, ModelManifest):
            models[document.manifest.key] = document.manifest
        else:
            applications[document.manifest.name] = document.manifest
    prospective = dataclasses.replace(config, models=models, applications=applications)
    check_config(prospective, config_dir)
    planned = ApplyPlan()
    edits: dict[str, list[tuple[int, str]]] = {}
    for document in documents:
        old = _existing(document, config)
        located = None if old is None else locate(old.source, config_dir, old.name)
        action = "created"
        if located is not None and old is not None:
            action = "unchanged" if _unchanged(document, old, located, config_dir) else "updated"
            if action == "updated":
                edits.setdefault(located.path, []).append((located.index, document.body))
        elif old is not None:  # defined outside the config directory's files: cannot be rewritten
            raise ConfigError(f"{document.describe()} is defined at {old.source}, which is not a file of the "
                              f"config directory {config_dir}", document.location)
        else:
            planned.writes[_new_path(document, config_dir, planned.writes)] = _file_text(document.body).encode()
        entry: dict[str, Any] = {"kind": document.kind, "name": document.name, "action": action}
        if document.version is not None:
            entry["version"] = document.version
        planned.documents.append(entry)
    for path, replacements in edits.items():
        updated = (config_dir / path).read_text(encoding="utf-8")
        for index, body in replacements:
            updated = replace_document(updated, index, body)
        planned.writes[path] = updated.encode()
    applied_keys = {d.manifest.key for d in documents if isinstance(d.manifest, ModelManifest)}
    applied_apps = {d.name for d in documents if isinstance(d.manifest, ApplicationManifest)}
    for name, app in sorted(prospective.applications.items()):
        reached = {resolve_ref(prospective.models, variant.model).manifest.key
                   for stage in app.stages for variant in stage.variants}
        if name in applied_apps or reached & applied_keys:
            plan = manifest_plan(app, prospective.models)
            planned.proposed[name] = plan_to_json(plan)
            if name in applied_apps:
                planned.plans[name] = plan_lines(plan)
    return planned


def read_apply(file: str, text: str, config: Config, config_dir: Path) -> list[Document]:
    """The documents of an apply, each parsed as start-up parses its kind, with `file` as
    their path in every error; two documents of one application or model: ConfigError."""
    path = Path(file)
    segments = split_documents(text)
    documents: list[Document] = []
    seen: dict[tuple[str, object], str] = {}
    for doc in read_text_documents(text, path):
        location = f"{path}:{doc.line}"
        body = segments[document_at(segments, doc.line)].text
        kind = doc.get("kind")
        if kind == "Application":
            document = Document("Application", parse_application(doc, path), body, location)
            key: tuple[str, object] = ("application", document.name)
        elif kind == "Model":
            if "backend" not in doc:
                raise ConfigError("backend: a model without a backend is a model folder; a model folder is "
                                  "uploaded with `gateway upload` (serving.yaml and its payload), not applied",
                                  location)
            model = _remote_model(doc, path, config, config_dir)
            document = Document("Model", model, body, location)
            key = ("model", model.key)
        elif kind == "Gateway":
            raise ConfigError("kind: Gateway settings apply at start-up: edit gateway.yaml and restart the "
                              "gateway; apply takes kinds Application and Model", location)
        else:
            raise ConfigError(f"kind: expected Model, Application or Gateway, got {kind!r}", location)
        earlier = seen.setdefault(key, location)
        if earlier != location:
            raise ConfigError(f"{document.describe()} is also defined at {earlier} (one document per "
                              "application or model in one apply)", location)
        documents.append(document)
    return documents


def _remote_model(doc: LineMapping, path: Path, config: Config, config_dir: Path) -> ModelManifest:
    """A remote model's document, parsed as if in the folder its file will be in (TLS and warmup
    paths are relative to it), errors and `source` naming the client's file."""
    model = _parse_in(doc, path, config_dir / "models")
    old = config.models.get(model.key)
    if old is not None and old.folder is not None:
        raise ConfigError(f"model {model.name}:{model.version} is a model folder ({old.source}); a remote "
                          "model takes another version or name", f"{path}:{doc.line}")
    located = None if old is None else locate(old.source, config_dir, old.name)
    if located is not None and (config_dir / located.path).parent != config_dir / "models":
        model = _parse_in(doc, path, (config_dir / located.path).parent)
    return model


def _parse_in(doc: LineMapping, path: Path, folder: Path) -> ModelManifest:
    standin = folder / ".<apply>"  # named in errors and sources as the client's file
    try:
        model = parse_model(doc, standin, folder=None)
    except ConfigError as error:
        raise ConfigError(error.message.replace(str(standin), str(path)),
                          None if error.location is None else error.location.replace(str(standin), str(path))
                          ) from None
    log = model.request_log
    return dataclasses.replace(
        model, source=model.source.replace(str(standin), str(path)),
        request_log=None if log is None else dataclasses.replace(log, source=log.source.replace(str(standin),
                                                                                                 str(path))))


def locate(source: str, config_dir: Path, name: str) -> Located | None:
    """The file (relative to `config_dir`) and document index of the manifest `name` whose
    `source` is `file:line`; None when it is not a file of the directory. Conflict (409) when
    that document is no longer the manifest's (the file was edited since it was read)."""
    file, _, line = source.rpartition(":")
    try:
        relative = Path(file).resolve().relative_to(config_dir.resolve()).as_posix()
        text = (config_dir / relative).read_text(encoding="utf-8")
        located = Located(relative, document_at(split_documents(text), int(line)))
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    try:
        docs = list(read_text_documents(split_documents(text)[located.index].text, Path(file)))
    except ConfigError:
        docs = []
    if len(docs) != 1 or docs[0].get("name") != name:
        raise Conflict(f"{relative} changed since the gateway read it: reload the gateway (POST /admin/reload) "
                       "and try again")
    return located


def _existing(document: Document, config: Config) -> ApplicationManifest | ModelManifest | None:
    if isinstance(document.manifest, ModelManifest):
        return config.models.get(document.manifest.key)
    return config.applications.get(document.manifest.name)


def _unchanged(document: Document, old: ApplicationManifest | ModelManifest, located: Located,
               config_dir: Path) -> bool:
    """The same text after normalisation, or the same manifest (both parsed on their own)."""
    text = (config_dir / located.path).read_text(encoding="utf-8")
    body = split_documents(text)[located.index].text
    if normalised(body) == normalised(document.body):
        return True
    try:
        before, after = _standalone(body, config_dir / located.path), _standalone(document.body,
                                                                                 config_dir / located.path)
    except ConfigError:
        return False
    return before == after


def _standalone(body: str, path: Path) -> object:
    docs = list(read_text_documents(body, path))
    if len(docs) != 1:
        raise ConfigError("not one document")
    doc = docs[0]
    parsed = parse_application(doc, path) if doc.get("kind") == "Application" else parse_model(doc, path,
                                                                                              folder=None)
    return _without_sources(parsed)


def _without_sources(value: Any) -> Any:
    """`value` with every `source` (file:line) blanked: lines moved by a comment do not make
    another manifest."""
    if isinstance(value, tuple):
        return tuple(_without_sources(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: "" if f.name == "source" else _without_sources(getattr(value, f.name))
                   for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value


def _new_path(document: Document, config_dir: Path, taken: Mapping[str, bytes]) -> str:
    """A file of its own for a new document: `applications/<name>.yaml` or
    `models/<name>-<version>.yaml` (a free name: `-2`, `-3`... when one is taken)."""
    name = document.name  # letters, digits, _ . - with a letter or digit first: a safe file name
    if len(name) > MAX_FILE_STEM:
        name = f"{name[:MAX_FILE_STEM]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    if isinstance(document.manifest, ModelManifest):
        folder, stem = "models", f"{name}-{document.manifest.version}"
    else:
        folder, stem = "applications", name
    for number in range(1, 1000):
        candidate = f"{folder}/{stem}{'' if number == 1 else f'-{number}'}.yaml"
        target = config_dir / candidate
        if candidate not in taken and not target.exists() and not target.is_symlink():
            return candidate
    raise ConfigError(f"no free file name for {document.describe()} in {config_dir / folder}", document.location)


def _file_text(body: str) -> str:
    return body if body.endswith("\n") else body + "\n"


def running_plans(applications: Mapping[str, Any]) -> dict[str, Plan]:
    """The plans a gateway serves now, as `GET /gateway/applications` answers them: each
    registry application's `plan()` (the contracts declared or discovered)."""
    return {name: app.plan() for name, app in applications.items()}


def apply_answer(detail: Mapping[str, Any], running: Mapping[str, Plan], *, applied: bool,
                 dry_run: bool) -> dict[str, Any]:
    """The answer of `POST /gateway/admin/apply`: the documents' actions, the changes against
    the running plans (those that break callers counted, as `gateway check --url` does) and the
    plan lines of each applied application."""
    proposed = {name: plan_from_json(plan) for name, plan in detail["proposed"].items()}
    compared = {name: plan for name, plan in running.items() if name in proposed}
    changes = diff(compared, with_running_contracts(running, proposed))
    return {"applied": applied, "dry_run": dry_run, "documents": detail["documents"],
            "changes": [str(change) for change in changes],
            "breaking": sum(change.breaking for change in changes), "plans": detail["plans"]}
