"""Load and validate YAML manifests (kind Model, Application, Gateway) into typed objects.

Nothing else in the project parses YAML. Errors name the file, line and field. Field names
are Hydrosphere's (`kind`, `name`, `install-command`, `payload`, `contract`, `singular`), so
existing model folders load unchanged.

Layout of a config directory:
    gateway.yaml                     kind Gateway (optional)
    applications/*.yaml              kind Application
    models/<folder>/serving.yaml     kind Model served by the embedded runtime (version 1)
    models/<folder>/<N>/serving.yaml version N of a model served by the embedded runtime
    models/*.yaml                    kind Model with a `backend:` (a remote server)
Any other *.yaml directly in the directory is read too and dispatched on its `kind`.

A TensorFlow Serving model is pinned to one version by `version` (or `backend.version`, or
`backend.version_label`); without any of them it is *floating*: it fronts every version of
the served model, gets registry version 0, and forwards the version or label a request names
(TF Serving's latest version when none). `version_labels` map labels to versions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gateway.errors import ConfigError
from gateway.settings import SECTIONS, ApiKey, AuthSettings, Settings, convert, field_types
from tensorcodecs import CodecError, Signature, TensorSpec, lookup_dtype, parse_shape

T = TypeVar("T")

MODEL_FILE = "serving.yaml"
PROTOCOLS = ("tensorflow-serving",)
RUNTIME_THREADS = 8  # calls an embedded runtime runs at once, at least
FLOATING_VERSION = 0
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_LABEL = re.compile(r"[A-Za-z0-9_.-]+")
# host:port, [v6]:port, dns:[//authority/]host:port, or another gRPC scheme (unix:, ipv4:, ...).
_TARGET = re.compile(r"(?:dns:(?://[^/]*/)?)?(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}"
                     r"|(?:unix|unix-abstract|ipv4|ipv6|vsock):.+")
STYLES = ("hydrosphere", "hydrosphere3", "numpy")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A reference to a model from an application: `name`, `name:2` or `name@stable`."""

    name: str
    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.label}" if self.label else self.name


@dataclass(frozen=True, slots=True)
class TLSSpec:
    """TLS to a backend: the CA that signs its certificate and, for mTLS, the gateway's own
    certificate and key (paths relative to the manifest's folder)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None  # the name its certificate carries, when not the target's host


@dataclass(frozen=True, slots=True)
class BatchingSpec:
    """Opt-in coalescing of concurrent requests to one model into one backend call: at most
    `max_calls` calls run at once; requests arriving meanwhile leave together with the next
    one, concatenated along their first (batch) dimension, up to `max_batch_size` rows."""

    max_batch_size: int = 256
    max_calls: int = 2


@dataclass(frozen=True, slots=True)
class RuntimeAddress:
    """Where an embedded runtime listens: its gRPC target and, for Predict and PredictMany
    from this machine, its Unix socket (protos.local_wire)."""

    target: str
    local_socket: str | None = None


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """Where a model is served: a gRPC target speaking `protocol`."""

    protocol: str
    target: str
    model_name: str
    signature_name: str = "serving_default"
    version: int | None = None
    version_label: str | None = None
    tls: TLSSpec | None = None
    # An embedded runtime: at most this many calls at once, and the requests arriving while
    # they are all busy share the next one (PredictMany, see gateway.backends.sharing).
    shared_calls: int | None = None
    # An embedded runtime's Unix socket: Predict and PredictMany take the local wire there.
    local_socket: str | None = None

    @property
    def floating(self) -> bool:
        """Whether no version is pinned: the version (or label) comes with each request."""
        return self.version is None and self.version_label is None


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """A model: its contract and either a local folder (embedded runtime) or a backend."""

    name: str
    version: int
    signature: Signature
    source: str
    folder: Path | None = None
    backend: BackendSpec | None = None
    runtime: str | None = None
    install_command: str | None = None
    payload: tuple[str, ...] = ()
    version_labels: Mapping[str, int] = field(default_factory=dict)
    contract_declared: bool = True  # False: discovered from the backend's metadata
    style: str | None = None  # "hydrosphere" or "numpy"; detected from the code when None
    workers: int = 1  # processes running the function (for CPU-bound models)
    batching: BatchingSpec | None = None  # coalesce concurrent requests (opt-in)

    @property
    def key(self) -> tuple[str, int]:
        """Registry key: (name, version)."""
        return (self.name, self.version)

    @property
    def runtime_threads(self) -> int:
        """Calls the model's embedded runtime runs at once (its gRPC server's threads)."""
        return max(RUNTIME_THREADS, 2 * self.workers)

    @property
    def floating(self) -> bool:
        """A TF Serving model that forwards the version each request names."""
        return self.backend is not None and self.backend.floating


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a model reference resolves to: the manifest, and the version or label to ask
    the backend for when the manifest is floating (None: the manifest's own)."""

    manifest: ModelManifest
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    """One model serving a stage, with its traffic weight."""

    model: ModelRef
    weight: int = 100


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of an application; its variants share the traffic."""

    variants: tuple[Variant, ...]


@dataclass(frozen=True, slots=True)
class ApplicationManifest:
    """An application: the stages a request passes through, in order."""

    name: str
    stages: tuple[Stage, ...]
    source: str
    timeout_s: float | None = None  # default deadline of its requests (else the gateway's)
    max_concurrency: int | None = None  # its requests in flight; beyond it 429


@dataclass(frozen=True, slots=True)
class GatewayManifest:
    """Gateway-wide settings from `gateway.yaml`, as `Settings` field values."""

    values: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a config directory declares, validated and cross-checked."""

    gateway: GatewayManifest = field(default_factory=GatewayManifest)
    models: Mapping[tuple[str, int], ModelManifest] = field(default_factory=dict)
    applications: Mapping[str, ApplicationManifest] = field(default_factory=dict)

    def local_models(self) -> list[ModelManifest]:
        """Models served from a folder by the embedded runtime and not yet bound to a target."""
        return [m for m in self.models.values() if m.folder is not None and m.backend is None]

    def with_targets(self, targets: Mapping[tuple[str, int], RuntimeAddress]) -> Config:
        """A copy where the given local models are bound to the runtime serving them."""
        models = dict(self.models)
        for key, address in targets.items():
            model = models[key]
            backend = BackendSpec("tensorflow-serving", address.target, model.name, version=model.version,
                                  shared_calls=model.runtime_threads, local_socket=address.local_socket)
            models[key] = dataclasses.replace(model, backend=backend)
        return dataclasses.replace(self, models=models)


