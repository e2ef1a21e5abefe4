"""TensorProto maps <-> the data plane's arrays, for the gRPC front door's services.

A request's map (`PredictRequest.inputs`, a Hydrosphere request converted to TensorProtos) is
checked against a contract as TF Serving's predict_util.cc checks a signature: every input
named, none extra, each of its dtype and of a shape the contract allows. A violation is
INVALID_ARGUMENT naming the input as a field path (`inputs["x"]: ...`). The elements the
shapes declare are counted against `max_elements` before any array is allocated. Answers are
written as TF Serving writes them: in the typed fields (`float_val`, `int_val`, `string_val`, ...
predict_util's kAsProtoField); each output in its contract's dtype only when that holds every value exactly
(`answer_dtype`), else in the array's own, as the HTTP routes' JSON answers carry the values.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np

from gateway.backends import NDArray
from gateway.errors import ContractViolation
from gateway.settings import Settings
from protos.tensorflow.tensor_pb2 import TensorProto
from tensorcodecs import CodecError, TensorSpec
from tensorcodecs.contract import dims_text
from tensorcodecs.dtypes import DType, dtype_from_enum, dtype_from_numpy, fits_integer_dtype
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
    """Write `arrays` into a message's tensor map (`PredictResponse.outputs`) in the typed fields
    (`float_val`, `int_val`, ...), as TF Serving's Predict answers (predict_util's default,
    kAsProtoField); in the contract's dtype when `specs` names one that holds the values exactly
    (`answer_dtype`)."""
    for name, array in arrays.items():
        try:
            fill_tensor(into[name], array, answer_dtype(array, specs.get(name) if specs else None), typed=True)
        except CodecError as error:
            raise CodecError(f"output {name!r}: {error.message}", field=name) from None


def answer_dtype(array: NDArray, spec: TensorSpec | None) -> DType | None:
    """The dtype an output is written in: the contract's when it holds every value of `array`
    exactly (the same dtype, a cast that cannot change a value, or one that changes none of
    these), else None, the array's own: a model that breaks its contract is answered what it
    answered, as the HTTP routes' JSON answers it, never cast values it did not produce."""
    if spec is None:
        return None
    row, source = spec.dtype, array.dtype
    if source == row.numpy:
        return row
    if not row.is_numeric:
        return row if source.kind in "OSU" else None
    if source.kind not in "biufc" or (source.kind == "c" and row.numpy.kind != "c"):
        return None  # the codec writes complex values only as complex
    return row if _keeps_values(array, row.numpy) else None


def _keeps_values(array: NDArray, target: np.dtype[Any]) -> bool:
    """Whether `array` cast to the numeric `target` keeps every value."""
    source = array.dtype
    if np.can_cast(source, target, "safe") and not (
            source.kind in "iu" and target.kind in "fc" and source.itemsize * 8 > np.finfo(target).nmant + 1):
        return True  # numpy's "safe" takes int64 -> float64 as safe; it rounds beyond 2**53
    if source.kind in "biu" and target.kind in "iu":
        return fits_integer_dtype(array, target)
    # Floats or complex on one side: the values survive when the round trip gives them back.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns of the casts that change values: compared below
        back = array.astype(target).astype(source)
    return bool(np.array_equal(back, array, equal_nan=source.kind in "fc"))


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
