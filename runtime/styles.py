"""The three ways a model function can be written, and how each is called.

- hydrosphere (Hydrosphere 2.x): each argument is a TensorProto message with its values in the
  typed field of its dtype (`int_val`, `double_val`, `string_val`, ... never `tensor_content`, a
  scalar has no dims), as Hydrosphere's gateway sent them, whatever wire brought the request; the
  function returns an object with `.outputs` mapping names to TensorProto messages (typed fields
  or `tensor_content`; a -1 size is taken from the number of values).
- hydrosphere3 (Hydrosphere 3.x): each argument is a numpy value as hydrosdk's
  `tensor_proto_to_np` gave it (an array of the contract's dtype and shape, a numpy scalar for a
  scalar input, `string` as `str` text, `bytes` kept as bytes where hydrosdk decoded every
  DT_STRING); the function returns a dict of numpy values, python values or 3.x
  `Tensor` messages.
- numpy: each argument is a numpy array (`string` inputs hold `str`, `bytes` inputs `bytes`); the
  function returns a dict of arrays (or one array when the contract has one output).

numpy and hydrosphere3 results are converted to the contract's dtypes by one rule
(`runtime.conversions`); outputs the contract does not name are dropped in every style.

Detection (`detect_style`): code importing the 3.x layout (`hydro_serving_grpc.serving...`) or
`hydrosdk` (built on it) is hydrosphere3; code importing `hydro_serving_grpc` otherwise, or
`tensorflow`, is hydrosphere; other code is numpy. `style:` in serving.yaml always wins.

Every style gets inputs checked against the contract (dtype and shape: INVALID_ARGUMENT; another
dtype of the same kind is converted when every value fits) and has what it returns checked
against the output contract (OutputError naming the output).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import Message

from protos.hydrosphere.contract_pb2 import Tensor
from protos.local_wire import ATTACH_MIN
from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.conversions import convert, same_kind
from runtime.errors import InputError, OutputError
from runtime.hydrosphere import to_tensor_proto
from tensorcodecs import CodecError, Signature, TensorSpec, dtype_from_enum
from tensorcodecs.dtypes import JsonKind
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor, fill_tensor, resolve_unknown_dim, tensor_header

NDArray = np.ndarray
# Modules whose use marks a function as written for TensorProto arguments (Hydrosphere 2.x).
HYDROSPHERE_MARKERS = frozenset({"hydro_serving_grpc", "tensorflow"})
# The package of hydro-serving-grpc 3.x's layout: its use marks a Hydrosphere 3.x function.
HYDROSPHERE3_PACKAGE = "hydro_serving_grpc.serving"
# Modules built on the 3.x layout: their use marks a Hydrosphere 3.x function too.
HYDROSPHERE3_MARKERS = frozenset({"hydrosdk"})


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
    HYDROSPHERE3 = "hydrosphere3"
    NUMPY = "numpy"


def detect_style(source: Path) -> Style:
    """hydrosphere3 when the file imports `hydro_serving_grpc.serving...` or `hydrosdk`;
    hydrosphere when it imports `hydro_serving_grpc` otherwise or `tensorflow`; numpy else."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    style = Style.NUMPY
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        if any(name == HYDROSPHERE3_PACKAGE or name.startswith(HYDROSPHERE3_PACKAGE + ".")
               or name.split(".")[0] in HYDROSPHERE3_MARKERS for name in names):
            return Style.HYDROSPHERE3
        if any(name.split(".")[0] in HYDROSPHERE_MARKERS for name in names):
            style = Style.HYDROSPHERE
    return style


# ---------------------------------------------------------------- arguments


def arguments(style: Style, inputs: Mapping[str, TensorProto], signature: Signature,
              attached: Mapping[str, NDArray]) -> dict[str, Any]:
    """The keyword arguments for the function, in the style's form; InputError when an input
    does not fit its contract."""
    value = _ARGUMENT[style]
    return {name: value(name, _input_array(name, inputs[name], spec, attached), spec)
            for name, spec in signature.inputs.items()}


def _input_array(name: str, proto: TensorProto, spec: TensorSpec, attached: Mapping[str, NDArray]) -> NDArray:
    """The input's values (a read-only view of the message's bytes, or the attached array),
    checked against the contract's dtype and shape; another dtype of the same kind is converted
    when every value fits (hydrosdk clients send the dtype their values infer)."""
    retype = proto.dtype != spec.dtype.enum
    if retype and not same_kind(_numpy_dtype(proto.dtype), spec.dtype.numpy):
        raise InputError(f"input {name!r} has dtype {_dtype_name(proto.dtype)}, contract says {spec.dtype.name}")
    try:
        array = attached[name] if name in attached else decode_tensor(proto)
    except CodecError as error:
        raise InputError(f"input {name!r} is malformed: {error}") from None
    if retype:
        try:
            array = convert(array, spec.dtype)
        except ValueError as error:
            raise InputError(f"input {name!r} {error}") from None
    if not _fits(array.shape, spec.shape):
        raise InputError(f"input {name!r} has shape {list(array.shape)}, contract says {spec.shape_text()}")
    return array


