"""What only some backends offer, one protocol each, beside the `Backend` every one implements.

Capabilities are nominal: a backend says which it offers (`capabilities`, a frozenset of the
protocols below), so another protocol's method of the same name is never taken for one of them.
A front door asks for a capability in one place (`DataPlane.capability(model, Kind)`), which
answers the backend (or a wrapper's inner backend) that declares it, else NotFound with the
kind's own `absent` words. The TF Serving API's own calls take and answer its messages: the
routes that speak that API use them as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, cast

from gateway.backends.base import BackendCall, Prediction, Selector
from gateway.errors import GatewayError
from protos.tensorflow_serving.classification_pb2 import ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataResponse
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusResponse
from protos.tensorflow_serving.input_pb2 import Input
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigResponse
from protos.tensorflow_serving.model_server_config_pb2 import ModelServerConfig
from protos.tensorflow_serving.regression_pb2 import RegressionResponse

C = TypeVar("C")
T = TypeVar("T", bound=type)
# The outcome of each call, and the backend's time per call (seconds; None: not said).
SharedAnswer = tuple[list[Prediction | GatewayError], float | None]
NOT_TF_SERVING = "is not served by a TensorFlow Serving backend"


def capability(absent: str) -> Callable[[T], T]:
    """Mark a protocol as a capability; `absent`: how a NotFound says a model lacks it (after
    "model NAME:V ")."""
    def mark(kind: T) -> T:
        kind.absent = absent  # type: ignore[attr-defined]  # the kind carries its own words
        return kind
    return mark


@capability("does not take several calls in one")
class PredictsMany(Protocol):
    """Several calls in one (the embedded runtime's PredictMany), each answered or failed on its
    own. The calls share selector, signature and specs (the scheduling wrapper groups them so)."""

    async def predict_many(self, calls: Sequence[BackendCall], timeout: float) -> SharedAnswer: ...


@capability(NOT_TF_SERVING)
class Classifies(Protocol):
    """TF Serving's Classify."""

    async def classify(self, request_input: Input, timeout: float, selector: Selector | None = None,
                       signature_name: str | None = None, request_id: str = "") -> ClassificationResponse: ...


@capability(NOT_TF_SERVING)
class Regresses(Protocol):
    """TF Serving's Regress."""

    async def regress(self, request_input: Input, timeout: float, selector: Selector | None = None,
                      signature_name: str | None = None, request_id: str = "") -> RegressionResponse: ...


@capability(NOT_TF_SERVING)
class ReportsStatus(Protocol):
    """TF Serving's GetModelStatus: the selected version's state (every version's when floating)."""

    async def status(self, timeout: float, selector: Selector | None = None,
                     request_id: str = "") -> GetModelStatusResponse: ...


@capability(NOT_TF_SERVING)
class HasMetadata(Protocol):
    """TF Serving's GetModelMetadata as it answers it (the /v1 metadata route shows it whole)."""

    async def metadata(self, timeout: float, selector: Selector | None = None,
                       request_id: str = "") -> GetModelMetadataResponse: ...


# What ReloadsConfig takes and answers (the TF Serving API's messages), for callers that pass
# them through without reading them.
ServerConfig = ModelServerConfig
ReloadAnswer = ReloadConfigResponse


@capability(NOT_TF_SERVING)
class ReloadsConfig(Protocol):
    """TF Serving's HandleReloadConfigRequest: a new ModelServerConfig for the whole server."""

    async def reload_config(self, config: ServerConfig, timeout: float,
                            request_id: str = "") -> ReloadAnswer: ...


def reload_applied(answer: ReloadAnswer) -> bool:
    """Whether the server took the new config (its models changed: so may their contracts)."""
    return answer.status.error_code == 0


# A capability protocol: typed as what it is called for, since mypy refuses a protocol where
# `type[C]` is asked (python/mypy#4717).
Kind = Callable[..., C]


def offered(backend: object, kind: Kind[C]) -> C | None:
    """`backend` as a `kind` (one of the protocols above) if it declares it in its
    `capabilities`, else the first backend down a wrapper chain (`inner`) that does; None when
    none does."""
    while backend is not None:
        if kind in getattr(backend, "capabilities", ()):
            return cast(C, backend)
        backend = getattr(backend, "inner", None)
    return None


def absent(kind: Kind[object]) -> str:
    """How a NotFound says a model's backend does not offer `kind`."""
    return str(getattr(kind, "absent", "does not offer this call"))


def innermost(backend: object) -> object:
    """The backend at the end of a wrapper chain (`inner`)."""
    while (inner := getattr(backend, "inner", None)) is not None:
        backend = inner
    return backend
