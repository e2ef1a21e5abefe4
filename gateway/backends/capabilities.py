"""What only some backends offer, one protocol each, beside the `Backend` every one implements.

A front door asks for a capability in one place (`DataPlane.capability(model, Kind)`), which
answers the backend (or a wrapper's inner backend) when it offers it, else NotFound. The TF
Serving API's own calls take and answer its messages: the routes that speak that API use them
as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, cast, runtime_checkable

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
# The outcome of each call, and the backend's time per call (seconds; None: not said).
SharedAnswer = tuple[list[Prediction | GatewayError], float | None]


@runtime_checkable
class PredictsMany(Protocol):
    """Several calls in one (the embedded runtime's PredictMany), each answered or failed on its
    own. The calls share selector, signature and specs (the scheduling wrapper groups them so)."""

    async def predict_many(self, calls: Sequence[BackendCall], timeout: float) -> SharedAnswer: ...


@runtime_checkable
class Classifies(Protocol):
    """TF Serving's Classify."""

    async def classify(self, request_input: Input, timeout: float, selector: Selector | None = None,
                       signature_name: str | None = None, request_id: str = "") -> ClassificationResponse: ...


@runtime_checkable
class Regresses(Protocol):
    """TF Serving's Regress."""

    async def regress(self, request_input: Input, timeout: float, selector: Selector | None = None,
                      signature_name: str | None = None, request_id: str = "") -> RegressionResponse: ...


@runtime_checkable
class ReportsStatus(Protocol):
    """TF Serving's GetModelStatus: the selected version's state (every version's when floating)."""

    async def status(self, timeout: float, selector: Selector | None = None,
                     request_id: str = "") -> GetModelStatusResponse: ...


@runtime_checkable
class HasMetadata(Protocol):
    """TF Serving's GetModelMetadata as it answers it (the /v1 metadata route shows it whole)."""

    async def metadata(self, timeout: float, selector: Selector | None = None,
                       request_id: str = "") -> GetModelMetadataResponse: ...


@runtime_checkable
class ReloadsConfig(Protocol):
    """TF Serving's HandleReloadConfigRequest: a new ModelServerConfig for the whole server."""

    async def reload_config(self, config: ModelServerConfig, timeout: float,
                            request_id: str = "") -> ReloadConfigResponse: ...


# A capability protocol: typed as what it is called for, since mypy refuses a protocol where
# `type[C]` is asked (python/mypy#4717).
Kind = Callable[..., C]


def offered(backend: object, kind: Kind[C]) -> C | None:
    """`backend` as a `kind` (one of the protocols above) if it offers it, else the first
    backend down a wrapper chain (`inner`) that does; None when none does."""
    protocol = cast(type, kind)
    while backend is not None:
        if isinstance(backend, protocol):
            return cast(C, backend)
        backend = getattr(backend, "inner", None)
    return None
