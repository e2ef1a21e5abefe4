"""An uploaded model folder becoming the next version of its model: the steps after the body.

`ModelUpload` owns one upload's scratch folder (`.gateway-state/uploads/<id>/`: the archive,
then the unpacked folder), its version reservation and the environment it builds; `unpack`
checks the folder as start-up would (serving.yaml parsed by `load_model_manifest`) and reserves
the version, `build` runs the install-command as `gateway build` does (the environment keyed by
the folder the version will have, `models/<name>/<N>`), and `change` is the `UploadModel` config
change that moves the folder into place. Whatever ends the upload other than a served version
(an error, a refused reload, a client gone), `discard` leaves nothing: scratch folder,
reservation and environment removed.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.build import BuildCancelled, BuildError, ModelEnvironment, build_model
from gateway.errors import ConfigError, GatewayError, InvalidManifest
from gateway.manifests import Config, ModelManifest, load_model_manifest
from gateway.store.archive import unpack_model_archive
from gateway.store.changes import Prepared
from gateway.store.journal import ConfigStore, Conflict
from gateway.store.versions import Reservation, reserve_version
from modelfolder import read_documents
from modelfolder.layout import MODEL_FILE

UNPACKED_FACTOR = 4  # an archive may unpack to this many times the upload limit


class BuildFailed(GatewayError):
    """The uploaded model's install-command failed or ran out of time (422)."""

    status, code = 422, "build_failed"


@dataclass(frozen=True)
class UploadModel:
    """The config change of an upload: folder `staged` (complete, built, on the config
    directory's filesystem) becomes `models/<name>/<version>` (picklable: it may be made by the
    parent of `--workers`)."""

    staged: str
    name: str
    version: int

    @property
    def folder(self) -> str:
        return f"models/{self.name}/{self.version}"

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        if (self.name, self.version) in config.models:
            raise Conflict(f"model {self.name}:{self.version} exists already")
        if (store.config_dir / self.folder).exists():
            raise Conflict(f"{self.folder} exists already in the config directory")
        transaction = store.begin()
        try:
            transaction.put_folder(self.folder, Path(self.staged))
        except BaseException:
            transaction.discard()
            raise
        return Prepared(transaction, {"name": self.name, "version": self.version, "folder": self.folder})


class ModelUpload:
    """One upload, from its archive on disk to the change that serves it."""

    def __init__(self, store: ConfigStore, envs_dir: Path) -> None:
        self.store = store
        self.envs_dir = envs_dir
        self.scratch = store.folder("uploads") / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        self.scratch.mkdir()
        self.archive = self.scratch / "model.tar.gz"
        self.unpacked = self.scratch / "model"
        self.manifest: ModelManifest | None = None  # as it will be served, once unpacked and reserved
        self.reservation: Reservation | None = None
        self.environment: ModelEnvironment | None = None
        self.stop = threading.Event()  # set: a build under way ends (the client went away)

    def unpack(self, config: Config, max_upload_bytes: int) -> ModelManifest:
        """Unpack the archive, read its serving.yaml as start-up would and reserve the next
        version (blocking: run it in a thread). BadRequest (400) for the archive,
        InvalidManifest (422) for the manifest."""
        unpack_model_archive(self.archive, self.unpacked, UNPACKED_FACTOR * max_upload_bytes)
        self.archive.unlink()
        uploaded = read_uploaded_model(self.unpacked)
        self.reservation = reserve_version(self.store, config, uploaded.name)
        final = (self.store.config_dir / self.reservation.folder).resolve()
        self.manifest = dataclasses.replace(uploaded, version=self.reservation.version, folder=final)
        return self.manifest

    def build(self, timeout_s: float, on_output: Callable[[str], None]) -> float | None:
        """Build the environment (blocking: run it in a thread); the seconds it took, None when
        the model has no install-command (it runs with the gateway's own Python, as an unbuilt
        model does). BuildFailed (422) when the install-command fails."""
        manifest = self.manifest
        assert manifest is not None
        environment = ModelEnvironment.of(self.envs_dir, manifest)
        environment.remove()  # one left at this path (a deleted version's) is never used
        if not manifest.install_command:
            return None
        started = time.monotonic()
        self.environment = environment
        try:
            build_model(self.envs_dir, manifest, timeout_s, workdir=self.unpacked, on_output=on_output,
                        stop=self.stop)
        except BuildCancelled:
            raise
        except BuildError as error:
            raise BuildFailed(str(error)) from None
        return time.monotonic() - started

    def change(self) -> UploadModel:
        manifest = self.manifest
        assert manifest is not None
        return UploadModel(str(self.unpacked), manifest.name, manifest.version)

    def release(self) -> None:
        """The upload is over: its reservation is released and its scratch folder removed
        (after a served change the folder has moved into place already)."""
        if self.reservation is not None:
            self.reservation.release()
            self.reservation = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def discard(self) -> None:
        """The upload did not make a version: nothing of it is left."""
        if self.environment is not None:
            shutil.rmtree(self.environment.path, ignore_errors=True)
            self.environment = None
        self.release()


def read_uploaded_model(folder: Path) -> ModelManifest:
    """The manifest of an unpacked upload, checked as `gateway serve` checks a model folder;
    InvalidManifest (422) naming `serving.yaml:line: field`, never the scratch path."""
    try:
        manifest = load_model_manifest(folder)
        [document] = read_documents(folder / MODEL_FILE)
    except ConfigError as error:
        location = (error.location or "").replace(f"{folder.resolve()}/", "").replace(f"{folder}/", "")
        raise InvalidManifest(f"{location}: {error.message}" if location else error.message) from None
    if manifest.backend is not None:
        raise InvalidManifest(f"{MODEL_FILE}:{document.key_lines.get('backend', document.line)}: backend: an "
                                 "uploaded model runs in the gateway's embedded runtime; a model served elsewhere "
                                 "is a manifest sent with `gateway apply`")
    if "version" in document:
        raise InvalidManifest(f"{MODEL_FILE}:{document.key_lines.get('version', document.line)}: version: an "
                                 "uploaded model gets the next version of its name from the gateway; remove it")
    return manifest
