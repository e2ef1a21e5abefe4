"""The interface every backend implements."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.errors import BackendUnavailable

NDArray = np.ndarray
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:;,'\"()]+/)+([^\s/:;,'\"()]+)")  # -> its last part


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


class Backend(Protocol):
    """Runs one model version. Implementations translate their transport's errors into
    the gateway's error tree; callers see only `GatewayError`s."""

    @property
    def target(self) -> str:
        """Where the model runs, for logs and health detail."""
        ...

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        """The model's outputs for `inputs`, within `timeout` seconds."""
        ...

    async def healthy(self, timeout: float) -> bool:
        """Whether the backend answers its health check within `timeout` seconds."""
        ...


class UnavailableBackend:
    """The backend of a model that could not be started; every call says so, and the log why
    (`detail`: exit codes, a runtime's last output, with its file paths)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.target = "(none)"

    @classmethod
    def for_model(cls, label: str, failure: str, folder: Path | None) -> UnavailableBackend:
        """The backend of model `label`, whose runtime failed with `failure` (a reason, then
        maybe "; last output:" and the runtime's last lines): answers carry the reason and the
        last line, with paths relative to the model `folder` (other absolute paths shortened to
        their file name); the whole of it goes to the log."""
        reason, _, output = failure.partition("; last output:")
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        public = reason.strip().splitlines()[0] if reason.strip() else ""
        if lines:
            public += f"; last output: {lines[-1]}"
        if folder is not None:
            public = public.replace(f"{folder}{os.sep}", "").replace(str(folder), folder.name)
        public = _ABSOLUTE_PATH.sub(r"\1", public)
        return cls(f"model {label} is unavailable" + (f": {public}" if public else ""), failure)

    def error(self) -> BackendUnavailable:
        """What a call to this backend raises."""
        return BackendUnavailable(self.reason, log_detail=self.detail)

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        raise self.error()

    async def healthy(self, timeout: float) -> bool:
        return False
