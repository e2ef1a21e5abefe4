"""`hydro_serving_grpc.serving.contract.tensor_pb2`: Tensor, TensorShape, MapTensorData."""

from protos.hydrosphere.contract_pb2 import MapTensorData, Tensor, TensorShape

__all__ = ["MapTensorData", "Tensor", "TensorShape"]
