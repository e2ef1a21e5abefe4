"""`hydro_serving_grpc.serving.runtime.api_pb2`: PredictRequest, PredictResponse."""

from protos.hydrosphere.runtime_pb2 import PredictRequest, PredictResponse

__all__ = ["PredictRequest", "PredictResponse"]
