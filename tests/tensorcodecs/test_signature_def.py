"""Contracts <-> SignatureDef: the one converter, both ways, with the rules contract discovery uses."""

from __future__ import annotations

import pytest

from protos.tensorflow.meta_graph_pb2 import SignatureDef
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.dtypes import TABLE
from tensorcodecs.signature_def import PREDICT_METHOD, signature_from_def, signature_to_def

DT_RESOURCE, DT_VARIANT = 20, 21  # TF dtypes no contract can carry


def spec(name: str, dtype: str, shape: tuple[int, ...] | None) -> TensorSpec:
    return TensorSpec(name, lookup_dtype(dtype), shape)


@pytest.mark.parametrize("shape", [None, (), (-1,), (3,), (-1, 2, 0), (1, -1, -1, 4)])
@pytest.mark.parametrize("dtype", sorted({row.name for row in TABLE}))
def test_a_contract_round_trips(dtype: str, shape: tuple[int, ...] | None) -> None:
    signature = Signature("predict", {"x": spec("x", dtype, shape)}, {"y": spec("y", dtype, shape)})
    definition = signature_to_def(signature)
    assert definition.method_name == PREDICT_METHOD
    assert definition.inputs["x"].tensor_shape.unknown_rank is (shape is None)
    back = signature_from_def("predict", definition)
    if dtype == "bytes":  # TF has one string dtype: bytes and string are both DT_STRING
        assert back.inputs["x"] == spec("x", "string", shape)
    else:
        assert back == signature


def test_tensors_come_in_name_order_keyed_by_their_signature_names() -> None:
    definition = SignatureDef()
    for key in ("b", "a", "c"):
        info = definition.inputs[key]
        info.name = f"serving_{key}:0"  # the graph's tensor name is not the contract's
        info.dtype = 1  # type: ignore[assignment]
        info.tensor_shape.dim.add().size = -1
    signature = signature_from_def("serving_default", definition)
    assert list(signature.inputs) == ["a", "b", "c"]
    assert signature.inputs["a"] == spec("a", "float32", (-1,))
    assert signature.outputs == {}


def test_a_tensor_without_dims_is_a_scalar_and_unknown_dtypes_are_left_out() -> None:
    definition = SignatureDef()
    definition.inputs["scalar"].dtype = 3  # type: ignore[assignment]  # DT_INT32, no tensor_shape at all
    definition.inputs["handle"].dtype = DT_RESOURCE  # type: ignore[assignment]
    definition.outputs["state"].dtype = DT_VARIANT  # type: ignore[assignment]
    definition.outputs["y"].dtype = 7  # type: ignore[assignment]  # DT_STRING
    definition.outputs["y"].tensor_shape.unknown_rank = True
    signature = signature_from_def("s", definition)
    assert signature.inputs == {"scalar": spec("scalar", "int32", ())}
    assert signature.outputs == {"y": spec("y", "string", None)}
