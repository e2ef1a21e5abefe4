"""`hydro_serving_grpc.serving.contract.field_pb2`: ModelField."""

from protos.hydrosphere.contract_pb2 import ModelField

__all__ = ["ModelField"]
