"""Hydrosphere 3.x contract tensors <-> TensorFlow TensorProto.

The two messages share field numbers for the dtype and every value field (Hydrosphere's
`binary_val` is TF's `tensor_content`, both field 4); only the shape differs: a flat
`dims` list in Hydrosphere, `dim { size }` messages in TF. So a tensor converts by moving
the shape and re-reading the remaining bytes as the other type.
"""

from __future__ import annotations

from protos.hydrosphere.contract_pb2 import DT_MAP, Tensor
from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs import CodecError


def to_tensor_proto(tensor: Tensor) -> TensorProto:
    """A Hydrosphere tensor as a TF TensorProto (an absent shape is a scalar)."""
    if tensor.dtype == DT_MAP or len(tensor.map_val):
        raise CodecError("DT_MAP tensors are not supported")
    dims = list(tensor.tensor_shape.dims)
    body = Tensor()
    body.CopyFrom(tensor)
    body.ClearField("tensor_shape")
    proto = TensorProto.FromString(body.SerializeToString())
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


def from_tensor_proto(proto: TensorProto) -> Tensor:
    """A TF TensorProto as a Hydrosphere tensor."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    body = TensorProto()
    body.CopyFrom(proto)
    for field in ("tensor_shape", "version_number", "float8_val"):
        body.ClearField(field)
    tensor = Tensor.FromString(body.SerializeToString())
    tensor.tensor_shape.dims.extend(dims)
    return tensor
