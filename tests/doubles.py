"""A backend double for tests of the core: Python functions stand in for a model's versions and
signatures. It implements the whole `Backend` interface (and passes the same conformance suite
as the real backends, tests/gateway/backends/test_conformance.py), so the data plane takes the
branch production takes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gateway.backends import BackendCall, EffectiveSpec, NDArray, NotDescribed, Prediction, Selector
from gateway.errors import BadRequest, NotFound
from tensorcodecs import Signature

ModelFunction = Callable[[Mapping[str, NDArray]], dict[str, NDArray]]
DEFAULT_SIGNATURE = "serving_default"


class InMemoryBackend:
    """Answers a call with `function(inputs)` (the default version's default signature) after
    `delay_s`; records every call. `versions` maps other versions (and labels, to versions) to
    their functions per signature; `signatures` is what `describe` says (none: it cannot
    describe, as a backend whose contract only its manifest knows)."""

    def __init__(self, function: ModelFunction, *, delay_s: float = 0.0, target: str = "memory",
                 name: str = "model", version: int = 1,
                 versions: Mapping[int, Mapping[str, ModelFunction]] | None = None,
                 labels: Mapping[str, int] | None = None,
                 signatures: Mapping[str, Signature] | None = None) -> None:
        self.delay_s = delay_s
        self.target = target
        self.name = name
        self.version = version
        self.versions: dict[int, Mapping[str, ModelFunction]] = {version: {DEFAULT_SIGNATURE: function},
                                                                 **(versions or {})}
        self.labels = dict(labels or {})
        self.signatures = dict(signatures) if signatures is not None else None
        self.calls: list[BackendCall] = []
        self.is_healthy = True

    @property
    def describes(self) -> bool:
        return self.signatures is not None

    def _version(self, selector: Selector | None) -> int:
        if selector is None or (selector.version is None and selector.label is None):
            return self.version
        if selector.label is not None:
            if selector.label not in self.labels:
                raise NotFound(f"model {self.name} has no version label {selector.label!r}")
            return self.labels[selector.label]
        assert selector.version is not None
        if selector.version not in self.versions:
            raise NotFound(f"model {self.name} has no version {selector.version}")
        return selector.version

    async def predict(self, call: BackendCall) -> Prediction:
        self.calls.append(call)
        version = self._version(call.selector)
        signature = call.signature_name or DEFAULT_SIGNATURE
        function = self.versions[version].get(signature)
        if function is None:
            raise BadRequest(f'Serving signature name: "{signature}" not found in signature def')
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return Prediction(function(call.inputs), EffectiveSpec(self.name, version, signature))

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        if self.signatures is None:
            raise NotDescribed
        self._version(selector)
        return dict(self.signatures)

    async def healthy(self, timeout: float) -> bool:
        return self.is_healthy