# ---------------------------------------------------------------- YAML with line numbers


class _Mapping(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    result = _Mapping()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_documents(path: Path) -> Iterator[_Mapping]:
    """The YAML documents in a file, each a mapping with line numbers."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} "
                          "(manifests are UTF-8 YAML)", f"{path}:{line}") from None
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {getattr(error, 'problem', error)}", where) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply to read", f"{path}:1") from None
    if all(document is None for document in documents):  # an empty or truncated file is a mistake
        raise ConfigError("the file is empty: a manifest needs at least a `kind`", f"{path}:1")
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, _Mapping):
            raise ConfigError("a manifest must be a mapping with a `kind`", f"{path}:1")
        yield document


class _Fields:
    """Typed access to one mapping's fields with errors that say file:line and field."""

    def __init__(self, mapping: _Mapping, path: Path, prefix: str = "") -> None:
        self.mapping = mapping
        self.path = path
        self.prefix = prefix

    def where(self, key: str | None = None) -> str:
        line = self.mapping.key_lines.get(key, self.mapping.line) if key else self.mapping.line
        return f"{self.path}:{line}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.prefix}{key}: {message}", self.where(key))

    def required(self, key: str, kind: type[T]) -> T:
        if key not in self.mapping or self.mapping[key] is None:
            raise ConfigError(f"{self.prefix}{key}: required field is missing", self.where())
        return self._typed(key, kind)

    def optional(self, key: str, kind: type[T], default: T) -> T:
        if key not in self.mapping or self.mapping[key] is None:
            return default
        return self._typed(key, kind)

    def nested(self, key: str) -> _Fields:
        value = self.required(key, dict)
        assert isinstance(value, _Mapping)
        return _Fields(value, self.path, f"{self.prefix}{key}.")

    def _typed(self, key: str, kind: type[T]) -> T:
        value = self.mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(key, f"expected {_kind_name(kind)}, got {_describe(value)}")
        return value

    def reject_unknown(self, known: set[str]) -> None:
        for key in self.mapping:
            if key not in known:
                accepted = ", ".join(sorted(known))
                raise self.error(str(key), f"unknown field (accepted: {accepted})")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(kind, kind.__name__)


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


# ---------------------------------------------------------------- kinds


