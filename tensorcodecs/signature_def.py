"""Contracts <-> TensorFlow SignatureDef messages (what GetModelMetadata carries)."""

from __future__ import annotations

from collections.abc import Mapping

from protos.tensorflow.meta_graph_pb2 import SignatureDef, TensorInfo
from tensorcodecs.contract import Signature, TensorSpec
from tensorcodecs.dtypes import dtype_from_enum

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def signature_to_def(signature: Signature) -> SignatureDef:
    """A SignatureDef describing `signature` (unknown dims as -1, any shape as unknown rank)."""
    definition = SignatureDef(method_name=PREDICT_METHOD)
    for specs, infos in ((signature.inputs, definition.inputs), (signature.outputs, definition.outputs)):
        for name, spec in specs.items():
            _fill_info(infos[name], spec)
    return definition


def signature_from_def(name: str, definition: SignatureDef) -> Signature:
    """The contract a SignatureDef describes; tensors are keyed by their signature names."""
    return Signature(name, _specs(definition.inputs), _specs(definition.outputs))


def _fill_info(info: TensorInfo, spec: TensorSpec) -> None:
    info.name = spec.name
    info.dtype = spec.dtype.enum  # type: ignore[assignment]
    if spec.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        info.tensor_shape.SetInParent()
        for size in spec.shape:
            info.tensor_shape.dim.add().size = size


def _specs(infos: Mapping[str, TensorInfo]) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for key, info in infos.items():
        shape = None
        if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
            shape = tuple(max(dim.size, -1) for dim in info.tensor_shape.dim)
        specs[key] = TensorSpec(key, dtype_from_enum(info.dtype), shape)
    return specs
