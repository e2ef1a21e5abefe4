"""The Open Inference Protocol's (KServe v2) rules that do not depend on the transport.

The REST door (gateway/routes/v2.py) and the gRPC door (gateway/grpc_api/oip.py) both call
these, so that they answer the same name, version, readiness, metadata and output errors; each
door keeps only reading its request and writing its answer.

- Names: an application first, else a model resolved as every front door resolves one; a version
  is a number (more than 19 digits: no version, NOT_FOUND) or a version label; an application
  has no versions (NOT_FOUND).
- Readiness of a model or application: false once the gateway drains, as Triton answers every
  model not ready once its shutdown begins.
- Metadata: tensors of dtypes the protocol has no datatype for are left out; -1 for a dim of
  any size, [-1] for a tensor of any rank.
- Requested outputs: one outside the contract, or asked twice, is the client's mistake; one in
  the contract that the model did not answer is the model's (OutputContractViolation).
- Request parameters of Triton's extensions the gateway does not offer (sequence batching,
  priority) are refused rather than ignored; `timeout` (microseconds) shortens the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from gateway.backends import NDArray, Selector
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import ContractViolation, NotFound, OutputContractViolation
from gateway.health_watch import HealthWatcher
from gateway.registry import Application, Target
from gateway.routes.health import UNCHECKED, readiness
from tensorcodecs import TensorSpec

SERVER_NAME = "inference-gateway"
APPLICATION_PLATFORM = "gateway-application"
EMBEDDED_PLATFORM = "embedded"
MAX_VERSION_DIGITS = 19  # beyond int64, as no version is (and int() refuses 4,300 digits)

Named = Application | Target


def resolve(dataplane: DataPlane, name: str, version: str | None, authorize: Callable[[str], None]) -> Named:
    """The application or model `name` at `version` (None or "": the default); `authorize` is
    asked first (a key learns nothing of names it may not call), then for the model reached."""
    authorize(name)
    app = dataplane.registry.applications.get(name)
    if app is not None:
        if version:
            raise NotFound(f"{name!r} is an application: applications have no versions (name a model to "
                           f"ask for version {version[:24]!r})")
        return app
    target = dataplane.resolve(name, selector(name, version))
    authorize(target.model.manifest.name)  # a backend's model name may lead to another gateway model
    return target


def selector(name: str, version: str | None) -> Selector | None:
    """A numeric version, else a version label (None or "": the model's default)."""
    if not version:
        return None
    if not (version.isascii() and version.isdigit()):
        return Selector(label=version)
    if len(version) > MAX_VERSION_DIGITS:
        raise NotFound(f"model {name!r} has no version {version[:24]}...")
    return Selector(int(version))


def is_ready(dataplane: DataPlane, watcher: HealthWatcher, draining: bool, named: Named) -> bool:
    """An application as /health/ready judges it, a model when its last health check passed and
    it started; neither once the gateway drains."""
    if draining:
        return False
    if isinstance(named, Application):
        applications = readiness(dataplane, watcher, draining)[1]["applications"]
        assert isinstance(applications, dict)
        return bool(applications[named.name]["ready"])
    model = named.model
    return model.unavailable is None and watcher.health.get(model.label, UNCHECKED).ready


def platform(named: Named) -> str:
    """An application's platform, or a model's backend protocol (a model with a folder is the
    embedded runtime's, whatever its backend speaks)."""
    if isinstance(named, Application):
        return APPLICATION_PLATFORM
    manifest = named.model.manifest
    backend = manifest.backend
    return backend.protocol if backend is not None and manifest.folder is None else EMBEDDED_PLATFORM


def versions(dataplane: DataPlane, named: Named) -> list[str]:
    """The versions the gateway serves of a model, in order (an application has none)."""
    if isinstance(named, Application):
        return []
    own = named.model.manifest.name
    return [str(version) for version in sorted(version for name, version in dataplane.registry.models
                                                if name == own)]


def metadata_tensors(specs: Mapping[str, TensorSpec]) -> list[tuple[str, str, list[int]]]:
    """Contract tensors as (name, datatype, shape) for metadata."""
    return [(name, spec.dtype.oip, [-1] if spec.shape is None else list(spec.shape))
            for name, spec in specs.items() if spec.dtype.oip]


def answered_version(target: Target, served: int | None) -> str:
    """The version that answered ("" unknown): the backend's word, else the one asked for, else
    the gateway model's own (a model pinned to one version)."""
    if served is None and target.selector is not None:
        served = target.selector.version
    if served is None and not target.model.manifest.floating:
        served = target.model.manifest.version
    return "" if served is None else str(served)


def check_requested(wanted: Sequence[str], known: Mapping[str, object]) -> None:
    """Requested outputs, checked before anything runs: each one of the contract's outputs (when
    it declares any), none twice. Errors name the output's place as `field` (REST puts it before
    the message, gRPC in it)."""
    seen: set[str] = set()
    for index, name in enumerate(wanted):
        if known and name not in known:
            raise ContractViolation(f"unknown output {name!r}; expected {', '.join(map(repr, known))}",
                                    field=f"outputs[{index}].name")
        if name in seen:
            raise ContractViolation(f"output {name!r} requested twice", field=f"outputs[{index}].name")
        seen.add(name)


def contract_outputs(outputs: dict[str, NDArray], declared: Mapping[str, object]) -> dict[str, NDArray]:
    """The contract's outputs only, in its order (no contract: all)."""
    if not declared:
        return outputs
    return {name: outputs[name] for name in declared if name in outputs}


def chosen(outputs: Mapping[str, NDArray], wanted: Sequence[str], who: str,
           contracted: bool) -> Mapping[str, NDArray]:
    """The requested outputs in order (none requested: all). One the model left out is its fault
    when the contract has it (`contracted`: requests were checked against it), else the client's."""
    if not wanted:
        return outputs
    missing = [name for name in wanted if name not in outputs]
    if missing:
        answered = ", ".join(map(repr, outputs)) or "none"
        if contracted:
            raise OutputContractViolation(f"model {who} answered no output {', '.join(map(repr, missing))}, "
                                          f"which its contract has; it answered {answered}", field=missing[0])
        index = list(wanted).index(missing[0])
        raise ContractViolation(f"unknown output {missing[0]!r}; {who} answered {answered}",
                                field=f"outputs[{index}].name")
    return {name: outputs[name] for name in wanted}


# Request parameters of Triton's extensions the gateway does not offer, a value that asks
# for nothing is taken (0, false, "": tritonclient sends them only when set).
_UNOFFERED_REQUEST = {"sequence_id": "sequence batching (stateful models)",
                      "sequence_start": "sequence batching (stateful models)",
                      "sequence_end": "sequence batching (stateful models)",
                      "priority": "request priorities"}
TIMEOUT_PARAMETER = "timeout"  # Triton's: microseconds for the request, here a shorter deadline


def request_parameters(parameters: Mapping[str, object], context: RequestContext) -> None:
    """Refuse parameters that ask for an extension the gateway does not offer; apply `timeout`."""
    for name, value in parameters.items():
        unoffered = _UNOFFERED_REQUEST.get(name)
        if unoffered is not None:
            if value:  # 0, false or "": asks for nothing
                raise ContractViolation(f"parameters: {name!r} asks for {unoffered}, which the gateway does not offer",
                                        field=f"parameters.{name}")
        elif name == TIMEOUT_PARAMETER:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ContractViolation("parameters: 'timeout' is the request's timeout in microseconds (an "
                                        "integer, 0: none)", field="parameters.timeout")
            if value:
                context.deadline = min(context.deadline, time.monotonic() + value / 1e6)
