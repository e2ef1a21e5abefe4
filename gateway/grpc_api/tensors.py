"""TensorProto maps <-> the data plane's arrays, for the gRPC front door's services.

A request's map (`PredictRequest.inputs`, a Hydrosphere request converted to TensorProtos) is
checked against a contract as TF Serving's predict_util.cc checks a signature: every input
named, none extra, each of its dtype and of a shape the contract allows. A violation is
INVALID_ARGUMENT naming the input as a field path (`inputs["x"]: ...`). The elements the
shapes declare are counted against `max_elements` before any array is allocated. Answers are
written as TF Serving writes them: numeric tensors in `tensor_content`, strings in
`string_val`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

from gateway.backends import NDArray
from gateway.errors import ContractViolation
from gateway.settings import Settings
from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.contract import dims_text
from tensorcodecs.dtypes import dtype_from_enum, dtype_from_numpy
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor, shape_elements


def field_path(field: str, name: str) -> str:
    """A map entry as a field path: `inputs["x"]`."""
    return f'{field}["{name}"]'


def check_declared_elements(tensors: Mapping[str, TensorProto], settings: Settings) -> None:
    """INVALID_ARGUMENT when the shapes of one request declare more elements than
    `max_elements` (read from the shapes: nothing is decoded yet)."""
    count = sum(shape_elements(proto) for proto in tensors.values())
    if count > settings.max_elements:
        raise ContractViolation(f"the request holds {count} tensor elements; the limit is {settings.max_elements}")


def decode_tensors(tensors: Mapping[str, TensorProto], specs: Mapping[str, TensorSpec] | None,
                   settings: Settings, field: str = "inputs") -> dict[str, NDArray]:
    """The arrays of a request's map, checked against `specs` (None or empty: no contract,
    every tensor passes as sent) and the element limit; a violation names its entry."""
    check_declared_elements(tensors, settings)
    if specs:
        _check_names(tensors, specs, field)
    arrays: dict[str, NDArray] = {}
    for name, proto in tensors.items():
        spec = specs.get(name) if specs else None
        if spec is not None and proto.dtype != spec.dtype.enum:
            raise ContractViolation(f"{field_path(field, name)}: expects {spec.dtype.name} but "
                                    f"{_enum_text(proto.dtype)} is provided", field=name)
        try:
            array = decode_tensor(proto)
        except CodecError as error:
            raise ContractViolation(f"{field_path(field, name)}: {error.message}", field=name) from None
        if spec is not None and not spec.accepts_shape(array.shape):
            raise ContractViolation(f"{field_path(field, name)}: expects shape {spec.shape_text()}, got "
                                    f"{dims_text(array.shape)}", field=name)
        arrays[name] = array
    return arrays


def _check_names(tensors: Mapping[str, TensorProto], specs: Mapping[str, TensorSpec], field: str) -> None:
    """TF Serving's input checks, worded as it words them, with the field path."""
    expected = _set_text(specs)
    for name in tensors:
        if name not in specs:
            raise ContractViolation(f"{field_path(field, name)}: input tensor alias not found in signature: "
                                    f"{name}. Inputs expected to be in the set {expected}.", field=name)
    for name in specs:
        if name not in tensors:
            raise ContractViolation(f"{field_path(field, name)}: missing input. Inputs expected to be in "
                                    f"the set {expected}.", field=name)


def encode_tensors(arrays: Mapping[str, NDArray], into: MutableMapping[str, TensorProto],
                   specs: Mapping[str, TensorSpec] | None = None) -> None:
    """Write `arrays` into a message's tensor map (`PredictResponse.outputs`): numeric values in
    `tensor_content`, as TF Serving answers; a contract's dtype when `specs` names one."""
    for name, array in arrays.items():
        spec = specs.get(name) if specs else None
        try:
            fill_tensor(into[name], array, spec.dtype if spec is not None else None)
        except CodecError as error:
            raise CodecError(f"output {name!r}: {error.message}", field=name) from None


def filter_outputs(arrays: dict[str, NDArray], wanted: Iterable[str],
                   known: Iterable[str] | None = None) -> dict[str, NDArray]:
    """The outputs `wanted` (PredictRequest.output_filter; empty: all), in the order asked; a
    name neither answered nor in `known` (the signature's outputs) is INVALID_ARGUMENT in TF
    Serving's words."""
    names = list(wanted)
    if not names:
        return arrays
    allowed = set(arrays) | set(known or ())
    chosen: dict[str, NDArray] = {}
    for name in names:
        if name not in allowed:
            raise ContractViolation(f"output tensor alias not found in signature: {name} Outputs expected to "
                                    f"be in the set {_set_text(sorted(allowed))}.", field=name)
        if name in arrays:
            chosen[name] = arrays[name]
    return chosen


def dtype_text_of(array: NDArray) -> str:
    """The contract's name for an array's dtype (numpy's when the table has none)."""
    try:
        return dtype_from_numpy(array.dtype).name
    except CodecError:
        return str(array.dtype)


def _enum_text(number: int) -> str:
    try:
        return dtype_from_enum(number).name
    except CodecError:
        return f"dtype {number}"


def _set_text(names: Iterable[str]) -> str:
    return "{" + ",".join(names) + "}"