def parse_model(doc: _Mapping, path: Path, *, folder: Path | None, version: int = 1) -> ModelManifest:
    """A kind Model document: from a model folder's serving.yaml or a remote manifest."""
    fields = _Fields(doc, path)
    fields.reject_unknown({"kind", "name", "runtime", "install-command", "payload", "contract",
                           "backend", "version", "version_labels", "style", "workers", "batching"})
    name = fields.required("name", str)
    if not re.fullmatch(_NAME, name):
        raise fields.error("name", f"{name!r} is not a valid model name (letters, digits, _ . -)")
    explicit_version = fields.optional("version", int, None)
    if explicit_version is not None and explicit_version < 0:
        raise fields.error("version", "must be 0 or more")
    payload = fields.optional("payload", list, [])
    backend = None
    if "backend" in doc:
        backend = _parse_backend(fields.nested("backend"), name, explicit_version)
        if backend.version is not None:
            version = explicit_version if explicit_version is not None else backend.version
        elif backend.floating:
            version = FLOATING_VERSION
        else:
            version = explicit_version if explicit_version is not None else version
    elif folder is None:
        raise ConfigError("backend: required for a model that is not a folder with serving.yaml",
                          fields.where())
    else:
        version = explicit_version if explicit_version is not None else version
    if "contract" in doc:
        signature = _parse_contract(fields.nested("contract"), name)
    elif backend is None:
        raise ConfigError("contract: required field is missing", fields.where())
    else:
        signature = Signature(backend.signature_name)
    labels = _parse_version_labels(fields) if "version_labels" in doc else {}
    style = fields.optional("style", str, None)
    if style is not None and style not in STYLES:
        raise fields.error("style", f"{style!r} is not a function style (accepted: {', '.join(STYLES)})")
    workers = fields.optional("workers", int, 1)
    if workers < 1:
        raise fields.error("workers", "must be at least 1")
    return ModelManifest(
        name=name,
        version=version,
        signature=signature,
        source=f"{path}:{doc.line}",
        folder=folder,
        backend=backend,
        runtime=fields.optional("runtime", str, None),
        install_command=fields.optional("install-command", str, None),
        payload=tuple(str(p) for p in payload),
        version_labels=labels,
        contract_declared="contract" in doc,
        style=style,
        workers=workers,
        batching=_parse_batching(fields.nested("batching"), signature) if "batching" in doc else None,
    )


def _parse_batching(fields: _Fields, signature: Signature) -> BatchingSpec:
    fields.reject_unknown({"max_batch_size", "max_calls"})
    default = BatchingSpec()
    spec = BatchingSpec(fields.optional("max_batch_size", int, default.max_batch_size),
                        fields.optional("max_calls", int, default.max_calls))
    if spec.max_batch_size < 1:
        raise fields.error("max_batch_size", "must be at least 1")
    if spec.max_calls < 1:
        raise fields.error("max_calls", "must be at least 1")
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for tensor in specs.values():
            if tensor.shape is not None and (not tensor.shape or tensor.shape[0] != -1):
                raise ConfigError(f"batching: {kind} {tensor.name!r} has shape {tensor.shape_text()}; "
                                  "batching needs every input and output to start with a -1 (batch) "
                                  "dimension", fields.where())
    return spec


def _parse_backend(fields: _Fields, model_name: str, model_version: int | None) -> BackendSpec:
    fields.reject_unknown({"protocol", "target", "model_name", "signature_name", "version",
                           "version_label", "tls"})
    protocol = fields.required("protocol", str)
    if protocol not in PROTOCOLS:
        raise fields.error("protocol", f"unknown protocol {protocol!r} (accepted: {', '.join(PROTOCOLS)})")
    target = fields.required("target", str)
    if not _TARGET.fullmatch(target):
        raise fields.error("target", f"{target!r} is not a gRPC target (host:port, [v6]:port, "
                                     "dns:///host:port)")
    version = fields.optional("version", int, None)
    if version is not None and version < 0:
        raise fields.error("version", "must be 0 or more")
    label = fields.optional("version_label", str, None)
    if label is not None and not _LABEL.fullmatch(label):
        raise fields.error("version_label", f"{label!r} is not a version label (letters, digits, _ . -)")
    if version is not None and label is not None:
        raise fields.error("version_label", "give either version or version_label, not both")
    if version is None and label is None:
        version = model_version
    signature_name = fields.optional("signature_name", str, "serving_default")
    if not signature_name:
        raise fields.error("signature_name", "must not be empty")
    return BackendSpec(
        protocol=protocol,
        target=target,
        model_name=fields.optional("model_name", str, model_name),
        signature_name=signature_name,
        version=version,
        version_label=label,
        tls=_parse_tls(fields.nested("tls")) if "tls" in fields.mapping else None,
    )


