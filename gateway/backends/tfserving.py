"""A backend speaking TensorFlow Serving's PredictionService (TF Serving, the embedded runtime)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2

from gateway.backends.base import NDArray
from gateway.errors import BackendError, from_grpc_status
from gateway.manifests import ModelManifest
from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class TFServingBackend:
    """One model version behind a PredictionService on a pooled channel."""

    def __init__(self, channel: grpc.aio.Channel, model: ModelManifest) -> None:
        assert model.backend is not None
        self.target = model.backend.target
        self.model_name = model.backend.model_name
        self.version = model.version
        self.signature_name = model.backend.signature_name
        self.input_specs: Mapping[str, TensorSpec] = model.signature.inputs
        self._predict = channel.unary_unary(
            TF_PREDICT.path,
            request_serializer=PredictRequest.SerializeToString,
            response_deserializer=PredictResponse.FromString,
        )
        self._health = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    def build_request(self, inputs: Mapping[str, NDArray]) -> PredictRequest:
        """The PredictRequest for `inputs`, tensors in `tensor_content` form."""
        request = PredictRequest()
        spec = request.model_spec
        spec.name = self.model_name
        spec.version.value = self.version
        spec.signature_name = self.signature_name
        for name, array in inputs.items():
            input_spec = self.input_specs.get(name)
            fill_tensor(request.inputs[name], array, input_spec.dtype if input_spec else None)
        return request

    async def predict(self, inputs: Mapping[str, NDArray], timeout: float) -> dict[str, NDArray]:
        request = self.build_request(inputs)
        try:
            response: PredictResponse = await self._predict(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            raise from_grpc_status(error.code(), error.details(), self.target) from None
        try:
            return {name: decode_tensor(tensor) for name, tensor in response.outputs.items()}
        except CodecError as error:
            raise BackendError(f"backend {self.target} answered a malformed tensor: {error}") from None

    async def healthy(self, timeout: float) -> bool:
        try:
            answer = await self._health(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
