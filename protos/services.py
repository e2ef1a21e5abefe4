"""Upstream gRPC method paths with their message classes.

Generated `_pb2_grpc` stubs would carry the private proto package in their paths, so
clients and servers use this table instead; the wire matches the upstream services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from protos.hydrosphere import runtime_pb2 as hydro_runtime
from protos.hydrosphere.gateway_pb2 import GatewayPredictRequest
from protos.inference import grpc_service_pb2 as oip
from protos.runtime.calls_pb2 import PredictManyRequest, PredictManyResponse
from protos.tensorflow_serving.classification_pb2 import ClassificationRequest, ClassificationResponse
from protos.tensorflow_serving.get_model_metadata_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
)
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusRequest, GetModelStatusResponse
from protos.tensorflow_serving.model_management_pb2 import ReloadConfigRequest, ReloadConfigResponse
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from protos.tensorflow_serving.regression_pb2 import RegressionRequest, RegressionResponse

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
TF_MODEL_SERVICE = "tensorflow.serving.ModelService"
HYDRO_RUNTIME_SERVICE = "hydrosphere.serving.runtime.PredictionService"
HYDRO_GATEWAY_SERVICE = "hydrosphere.serving.gateway.GatewayService"
RUNTIME_SERVICE = "gateway.runtime.Runtime"  # the embedded runtime's own method
OIP_SERVICE = "inference.GRPCInferenceService"  # the Open Inference Protocol (KServe v2)

TF_PREDICT: Method[PredictRequest, PredictResponse] = Method(
    TF_PREDICTION_SERVICE, "Predict", PredictRequest, PredictResponse
)
TF_GET_MODEL_METADATA: Method[GetModelMetadataRequest, GetModelMetadataResponse] = Method(
    TF_PREDICTION_SERVICE, "GetModelMetadata", GetModelMetadataRequest, GetModelMetadataResponse
)
TF_CLASSIFY: Method[ClassificationRequest, ClassificationResponse] = Method(
    TF_PREDICTION_SERVICE, "Classify", ClassificationRequest, ClassificationResponse
)
TF_REGRESS: Method[RegressionRequest, RegressionResponse] = Method(
    TF_PREDICTION_SERVICE, "Regress", RegressionRequest, RegressionResponse
)
TF_GET_MODEL_STATUS: Method[GetModelStatusRequest, GetModelStatusResponse] = Method(
    TF_MODEL_SERVICE, "GetModelStatus", GetModelStatusRequest, GetModelStatusResponse
)
TF_RELOAD_CONFIG: Method[ReloadConfigRequest, ReloadConfigResponse] = Method(
    TF_MODEL_SERVICE, "HandleReloadConfigRequest", ReloadConfigRequest, ReloadConfigResponse
)
HYDRO_PREDICT: Method[hydro_runtime.PredictRequest, hydro_runtime.PredictResponse] = Method(
    HYDRO_RUNTIME_SERVICE, "Predict", hydro_runtime.PredictRequest, hydro_runtime.PredictResponse
)
HYDRO_PREDICT_APPLICATION: Method[GatewayPredictRequest, hydro_runtime.PredictResponse] = Method(
    HYDRO_GATEWAY_SERVICE, "PredictApplication", GatewayPredictRequest, hydro_runtime.PredictResponse
)
HYDRO_PREDICT_SERVABLE: Method[GatewayPredictRequest, hydro_runtime.PredictResponse] = Method(
    HYDRO_GATEWAY_SERVICE, "PredictServable", GatewayPredictRequest, hydro_runtime.PredictResponse
)
HYDRO_SHADOWLESS_PREDICT_SERVABLE: Method[GatewayPredictRequest, hydro_runtime.PredictResponse] = Method(
    HYDRO_GATEWAY_SERVICE, "ShadowlessPredictServable", GatewayPredictRequest, hydro_runtime.PredictResponse
)
RUNTIME_PREDICT_MANY: Method[PredictManyRequest, PredictManyResponse] = Method(
    RUNTIME_SERVICE, "PredictMany", PredictManyRequest, PredictManyResponse
)
OIP_SERVER_LIVE: Method[oip.ServerLiveRequest, oip.ServerLiveResponse] = Method(
    OIP_SERVICE, "ServerLive", oip.ServerLiveRequest, oip.ServerLiveResponse
)
OIP_SERVER_READY: Method[oip.ServerReadyRequest, oip.ServerReadyResponse] = Method(
    OIP_SERVICE, "ServerReady", oip.ServerReadyRequest, oip.ServerReadyResponse
)
OIP_MODEL_READY: Method[oip.ModelReadyRequest, oip.ModelReadyResponse] = Method(
    OIP_SERVICE, "ModelReady", oip.ModelReadyRequest, oip.ModelReadyResponse
)
OIP_SERVER_METADATA: Method[oip.ServerMetadataRequest, oip.ServerMetadataResponse] = Method(
    OIP_SERVICE, "ServerMetadata", oip.ServerMetadataRequest, oip.ServerMetadataResponse
)
OIP_MODEL_METADATA: Method[oip.ModelMetadataRequest, oip.ModelMetadataResponse] = Method(
    OIP_SERVICE, "ModelMetadata", oip.ModelMetadataRequest, oip.ModelMetadataResponse
)
OIP_MODEL_INFER: Method[oip.ModelInferRequest, oip.ModelInferResponse] = Method(
    OIP_SERVICE, "ModelInfer", oip.ModelInferRequest, oip.ModelInferResponse
)

# The type URL TF Serving puts on the "signature_def" metadata Any.
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
