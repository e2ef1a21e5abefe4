"""The interface every backend implements, and the call it is given.

Every caller (the data plane, the scheduling wrapper, the health watch) goes through `Backend`;
what only some backends offer (classify, model status, ...) is a separate protocol in
gateway.backends.capabilities, declared by the backend (`capabilities`) and asked for in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from gateway.errors import BackendUnavailable
from gateway.manifests.types import Selector as Selector  # the one version-or-label value
from tensorcodecs import Signature, TensorSpec

if TYPE_CHECKING:
    from gateway.manifests import ModelManifest

NDArray = np.ndarray
# What a failure's reason says happened to the runtime, as answers put it (checked in order).
_RUNTIME_FAILURES = [
    (re.compile(r"(warmup failed at record \d+) of "), "its {}"),
    (re.compile(r"(warmup failed) at "), "its {}"),
    (re.compile(r"install-command .* failed with exit code (-?\d+)"), "its install-command failed with exit code {}"),
    (re.compile(r"did not finish within ([\d.]+)s"), "loading it did not finish within {}s"),
    (re.compile(r"not healthy within ([\d.]+)s"), "its runtime was not ready within {}s"),
    (re.compile(r"exited with code (-?\d+)"), "its runtime exited with code {}"),
    (re.compile(r"(its runtime is not running)"), "{}"),
]
_WARMUP_FAILED = re.compile(r"warmup failed at ")
_ERROR_NAME = re.compile(r"\b([A-Z][A-Za-z0-9]*(?:Error|Exception))\b")


@dataclass(frozen=True, slots=True)
class EffectiveSpec:
    """The model spec a backend says it answered with."""

    name: str
    version: int | None
    signature_name: str

    def header(self) -> str:
        """The `x-model-spec` header value: `name=Toy; version=2; signature_name=serving_default`."""
        version = "" if self.version is None else str(self.version)
        return f"name={self.name}; version={version}; signature_name={self.signature_name}"


@dataclass(frozen=True, slots=True)
class Prediction:
    """A backend's outputs and the spec it answered with (None when it does not say)."""

    outputs: dict[str, NDArray]
    spec: EffectiveSpec | None = None


class BackendCall(NamedTuple):
    """One prediction asked of a backend, built once per stage of a request (a tuple: cheap to
    make, and `_replace` gives a scheduler its copy with a joined batch or a later timeout)."""

    inputs: Mapping[str, NDArray]
    timeout: float  # seconds left for the answer
    request_id: str = ""  # the caller's request, for the backend's logs ("": none)
    selector: Selector | None = None  # None: the version (or label) the manifest pins
    signature_name: str | None = None  # None: the model's default signature
    specs: Mapping[str, TensorSpec] | None = None  # the inputs' contract; None: the manifest's


class NotDescribed(Exception):
    """Raised by `Backend.describe` of a backend that cannot say its contract."""


class Backend(Protocol):
    """Runs one model (a version, or every version when floating). Implementations translate
    their transport's errors into the gateway's error tree; callers see only `GatewayError`s.
    One that offers optional calls says which in a `capabilities` frozenset (of the protocols
    of gateway.backends.capabilities); a wrapper exposes the backend it wraps as `inner`."""

    @property
    def describes(self) -> bool:
        """Whether `describe` asks the backend (calls worth sharing and backing off); False:
        it raises at once (NotDescribed, or the backend's own error)."""
        ...

    @property
    def target(self) -> str:
        """Where the model runs, for logs and health detail."""
        ...

    async def predict(self, call: BackendCall) -> Prediction:
        """The model's outputs for `call.inputs` at the call's selector and signature, within
        `call.timeout` seconds, with the model spec it answered with."""
        ...

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        """The signatures (contract) of the selected version, by name."""
        ...

    async def healthy(self, timeout: float) -> bool:
        """Whether the backend answers its health check within `timeout` seconds."""
        ...


def default_signature(model: ModelManifest) -> str:
    """The signature a call that names none asks the backend of `model` for: the manifest's;
    an embedded runtime's model answers to its contract's name (TF's default key is an alias
    there): asked by that name, it stamps the signature its metadata describes."""
    assert model.backend is not None
    if model.folder is not None and model.signature.name:
        return model.signature.name
    return model.backend.signature_name


class UnavailableBackend:
    """The backend of a model that could not be started; every call says so, and the log why
    (`detail`: exit codes, a runtime's last output, with its file paths). It offers no
    capability: the data plane answers a capability asked of it with `error()` too."""

    describes = False  # nothing to ask: `describe` raises its error at once

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.target = "(none)"

    @classmethod
    def for_model(cls, label: str, failure: str, folder: Path | None) -> UnavailableBackend:
        """The backend of model `label`, whose runtime failed with `failure` (a reason, then
        maybe "; last output:" and the runtime's last lines). Answers say why in the gateway's
        own words: the error and the file:line in the model `folder` when the failure names one
        ("failed to load: SyntaxError at src/func_main.py:2"), else what happened to the runtime;
        never the runtime's output, addresses or paths. The whole failure goes to the log."""
        return cls(f"model {label} is unavailable: {_failure_summary(failure, folder)}", failure)

    def error(self) -> BackendUnavailable:
        """What a call to this backend raises."""
        return BackendUnavailable(self.reason, log_detail=self.detail)

    async def predict(self, call: BackendCall) -> Prediction:
        raise self.error()

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        raise self.error()

    async def healthy(self, timeout: float) -> bool:
        return False


def _failure_summary(failure: str, folder: Path | None) -> str:
    """Why a model did not start, for answers (see `UnavailableBackend.for_model`)."""
    reason = failure.partition("; last output:")[0]
    if folder is not None and not _WARMUP_FAILED.match(reason):
        # The runtime names the failing place as an absolute path in the folder, then the error.
        where = re.search(re.escape(str(folder)) + r"""/([^:\n"']+)(?::(\d+)|", line (\d+))?(.*)""", failure)
        if where is not None:
            file, line, traceback_line, rest = where.groups()
            line = line or traceback_line
            name = _ERROR_NAME.search(rest)
            kind = name.group(1) if name else "SyntaxError" if "syntax error" in rest else "an error"
            return f"it failed to load: {kind} at {file}" + (f":{line}" if line else "")
    for pattern, words in _RUNTIME_FAILURES:
        found = pattern.search(reason)
        if found is not None:
            return words.format(found.group(1))
    return "its runtime did not start"
