"""Contracts <-> TensorFlow SignatureDef messages (what GetModelMetadata carries)."""

from __future__ import annotations

from collections.abc import Mapping

from protos.tensorflow.meta_graph_pb2 import SignatureDef, TensorInfo
from tensorcodecs.contract import PREDICT_METHOD, Signature, TensorSpec
from tensorcodecs.dtypes import dtype_from_enum
from tensorcodecs.errors import UnknownDTypeError

SIGNATURE_DEF = "signature_def"  # the GetModelMetadata field (and metadata key) of the SignatureDefMap
__all__ = ["CLASSIFY_METHOD", "PREDICT_METHOD", "REGRESS_METHOD", "SIGNATURE_DEF", "signature_from_def",
           "signature_to_def"]
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def signature_to_def(signature: Signature) -> SignatureDef:
    """A SignatureDef describing `signature` (unknown dims as -1, any shape as unknown rank), its
    method `signature.method`."""
    definition = SignatureDef(method_name=signature.method)
    for specs, infos in ((signature.inputs, definition.inputs), (signature.outputs, definition.outputs)):
        for name, spec in specs.items():
            _fill_info(infos[name], spec)
    return definition


def signature_from_def(name: str, definition: SignatureDef) -> Signature:
    """The contract a SignatureDef describes, tensors keyed by their signature names in name
    order: -1 for an unknown size, any shape for an unknown rank, a scalar for a TensorInfo
    without dims (as TF reads an empty TensorShapeProto). Tensors of dtypes the gateway cannot
    carry are left out. Its method is the definition's (Predict's when it names none)."""
    return Signature(name, _specs(definition.inputs), _specs(definition.outputs),
                     definition.method_name or PREDICT_METHOD)


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
    for name in sorted(infos):
        info = infos[name]
        try:
            dtype = dtype_from_enum(info.dtype)
        except UnknownDTypeError:
            continue
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        specs[name] = TensorSpec(name, dtype, shape)
    return specs