def _parse_tls(fields: _Fields) -> TLSSpec:
    fields.reject_unknown({"ca", "cert", "key", "server_name"})
    paths: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        value = fields.optional(key, str, None)
        path = None if value is None else (fields.path.parent / value).resolve()
        if path is not None and not path.is_file():
            raise fields.error(key, f"{path} is not a file")
        paths[key] = path
    if (paths["cert"] is None) != (paths["key"] is None):
        raise fields.error("cert", "cert and key go together (mutual TLS)")
    return TLSSpec(paths["ca"], paths["cert"], paths["key"], fields.optional("server_name", str, None))


def _parse_version_labels(fields: _Fields) -> dict[str, int]:
    group = fields.nested("version_labels")
    labels: dict[str, int] = {}
    for label in group.mapping:
        version = group.required(str(label), int)
        if not _LABEL.fullmatch(str(label)):
            raise group.error(str(label), f"{label!r} is not a version label (letters, digits, _ . -)")
        if version < 0:
            raise group.error(str(label), "a version is 0 or more")
        labels[str(label)] = version
    return labels


def _parse_contract(fields: _Fields, model_name: str) -> Signature:
    fields.reject_unknown({"name", "inputs", "outputs"})
    return Signature(
        name=fields.optional("name", str, "predict"),
        inputs=_parse_tensor_specs(fields, "inputs", model_name),
        outputs=_parse_tensor_specs(fields, "outputs", model_name),
    )


def _parse_tensor_specs(fields: _Fields, key: str, model_name: str) -> dict[str, TensorSpec]:
    group = fields.nested(key)
    specs: dict[str, TensorSpec] = {}
    for name in group.mapping:
        spec_fields = group.nested(str(name))
        spec_fields.reject_unknown({"shape", "type", "profile"})
        type_name = spec_fields.required("type", str)
        try:
            dtype = lookup_dtype(type_name)
        except CodecError as error:
            raise spec_fields.error("type", f"model {model_name}: {error.message}") from None
        try:
            shape = parse_shape(spec_fields.mapping.get("shape"))
        except CodecError as error:
            raise spec_fields.error("shape", error.message) from None
        profile = spec_fields.optional("profile", str, None)
        specs[str(name)] = TensorSpec(str(name), dtype, shape, profile)
    if not specs:
        raise fields.error(key, "at least one tensor is required")
    return specs


def parse_application(doc: _Mapping, path: Path) -> ApplicationManifest:
    """A kind Application document (`singular` for now; pipelines extend `stages`)."""
    fields = _Fields(doc, path)
    fields.reject_unknown({"kind", "name", "singular", "timeout_s", "max_concurrency"})
    name = fields.required("name", str)
    singular = fields.nested("singular")
    singular.reject_unknown({"model"})
    model = parse_model_ref(singular.required("model", str), singular.where("model"))
    timeout = fields.optional("timeout_s", float, None)
    if timeout is not None and timeout <= 0:
        raise fields.error("timeout_s", "must be greater than 0")
    concurrency = fields.optional("max_concurrency", int, None)
    if concurrency is not None and concurrency < 1:
        raise fields.error("max_concurrency", "must be at least 1")
    return ApplicationManifest(name, (Stage((Variant(model),)),), f"{path}:{doc.line}", timeout,
                               concurrency)


def parse_model_ref(text: str, where: str) -> ModelRef:
    """`name`, `name:3` or `name@label`."""
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?::(\d+)|@([A-Za-z0-9_.-]+))?", text.strip())
    if not match:
        raise ConfigError(f"model: {text!r} is not a model reference (name, name:VERSION or name@LABEL)",
                          where)
    name, version, label = match.groups()
    return ModelRef(name, int(version) if version else None, label)


def parse_gateway(doc: _Mapping, path: Path) -> GatewayManifest:
    """A kind Gateway document: sections of settings (see `gateway.settings.SECTIONS`) and `auth`."""
    fields = _Fields(doc, path)
    fields.reject_unknown({"kind", "auth", *SECTIONS})
    types = field_types()
    values: dict[str, Any] = {}
    for section, names in SECTIONS.items():
        if section not in doc:
            continue
        group = fields.nested(section)
        group.reject_unknown(set(names))
        for name in names:
            if name in group.mapping and group.mapping[name] is not None:
                try:
                    values[name] = convert(name, group.mapping[name], types[name],
                                           source=f"{section}.{name}")
                except ConfigError as error:
                    raise ConfigError(error.message, group.where(name)) from None
    if "auth" in doc:
        values["auth"] = _parse_auth(fields.nested("auth"))
    manifest = GatewayManifest(values, f"{path}:{doc.line}")
    try:
        Settings(**values).check()
    except ConfigError as error:
        raise ConfigError(error.message, manifest.source) from None
    return manifest


