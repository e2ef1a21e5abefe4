"""The manifests' domain types: models, applications, gateway settings and the references
between them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfolder import ModelDefinition

FLOATING_VERSION = 0


@dataclass(frozen=True, slots=True)
class Selector:
    """The version (or label) a request asks a backend for; empty: the backend's choice."""

    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"version {self.version}"
        return f"label {self.label!r}" if self.label is not None else "the default version"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A reference to a model from an application: `name`, `name:2` or `name@stable`."""

    name: str
    selector: Selector = Selector()

    def __str__(self) -> str:
        if self.selector.version is not None:
            return f"{self.name}:{self.selector.version}"
        return f"{self.name}@{self.selector.label}" if self.selector.label else self.name


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
    one, concatenated along their first (batch) dimension, up to `max_batch_size` rows. With
    `max_delay_ms` > 0 a request waits for a full call at most that long (0: never waits on purpose)."""

    max_batch_size: int = 256
    max_calls: int = 2
    max_delay_ms: float = 0.0


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
    # protocol v2: how input tensors travel, `raw` (raw_input_contents) or `typed` (each
    # input's InferTensorContents, for servers that take no raw contents).
    contents: str = "raw"

    @property
    def floating(self) -> bool:
        """Whether no version is pinned: the version (or label) comes with each request."""
        return self.version is None and self.version_label is None


MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class FileSinkSpec:
    """Request-log records written to rotating TFRecord files in `dir` (relative: to the
    gateway's working directory), each beside its JSON-lines index: a file is closed (its
    `.partial` suffix dropped) once it reaches `max_bytes`, at most `max_files` closed files
    are kept (the oldest deleted), and a call whose record would exceed `max_record_bytes` is
    skipped (counted)."""

    dir: Path
    max_bytes: int = 64 * MIB
    max_files: int = 10
    max_record_bytes: int = 4 * MIB


@dataclass(frozen=True, slots=True)
class CloudEventsSpec:
    """Request-log records sent as CloudEvents over HTTP (binary mode, KServe's logger's
    event types) to `url`, each event tried `retries` more times on failure, every attempt
    within `timeout_s`."""

    url: str
    timeout_s: float = 5.0
    retries: int = 3
    max_event_bytes: int = 4 * MIB


@dataclass(frozen=True, slots=True)
class RequestLogSpec:
    """`request_log:` of a model or an application: the share of requests recorded and where."""

    sample_rate: float = 1.0
    file: FileSinkSpec | None = None
    cloudevents: CloudEventsSpec | None = None
    source: str = ""  # file:line of `request_log:` in its manifest


@dataclass(frozen=True, slots=True)
class ModelManifest(ModelDefinition):
    """A model: its definition (contract, code; modelfolder.ModelDefinition) and either a local
    folder (embedded runtime) or a backend."""

    backend: BackendSpec | None = None
    version_labels: Mapping[str, int] = field(default_factory=dict)
    batching: BatchingSpec | None = None  # coalesce concurrent requests (opt-in)
    request_log: RequestLogSpec | None = None  # record (a sample of) its calls

    @property
    def key(self) -> tuple[str, int]:
        """Registry key: (name, version)."""
        return (self.name, self.version)

    @property
    def floating(self) -> bool:
        """A TF Serving model that forwards the version each request names."""
        return self.backend is not None and self.backend.floating


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a model reference resolves to: the manifest, and the version or label to ask
    the backend for when the manifest is floating (None: the manifest's own)."""

    manifest: ModelManifest
    selector: Selector | None = None


@dataclass(frozen=True, slots=True)
class CompareSpec:
    """How a shadow's float outputs are compared with the live variant's: equal when
    |shadow - live| <= atol + rtol * |live| (numpy.isclose's rule and defaults); ints, bools
    and strings compare exactly."""

    rtol: float = 1e-05
    atol: float = 1e-08


DEFAULT_WEIGHT = 100  # a live variant without a weight: stages share equally


@dataclass(frozen=True, slots=True)
class VariantManifest:
    """One model serving a stage: a live variant with its traffic weight, or a shadow that
    gets a copy of (a `sample` share of) the stage's requests once the live variant answered,
    whose answer is compared with the live one's and never returned."""

    model: ModelRef
    weight: int = DEFAULT_WEIGHT  # live variants only (0 for a shadow)
    shadow: bool = False
    sample: float = 1.0  # shadows: the share of requests copied to it
    compare: CompareSpec = CompareSpec()  # shadows: how its float outputs are compared
    source: str = ""  # file:line of the variant in its manifest


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of an application; its live variants share the traffic, its shadows get copies."""

    variants: tuple[VariantManifest, ...]
    source: str = ""

    @property
    def live(self) -> tuple[VariantManifest, ...]:
        return tuple(v for v in self.variants if not v.shadow)

    @property
    def shadows(self) -> tuple[VariantManifest, ...]:
        return tuple(v for v in self.variants if v.shadow)


@dataclass(frozen=True, slots=True)
class ApplicationManifest:
    """An application: the stages a request passes through, in order."""

    name: str
    stages: tuple[Stage, ...]
    source: str
    timeout_s: float | None = None  # default deadline of its requests (else the gateway's)
    max_concurrency: int | None = None  # its requests in flight; beyond it 429
    allow_variant_override: bool = False  # whether `x-gateway-variant` may force a variant
    validate_outputs: bool = False  # check every stage's answer against its contract (502)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # Hydrosphere's free-form key-values
    request_log: RequestLogSpec | None = None  # record (a sample of) its requests, every stage's call


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
