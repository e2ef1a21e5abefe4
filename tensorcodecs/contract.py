"""Contracts: the names, dtypes and shapes a model accepts and returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tensorcodecs.dtypes import DType
from tensorcodecs.errors import CodecError

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: `shape` is None for any shape, () for a scalar, -1 for any size."""

    name: str
    dtype: DType
    shape: Shape | None
    profile: str | None = None

    def shape_text(self) -> str:
        """The shape as users write it in contracts."""
        return shape_text(self.shape)

    def accepts_shape(self, shape: Shape) -> bool:
        """Whether a concrete shape fits this spec."""
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want == -1 or want == got for want, got in zip(self.shape, shape, strict=True))


PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True, slots=True)
class Signature:
    """A named function with its inputs and outputs, in contract order."""

    name: str
    inputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    outputs: Mapping[str, TensorSpec] = field(default_factory=dict)
    # TF Serving's SignatureDef.method_name: which of Predict, Classify, Regress takes it.
    method: str = PREDICT_METHOD


def shape_text(shape: Shape | None) -> str:
    """A shape as contracts and the native API's messages write it: `[2, -1]`, `scalar` for (),
    `any` for None (TF Serving's messages have their own, `tfserving_json.tf_shape_text`)."""
    if shape is None:
        return "any"
    if shape == ():
        return "scalar"
    return dims_text(shape)


def dims_text(shape: Shape) -> str:
    """A shape as a list of sizes, as messages about a value's shape write it: `[2, 3]`, `[]`
    for a scalar."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def parse_shape(value: object) -> Shape | None:
    """Read a contract shape: `scalar`, a list of ints (-1 for any size) or None (any shape)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == "scalar":
            return ()
        raise CodecError(f"shape must be 'scalar' or a list of sizes, got {value!r}")
    if isinstance(value, list | tuple):
        dims: list[int] = []
        for dim in value:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < -1:
                raise CodecError(f"shape sizes must be integers >= -1, got {dim!r}")
            dims.append(dim)
        return tuple(dims)
    raise CodecError(f"shape must be 'scalar' or a list of sizes, got {value!r}")
