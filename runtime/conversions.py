"""Numbers of one dtype as another: the runtime's one rule for what a function returns (numpy and
hydrosphere3 styles) and for inputs sent with another dtype than the contract's (hydrosdk clients
send the dtype their values infer: python int -> int64, float -> double).

- integers -> integers: when every value is in the target's range;
- floats -> floats (complex -> complex): rounded to the target, as TF Serving's REST API rounds
  numbers to float32; a finite value that would become +-inf is an error; NaN and inf stay;
- across kinds (outputs only): bools and integers -> floats round the same way; integral floats
  -> integers by range; complex -> real when no imaginary part; -> bool only values 0 and 1.

Errors are ValueErrors whose text follows "output 'y' " or "input 'x' ".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorcodecs.dtypes import DType, fits_integer_dtype

NDArray = np.ndarray[Any, Any]

_GROUPS = {"b": "bool", "i": "int", "u": "int", "f": "float", "c": "complex"}


def same_kind(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether `convert` may turn an input of `source` into `target` (no int <-> float,
    no text <-> numbers, bools only as bools)."""
    group = _GROUPS.get(source.kind)
    return group is not None and group != "bool" and group == _GROUPS.get(target.kind)


def convert(array: NDArray, row: DType) -> NDArray:
    """`array` as the numeric dtype of `row` (`array` itself when it already is), or a
    ValueError saying which values do not fit."""
    target, source = row.numpy, array.dtype
    if source == target:
        return array
    group, want = _GROUPS.get(source.kind), _GROUPS[target.kind]
    if group is None:
        raise ValueError(f"has dtype {source}, contract says {row.name}")
    if group == "complex" and want != "complex":
        if np.any(array.imag):
            raise ValueError(f"has {source} values with an imaginary part, contract says {row.name}")
        array, group = array.real, "float"
    if want == "bool":
        if group != "bool" and np.any((array != 0) & (array != 1)):
            raise ValueError(f"has {source} values other than 0 and 1, contract says bool")
        return array.astype(target)
    if want == "int":
        if group == "float":
            _check_integral(array, row)
        elif group == "int" and not fits_integer_dtype(array, target):
            raise ValueError(f"has {source} values out of range for {row.name} (the contract's dtype)")
        return array.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(target)
    if group != "bool" and array.size and np.any(np.isfinite(array) & ~np.isfinite(converted)):
        raise ValueError(f"has {source} values that overflow {row.name} (the contract's dtype)")
    return converted


def _check_integral(array: NDArray, row: DType) -> None:
    """Floats for an integer dtype: whole numbers within its range (bounds as exact powers of two)."""
    info = np.iinfo(row.numpy)
    low = float(info.min)
    high = 2.0 ** (info.bits - 1) if info.min else 2.0**info.bits  # exclusive
    with np.errstate(invalid="ignore"):
        if not np.all(np.trunc(array) == array):  # NaN fails here, inf in the range check
            raise ValueError(f"has {array.dtype} values that are not integers, contract says {row.name}")
        if array.size and (array.min() < low or array.max() >= high):
            raise ValueError(f"has {array.dtype} values out of range for {row.name} (the contract's dtype)")