def _fits(shape: tuple[int, ...], want: tuple[int, ...] | None) -> bool:
    """TensorSpec.accepts_shape without a generator (it runs for every input of every call)."""
    if want is None:
        return True
    if len(shape) != len(want):
        return False
    for got, size in zip(shape, want, strict=True):  # noqa: SIM110 - a loop: all() of a generator is slower
        if size != got and size != -1:
            return False
    return True


def _numpy_value(name: str, array: NDArray, spec: TensorSpec) -> NDArray:
    """A writable array (user code may change its arguments in place): a copy of a read-only
    view of the message's bytes, else the array itself (attached, decoded from typed fields
    or converted: the call's own); `string` text as `str`."""
    if spec.dtype.json_kind is JsonKind.STRING:
        return _text(name, array)
    return array if array.flags.writeable else np.array(array)


def _typed_message(name: str, array: NDArray, spec: TensorSpec) -> TensorProto:
    """A 2.x argument: a TensorProto with the values in the dtype's typed field."""
    return encode_tensor(array, spec.dtype, typed=True)


def _text(name: str, array: NDArray) -> NDArray:
    """A `string` input's bytes as `str` (an object array); bytes that are not UTF-8 are the
    caller's mistake (binary data is declared `bytes`)."""
    texts = np.empty(array.shape, dtype=object)
    try:
        texts.reshape(-1)[:] = [value.decode("utf-8") for value in array.reshape(-1).tolist()]
    except UnicodeDecodeError as error:
        raise InputError(f"input {name!r} is declared string but holds bytes that are not UTF-8 "
                         f"({error.reason} at byte {error.start}); declare it bytes for binary data") from None
    return texts


def _hydrosdk_value(name: str, array: NDArray, spec: TensorSpec) -> Any:
    """The input as hydrosdk's `tensor_proto_to_np` made it: an array of the contract's dtype
    (`str` text as numpy unicode), or `.flatten()[0]` of it for a scalar."""
    if spec.dtype.json_kind is JsonKind.STRING:
        value: NDArray = np.array(_text(name, array).tolist(), dtype=str).reshape(array.shape)
    else:
        value = np.array(array)  # a writable copy, as hydrosdk's np.array(...) gave
    return value if value.ndim else value.flatten()[0]


_ARGUMENT: dict[Style, Callable[[str, NDArray, TensorSpec], Any]] = {
    Style.HYDROSPHERE: _typed_message, Style.HYDROSPHERE3: _hydrosdk_value, Style.NUMPY: _numpy_value}


def with_attached_inputs(request: PredictRequest, attached: Mapping[str, NDArray]) -> PredictRequest:
    """A copy of `request` whose inputs carry their attached values in the message."""
    if not attached:
        return request
    whole = PredictRequest()
    whole.CopyFrom(request)
    for name, array in attached.items():
        whole.inputs[name].tensor_content = array.tobytes()
    return whole


# ---------------------------------------------------------------- results


def to_response(style: Style, result: Any, signature: Signature, model: str,
                detach: dict[str, NDArray] | None = None) -> PredictResponse:
    """The function's result as a PredictResponse holding the contract's outputs (others are
    dropped), checked against the output contract; large numeric outputs go to `detach` instead
    of the message when it is given. The message is the runtime's own, never one the function
    may still hold: callers may change it."""
    if result is None:
        raise OutputError(f"model {model}: the function returned None, expected {_expected(style, signature)}")
    if style is Style.HYDROSPHERE:
        return _response_from_messages(result, signature, model)
    if style is Style.HYDROSPHERE3 and not isinstance(result, Mapping):
        raise OutputError(f"model {model}: the function returned {type(result).__name__}, "
                          f"expected {_expected(style, signature)}")
    return _response_from_arrays(result, signature, model, detach)  # checks each array


def _expected(style: Style, signature: Signature) -> str:
    if style is Style.HYDROSPHERE:
        return "a PredictResponse with .outputs"
    return f"a dict with the outputs {sorted(signature.outputs)}"


