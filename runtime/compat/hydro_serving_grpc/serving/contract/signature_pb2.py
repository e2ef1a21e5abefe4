"""`hydro_serving_grpc.serving.contract.signature_pb2`: ModelSignature."""

from protos.hydrosphere.contract_pb2 import ModelSignature

__all__ = ["ModelSignature"]
