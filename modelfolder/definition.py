"""What a kind Model document says about the model itself: name, version, contract and how
its code runs. The gateway's manifests extend it with where the model is served."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelfolder.contract import parse_contract
from modelfolder.errors import ConfigError
from modelfolder.paths import absolute
from modelfolder.warmup import ASSETS_FILE
from modelfolder.yaml_reader import Fields, LineMapping
from tensorcodecs import Signature

RUNTIME_THREADS = 8  # calls an embedded runtime runs at once, at least
STYLES = ("hydrosphere", "hydrosphere3", "numpy")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Hydrosphere's fields (`kind` ... `contract`) and this project's `version`, `style`, `workers`.
MODEL_FIELDS = frozenset({"kind", "name", "runtime", "install-command", "payload", "contract", "version",
                          "style", "workers", "warmup"})
# Fields about serving the model behind the gateway, read by gateway.manifests; a runtime accepts them.
GATEWAY_FIELDS = frozenset({"backend", "version_labels", "batching", "request_log"})


@dataclass(frozen=True, slots=True)
class ModelDefinition:
    """A model as its kind Model document defines it."""

    name: str
    version: int
    signature: Signature
    source: str  # file:line of the document
    folder: Path | None = None  # the model folder (serving.yaml + src/), None for a remote model
    runtime: str | None = None
    install_command: str | None = None
    payload: tuple[str, ...] = ()
    contract_declared: bool = True  # False: discovered from the backend's metadata
    style: str | None = None  # "hydrosphere", "hydrosphere3" or "numpy"; detected from the code when None
    workers: int = 1  # processes running the function (for CPU-bound models)
    # TFRecord of PredictionLogs replayed before the model takes traffic: `warmup:` (relative to
    # the model folder, or to a remote manifest's folder), else a folder's
    # assets.extra/tf_serving_warmup_requests; None: no warmup
    warmup: Path | None = None

    @property
    def runtime_threads(self) -> int:
        """Calls the model's embedded runtime runs at once (its gRPC server's threads)."""
        return max(RUNTIME_THREADS, 2 * self.workers)


def model_name(fields: Fields) -> str:
    """The document's `name`, checked."""
    name = fields.required("name", str)
    if not NAME.fullmatch(name):
        raise fields.error("name", f"{name!r} is not a valid model name (letters, digits, _ . -)")
    return name


def model_version(fields: Fields) -> int | None:
    """The document's own `version:`, None when it has none."""
    version = fields.optional("version", int, None)
    if version is not None and version < 0:
        raise fields.error("version", "must be 0 or more")
    return version


@dataclass(frozen=True, slots=True)
class ModelHeading:
    """A kind Model document with what every reader checks first, checked once: no unknown
    field, its `name`, its own `version:` (None: it says none)."""

    fields: Fields
    name: str
    version: int | None


def read_heading(doc: LineMapping, path: Path) -> ModelHeading:
    """The heading of the kind Model document `doc` (from `path`)."""
    fields = Fields(doc, path)
    fields.reject_unknown(MODEL_FIELDS | GATEWAY_FIELDS)
    return ModelHeading(fields, model_name(fields), model_version(fields))


def parse_definition(heading: ModelHeading, *, folder: Path | None, version: int = 1,
                     signature: Signature | None = None) -> ModelDefinition:
    """A kind Model document (its heading read); `version` when it says none, `signature` when
    it has no `contract` (without either, the contract is required)."""
    fields, name, explicit_version = heading.fields, heading.name, heading.version
    doc, path = fields.mapping, fields.path
    payload = fields.optional("payload", list, [])
    if "contract" in doc:
        signature = parse_contract(fields.nested("contract"), name)
    elif signature is None:
        raise ConfigError("contract: required field is missing", fields.where())
    style = fields.optional("style", str, None)
    if style is not None and style not in STYLES:
        raise fields.error("style", f"{style!r} is not a function style (accepted: {', '.join(STYLES)})")
    workers = fields.optional("workers", int, 1)
    if workers < 1:
        raise fields.error("workers", "must be at least 1")
    return ModelDefinition(
        name=name,
        version=explicit_version if explicit_version is not None else version,
        signature=signature,
        source=f"{path}:{doc.line}",
        folder=folder,
        runtime=fields.optional("runtime", str, None),
        install_command=fields.optional("install-command", str, None),
        payload=tuple(str(p) for p in payload),
        contract_declared="contract" in doc,
        style=style,
        workers=workers,
        warmup=_warmup_file(fields, folder),
    )


def _warmup_file(fields: Fields, folder: Path | None) -> Path | None:
    """The `warmup:` file (relative to the model folder, else to the manifest's folder), else a
    folder's SavedModel warmup file (assets.extra/tf_serving_warmup_requests) when it has one."""
    value = fields.optional("warmup", str, None)
    if value is None:
        found = None if folder is None else folder / ASSETS_FILE
        return absolute(found) if found is not None and found.is_file() else None
    path = absolute((folder if folder is not None else fields.path.parent) / value)
    if not path.is_file():
        raise fields.error("warmup", f"{path} is not a file")
    return path
