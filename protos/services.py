"""Upstream gRPC method paths with their message classes.

Generated `_pb2_grpc` stubs would carry the private proto package in their paths, so
clients and servers use this table instead; the wire matches the upstream services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


@dataclass(frozen=True, slots=True)
class Method(Generic[RequestT, ResponseT]):
    """One unary gRPC method: `/package.Service/Name` and its request and response types."""

    service: str
    name: str
    request: type[RequestT]
    response: type[ResponseT]

    @property
    def path(self) -> str:
        """The full method path as sent on the wire."""
        return f"/{self.service}/{self.name}"


TF_PREDICTION_SERVICE = "tensorflow.serving.PredictionService"

TF_PREDICT: Method[PredictRequest, PredictResponse] = Method(
    TF_PREDICTION_SERVICE, "Predict", PredictRequest, PredictResponse
)
