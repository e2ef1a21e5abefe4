"""`gateway delete application NAME` and `gateway delete model NAME:VERSION` as config changes.

An application's document goes (its file, or the document from a file of several); a model
version goes with its folder (`models/<name>/<N>/`; of a version-1 folder `models/<folder>/` only
its own files, the numbered version folders inside it stay) or, for a remote model, its
document. A model version that an application's variant reaches (by version, by label, or as
the highest version of a model named without one) is refused (409) naming the applications.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import Conflict, InvalidManifest, NotFound
from gateway.manifests import ApplicationManifest, Config, ModelManifest, check_config, resolve_ref
from gateway.store.apply import locate
from gateway.store.changes import Prepared
from gateway.store.documents import has_documents, remove_document
from gateway.store.journal import ConfigStore, Transaction
from modelfolder import ConfigError


@dataclass(frozen=True)
class DeleteApplication:
    """Remove application `name` from the config directory."""

    name: str

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        app = config.applications.get(self.name)
        if app is None:
            raise NotFound(f"application {self.name} is not defined")
        applications = {name: a for name, a in config.applications.items() if name != self.name}
        _check(dataclasses.replace(config, applications=applications), store.config_dir)
        transaction = store.begin()
        try:
            _remove_document(transaction, app, store.config_dir)
        except BaseException:
            transaction.discard()
            raise
        return Prepared(transaction, {"deleted": "application", "name": self.name})


@dataclass(frozen=True)
class DeleteModel:
    """Remove version `version` of model `name` from the config directory."""

    name: str
    version: int

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        key = (self.name, self.version)
        model = config.models.get(key)
        if model is None:
            raise NotFound(f"model {self.name}:{self.version} is not defined")
        users = users_of(config, key)
        if users:
            raise Conflict(f"model {self.name}:{self.version} is in use by application(s) {', '.join(users)}: "
                           "change or delete them first")
        models = {k: m for k, m in config.models.items() if k != key}
        _check(dataclasses.replace(config, models=models), store.config_dir)
        transaction = store.begin()
        try:
            if model.folder is not None:
                _remove_folder(transaction, model, store.config_dir)
            else:
                _remove_document(transaction, model, store.config_dir)
        except BaseException:
            transaction.discard()
            raise
        return Prepared(transaction, {"deleted": "model", "name": self.name, "version": self.version})


def users_of(config: Config, key: tuple[str, int]) -> list[str]:
    """The applications a variant of which reaches model `key` (by version, label, or as the
    highest version of a model named without one)."""
    return sorted(app.name for app in config.applications.values()
                  if any(resolve_ref(config.models, variant.model).manifest.key == key
                         for stage in app.stages for variant in stage.variants))


def _check(config: Config, config_dir: Path) -> None:
    """What is left still holds together (a label naming the version deleted, say)."""
    try:
        check_config(config, config_dir)
    except ConfigError as error:
        raise InvalidManifest(f"the config would be invalid without it: {error}") from None


def _remove_document(transaction: Transaction, manifest: ApplicationManifest | ModelManifest,
                     config_dir: Path) -> None:
    located = locate(manifest.source, config_dir, manifest.name)
    if located is None:
        raise Conflict(f"{manifest.name} is defined at {manifest.source}, which is not a file of the config "
                       f"directory {config_dir}")
    text = (config_dir / located.path).read_text(encoding="utf-8")
    rest = remove_document(text, located.index)
    if has_documents(rest):
        transaction.put_file(located.path, rest.encode())
    else:
        transaction.remove(located.path)


def _remove_folder(transaction: Transaction, model: ModelManifest, config_dir: Path) -> None:
    assert model.folder is not None
    try:
        folder = model.folder.resolve().relative_to(config_dir.resolve())
    except ValueError:
        raise Conflict(f"model {model.name}:{model.version} is served from {model.folder}, which is not in "
                       f"the config directory {config_dir}") from None
    root = config_dir / folder
    versions = [entry for entry in root.iterdir() if entry.name.isdigit() and entry.is_dir()]
    if not versions:
        transaction.remove(folder.as_posix())
        return
    for entry in sorted(root.iterdir()):  # a version-1 folder's own files; its version folders stay
        if entry not in versions:
            transaction.remove((folder / entry.name).as_posix())
