"""An answer checked against its model's output contract (an application's `validate_outputs:
true`): every output the contract names present, of its dtype, of a shape it allows. A backend
that breaks its contract is answered 502 `output_contract_violation`, never passed on."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.backends import NDArray
from gateway.errors import OutputContractViolation
from tensorcodecs import TensorSpec, UnknownDTypeError, dtype_from_numpy
from tensorcodecs.contract import dims_text


def check_outputs(outputs: Mapping[str, NDArray], specs: Mapping[str, TensorSpec], model: str) -> None:
    """OutputContractViolation naming `model` and the first output that breaks `specs`
    (outputs the contract does not name are allowed: they are dropped, not answered)."""
    for name, spec in specs.items():
        array = outputs.get(name)
        if array is None:
            raise OutputContractViolation(f"model {model} answered without output {name!r}", field=name)
        dtype = spec.dtype
        if (array.dtype != dtype.numpy) if dtype.is_numeric else (array.dtype.kind not in "OSU"):
            raise OutputContractViolation(f"model {model} answered output {name!r} as {_dtype_text(array)}; "
                                          f"its contract says {dtype.name}", field=name)
        if not spec.accepts_shape(array.shape):
            raise OutputContractViolation(f"model {model} answered output {name!r} of shape "
                                          f"{dims_text(array.shape)}; its contract says {spec.shape_text()}",
                                          field=name)


def _dtype_text(array: NDArray) -> str:
    """The contract's name for an array's dtype (numpy's when the table has none)."""
    try:
        return dtype_from_numpy(array.dtype).name
    except UnknownDTypeError:
        return str(array.dtype)