def _response_from_messages(result: Any, signature: Signature, model: str) -> PredictResponse:
    """A 2.x function's PredictResponse as a message of the contract's outputs, checked."""
    if isinstance(result, PredictResponse):
        # The function may keep (and reuse) its message: answer with a copy of what counts.
        response = PredictResponse()
        for name in signature.outputs:
            if name in result.outputs:
                response.outputs[name].CopyFrom(result.outputs[name])
    else:
        serialize = getattr(result, "SerializeToString", None)
        if serialize is None or not hasattr(result, "outputs"):
            raise OutputError(f"model {model}: the function returned {type(result).__name__}, "
                              "expected a PredictResponse with .outputs")
        # A PredictResponse of another protobuf package (the real hydro_serving_grpc): the
        # field numbers are the same, so the bytes are too; the parsed message is ours.
        response = PredictResponse.FromString(serialize())
        for name in [name for name in response.outputs if name not in signature.outputs]:
            del response.outputs[name]
    check_outputs(response, signature, model)
    return response


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
        if result[name] is None:
            raise OutputError(f"model {model}: output {name!r} is None, contract says {spec.dtype.name} "
                              f"of shape {spec.shape_text()}")
        array = _output_array(result[name], spec, model)
        if not _fits(array.shape, spec.shape):
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
    """An output value (numpy, python or a tensor message) as an array of the contract's dtype,
    by `runtime.conversions`' rule."""
    if isinstance(value, Message):
        value = _message_array(value, spec, model)
    if not spec.dtype.is_numeric:
        return _text_array(value, spec, model)
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged lists
        raise OutputError(f"model {model}: output {spec.name!r} is not {spec.dtype.name}: {error}") from None
    try:
        return convert(array, spec.dtype)
    except ValueError as error:
        raise OutputError(f"model {model}: output {spec.name!r} {error}") from None


def _text_array(value: Any, spec: TensorSpec, model: str) -> NDArray:
    array = np.asarray(value, dtype=object)
    if not all(isinstance(v, bytes | str) for v in array.ravel().tolist()):
        raise OutputError(f"model {model}: output {spec.name!r} must hold str or bytes, "
                          f"contract says {spec.dtype.name}")
    return array


def _message_array(message: Message, spec: TensorSpec, model: str) -> NDArray:
    """The values of a returned tensor message: a 3.x `Tensor` or a TF `TensorProto`, of this
    runtime's protos or of the real packages (the same field numbers, so the same bytes)."""
    name = message.DESCRIPTOR.full_name
    try:
        if name.endswith("contract.Tensor"):
            tensor = message if isinstance(message, Tensor) else Tensor.FromString(message.SerializeToString())
            proto = to_tensor_proto(tensor)
        elif name.endswith("TensorProto"):
            proto = TensorProto.FromString(message.SerializeToString())
        else:
            raise OutputError(f"model {model}: output {spec.name!r} is a {name} message, expected a Tensor")
        resolve_unknown_dim(proto)
        return decode_tensor(proto)
    except CodecError as error:
        raise OutputError(f"model {model}: output {spec.name!r} is malformed: {error}") from None


def check_outputs(response: PredictResponse, signature: Signature, model: str) -> None:
    """Every contract output present, of the contract's dtype and shape (a -1 size in a
    message's shape becomes the size its values give, in place: `response` is the runtime's)."""
    for output, spec in signature.outputs.items():
        if output not in response.outputs:
            raise OutputError(f"model {model}: output {output!r} is missing from the answer")
        tensor = response.outputs[output]
        if tensor.dtype != spec.dtype.enum:
            raise OutputError(f"model {model}: output {output!r} has dtype "
                              f"{_dtype_name(tensor.dtype)}, contract says {spec.dtype.name}")
        try:
            resolve_unknown_dim(tensor)
            shape = decode_tensor(tensor).shape
        except CodecError as error:
            raise OutputError(f"model {model}: output {output!r} is malformed: {error}") from None
        _check_shape(output, shape, spec, model)


def _check_shape(output: str, shape: tuple[int, ...], spec: TensorSpec, model: str) -> None:
    if not spec.accepts_shape(shape):
        raise OutputError(f"model {model}: output {output!r} has shape {list(shape)}, "
                          f"contract says {spec.shape_text()}")


def _numpy_dtype(number: int) -> np.dtype[Any]:
    """The numpy dtype of a DataType number (object for unknown numbers: of no kind)."""
    try:
        return dtype_from_enum(number).numpy
    except CodecError:
        return np.dtype(object)


def _dtype_name(number: int) -> str:
    try:
        return dtype_from_enum(number).name
    except CodecError:
        return f"DataType {number}"