def _parse_auth(fields: _Fields) -> AuthSettings:
    fields.reject_unknown({"api_keys", "admin_token_sha256"})
    keys: list[ApiKey] = []
    for index, entry in enumerate(fields.optional("api_keys", list, [])):
        if not isinstance(entry, _Mapping):
            raise fields.error("api_keys", f"entry {index} must be a mapping")
        key = _Fields(entry, fields.path, f"{fields.prefix}api_keys[{index}].")
        key.reject_unknown({"name", "sha256", "applications"})
        digest = key.required("sha256", str).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise key.error("sha256", "must be the 64 hex digits of the key's SHA-256")
        applications = key.optional("applications", list, ["*"])
        keys.append(ApiKey(key.required("name", str), digest, tuple(str(a) for a in applications)))
    tokens = [str(t).lower() for t in fields.optional("admin_token_sha256", list, [])]
    for token in tokens:
        if not re.fullmatch(r"[0-9a-f]{64}", token):
            raise fields.error("admin_token_sha256", "entries must be the 64 hex digits of a SHA-256")
    return AuthSettings(tuple(keys), tuple(tokens))


# ---------------------------------------------------------------- a whole directory


def load_model_folder(folder: Path) -> ModelManifest:
    """The manifest of one Hydrosphere-style model folder (`serving.yaml` + `src/`).

    A folder named by a number (`models/<name>/<N>/`) is version N, as TF Serving lays
    versions out; any other folder is version 1 unless its serving.yaml says `version:`.
    """
    path = folder / MODEL_FILE
    documents = list(read_documents(path))
    if len(documents) != 1 or documents[0].get("kind") != "Model":
        raise ConfigError("expected exactly one document of kind Model", f"{path}:1")
    document = documents[0]
    if not folder.name.isdigit():
        return parse_model(document, path, folder=folder.resolve())
    version = int(folder.name)
    model = parse_model(document, path, folder=folder.resolve(), version=version)
    if model.version != version:
        raise ConfigError(f"version: {model.version} contradicts the folder name {folder.name}",
                          f"{path}:{document.key_lines.get('version', document.line)}")
    return model


def model_folders(models_dir: Path) -> list[Path]:
    """Model folders under `models_dir`: `<name>/` (version 1) and `<name>/<N>/` (version N)."""
    folders: list[Path] = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if (folder / MODEL_FILE).is_file():
            folders.append(folder)
        versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        folders.extend(p for p in sorted(versions, key=lambda p: int(p.name)) if (p / MODEL_FILE).is_file())
    return folders


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
            add_model(load_model_folder(folder))
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
    _check_labels(config)
    _check_references(config)
    return config


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
                resolve_model(config.models, variant.model, app.source)


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
            resolve_ref(config.models, ModelRef(model.name, label=label), model.source)


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
    without a manifest, is forwarded to the backend when the model has a floating manifest.
    Without version or label: the highest version.
    """
    versions = sorted(v for (name, v) in models if name == ref.name)
    if not versions:
        raise ConfigError(f"model {ref.name} is not defined", where)
    floating = [models[(ref.name, v)] for v in versions if models[(ref.name, v)].floating]
    version = ref.version
    if ref.label is not None:
        labels = version_labels(models, ref.name)
        if ref.label in labels:
            version = labels[ref.label]
        elif floating:
            return Resolution(floating[-1], label=ref.label)
        else:
            defined = ", ".join(sorted(labels)) or "none"
            raise ConfigError(f"model {ref.name} has no version label {ref.label!r} (defined: {defined})",
                              where)
    if version is None:
        return Resolution(models[(ref.name, versions[-1])])
    model = models.get((ref.name, version))
    if model is not None:
        return Resolution(model, version if model.floating else None)
    if floating:
        return Resolution(floating[-1], version)
    raise ConfigError(f"model {ref.name} has no version {version} (defined: "
                      f"{', '.join(map(str, versions))})", where)


def resolve_model(models: Mapping[tuple[str, int], ModelManifest], ref: ModelRef,
                  where: str | None = None) -> ModelManifest:
    """The manifest a reference names (see `resolve_ref`)."""
    return resolve_ref(models, ref, where).manifest
