"""The two ways a model function can be written, and how each is called.

- hydrosphere: each argument is a TensorProto message; the function returns an object with
  `.outputs` mapping names to TensorProto messages (Hydrosphere's Python runtime convention).
- numpy: each argument is a numpy array; the function returns a dict of arrays (or one
  array when the contract has one output).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from protos.local_wire import ATTACH_MIN
from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.errors import OutputError
from tensorcodecs import CodecError, Signature, TensorSpec, dtype_from_enum
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor, tensor_header

NDArray = np.ndarray
# Modules whose use marks a function as written for TensorProto arguments.
HYDROSPHERE_MARKERS = frozenset({"hydro_serving_grpc", "tensorflow"})


@dataclass
class Attached:
    """Tensors travelling beside a call's messages (the local wire, protos.local_wire): the
    inputs whose values came that way (writable arrays the call owns) and, when not None, where
    the large numeric outputs go, the response then carrying their dtype and shape only."""

    inputs: Mapping[str, NDArray] = field(default_factory=dict)
    outputs: dict[str, NDArray] | None = None


class Style(Enum):
    """How arguments are passed and results returned."""

    HYDROSPHERE = "hydrosphere"
    NUMPY = "numpy"


def detect_style(source: Path) -> Style:
    """Hydrosphere style when the file imports hydro_serving_grpc or tensorflow, else numpy."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        if any(name.split(".")[0] in HYDROSPHERE_MARKERS for name in names):
            return Style.HYDROSPHERE
    return Style.NUMPY


def arguments(style: Style, inputs: Mapping[str, TensorProto], signature: Signature,
              attached: Mapping[str, NDArray]) -> dict[str, Any]:
    """The keyword arguments for the function, in the style's form."""
    if style is Style.HYDROSPHERE:
        return {name: _with_values(inputs[name], attached[name]) if name in attached else inputs[name]
                for name in signature.inputs}
    # Writable copies (or attached arrays, which the call owns): user code may change its
    # arguments in place.
    return {name: attached[name] if name in attached else np.array(decode_tensor(inputs[name]))
            for name in signature.inputs}


def with_attached_inputs(request: PredictRequest, attached: Mapping[str, NDArray]) -> PredictRequest:
    """A copy of `request` whose inputs carry their attached values in the message."""
    if not attached:
        return request
    whole = PredictRequest()
    whole.CopyFrom(request)
    for name, array in attached.items():
        whole.inputs[name].tensor_content = array.tobytes()
    return whole


def _with_values(header: TensorProto, array: NDArray) -> TensorProto:
    proto = TensorProto()
    proto.CopyFrom(header)
    proto.tensor_content = array.tobytes()
    return proto


def to_response(style: Style, result: Any, signature: Signature, model: str,
                detach: dict[str, NDArray] | None = None) -> PredictResponse:
    """The function's result as a PredictResponse, checked against the output contract; large
    numeric outputs go to `detach` instead of the message when it is given."""
    if style is Style.HYDROSPHERE:
        response = _response_from_messages(result, model)
        check_outputs(response, signature, model)
        return response
    return _response_from_arrays(result, signature, model, detach)  # checks each array as it goes


def _response_from_messages(result: Any, model: str) -> PredictResponse:
    if isinstance(result, PredictResponse):
        return result
    serialize = getattr(result, "SerializeToString", None)
    if serialize is not None and hasattr(result, "outputs"):
        # A PredictResponse of another protobuf package (the real hydro_serving_grpc):
        # the field numbers are the same, so the bytes are too.
        return PredictResponse.FromString(serialize())
    raise OutputError(f"model {model}: the function returned {type(result).__name__}, "
                      "expected a PredictResponse with .outputs")


def _response_from_arrays(result: Any, signature: Signature, model: str,
                          detach: dict[str, NDArray] | None) -> PredictResponse:
    if not isinstance(result, Mapping):
        if len(signature.outputs) != 1:
            raise OutputError(f"model {model}: the function returned {type(result).__name__}, expected "
                              f"a dict with the outputs {sorted(signature.outputs)}")
        result = {next(iter(signature.outputs)): result}
    response = PredictResponse()
    for name, spec in signature.outputs.items():
        if name not in result:
            raise OutputError(f"model {model}: output {name!r} is missing from the answer")
        array = _output_array(result[name], spec, model)
        _check_shape(name, array.shape, spec, model)
        if detach is not None and spec.dtype.is_numeric and array.nbytes >= ATTACH_MIN:
            values = tensor_header(response.outputs[name], array, spec.dtype)
            # The answer is sent after the function returned: copy what its code may still hold
            # (and change) unless the conversion already made a copy.
            original = result[name]
            if isinstance(original, np.ndarray) and np.may_share_memory(values, original):
                values = values.copy()
            detach[name] = values
        else:
            fill_tensor(response.outputs[name], array, spec.dtype)
    return response


def _output_array(value: Any, spec: TensorSpec, model: str) -> NDArray:
    target = spec.dtype
    if not target.is_numeric:
        array = np.asarray(value, dtype=object)
        if not all(isinstance(v, bytes | str) for v in array.ravel().tolist()):
            raise OutputError(f"model {model}: output {spec.name!r} must hold str or bytes, "
                              f"contract says {target.name}")
        return array
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        if array.dtype != target.numpy and not np.can_cast(array.dtype, target.numpy, casting="safe"):
            raise OutputError(f"model {model}: output {spec.name!r} has dtype {array.dtype}, "
                              f"contract says {target.name}")
        return array.astype(target.numpy, copy=False)
    try:
        return np.asarray(value, dtype=target.numpy)
    except (TypeError, ValueError, OverflowError) as error:
        raise OutputError(f"model {model}: output {spec.name!r} is not {target.name}: {error}") from None


def check_outputs(response: PredictResponse, signature: Signature, model: str) -> None:
    """Every contract output present, of the contract's dtype and shape."""
    for output, spec in signature.outputs.items():
        if output not in response.outputs:
            raise OutputError(f"model {model}: output {output!r} is missing from the answer")
        tensor = response.outputs[output]
        if tensor.dtype != spec.dtype.enum:
            raise OutputError(f"model {model}: output {output!r} has dtype "
                              f"{_dtype_name(tensor.dtype)}, contract says {spec.dtype.name}")
        try:
            shape = decode_tensor(tensor).shape
        except CodecError as error:
            raise OutputError(f"model {model}: output {output!r} is malformed: {error}") from None
        _check_shape(output, shape, spec, model)


def _check_shape(output: str, shape: tuple[int, ...], spec: TensorSpec, model: str) -> None:
    if not spec.accepts_shape(shape):
        raise OutputError(f"model {model}: output {output!r} has shape {list(shape)}, "
                          f"contract says {spec.shape_text()}")


def _dtype_name(number: int) -> str:
    try:
        return dtype_from_enum(number).name
    except CodecError:
        return f"DataType {number}"
