"""How a shadow's answer compares with the live variant's, output by output (pure numpy).

Agreement is exact for integers, bools, strings and bytes; floats and complex values agree
within the shadow's `compare: {rtol, atol}` by `numpy.isclose`'s rule, the live answer as the
reference (|shadow - live| <= atol + rtol * |live|), NaN equal to NaN. An output the shadow
did not answer, of another shape or of another kind of dtype disagrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from gateway.manifests import CompareSpec
from gateway.manifests.contract_rules import DTYPE_KINDS

NDArray = np.ndarray
PREVIEW_VALUES = 16  # values of a tensor a disagreement log line shows (the rest is cut)


class OutputComparison(NamedTuple):
    """One output of a shadow's answer against the live one's."""

    output: str
    agreed: bool
    abs_difference: float | None  # max |shadow - live| of a numeric output of equal shape, else None
    reason: str  # why they disagree ("" when they agree)


def compare_outputs(live: Mapping[str, NDArray], shadow: Mapping[str, NDArray],
                    spec: CompareSpec) -> list[OutputComparison]:
    """Each output of the live answer compared with the shadow's (in the live answer's order;
    outputs only the shadow answered are not compared)."""
    return [compare_output(name, array, shadow.get(name), spec) for name, array in live.items()]


def compare_output(name: str, live: NDArray, shadow: NDArray | None, spec: CompareSpec) -> OutputComparison:
    """One output: `shadow` None when the shadow did not answer it."""
    if shadow is None:
        return OutputComparison(name, False, None, "the shadow did not answer it")
    live, shadow = np.asarray(live), np.asarray(shadow)
    live_kind, shadow_kind = _kind(live), _kind(shadow)
    if live_kind != shadow_kind:
        return OutputComparison(name, False, None, f"dtype {shadow.dtype} where the live answer has {live.dtype}")
    if live.shape != shadow.shape:
        return OutputComparison(name, False, None,
                                f"shape {list(shadow.shape)} where the live answer has {list(live.shape)}")
    if live_kind == "text":
        agreed = bool(np.array_equal(live, shadow))
        return OutputComparison(name, agreed, None, "" if agreed else "different values")
    difference = _max_abs_difference(live, shadow)
    if live_kind in ("float", "complex"):
        agreed = bool(np.isclose(shadow, live, rtol=spec.rtol, atol=spec.atol, equal_nan=True).all())
        reason = "" if agreed else f"beyond rtol {spec.rtol:g}, atol {spec.atol:g}"
    else:
        agreed = bool(np.array_equal(live, shadow))
        reason = "" if agreed else "different values"
    return OutputComparison(name, agreed, difference, reason)


def _kind(array: NDArray) -> str:
    return DTYPE_KINDS.get(array.dtype.kind, array.dtype.kind)


def _max_abs_difference(live: NDArray, shadow: NDArray) -> float:
    """max |shadow - live| (0 for empty tensors and for NaN against NaN; inf where only one is NaN)."""
    if live.size == 0:
        return 0.0
    if live.dtype.kind in "iub":  # exact in float64 only up to 2**53, but never wraps around
        difference = np.abs(shadow.astype(np.float64) - live.astype(np.float64))
    else:
        wide = np.complex128 if live.dtype.kind == "c" else np.float64
        with np.errstate(invalid="ignore", over="ignore"):
            difference = np.abs(shadow.astype(wide) - live.astype(wide))
        both_nan = np.isnan(live) & np.isnan(shadow)
        difference = np.where(both_nan, 0.0, np.where(np.isnan(difference), np.inf, difference))
    return float(np.max(difference))


def preview(array: NDArray) -> dict[str, Any]:
    """A tensor as a disagreement log line shows it: dtype, shape and its first values."""
    array = np.asarray(array)
    flat = array.reshape(-1)
    values = [_json_value(value) for value in flat[:PREVIEW_VALUES].tolist()]
    shown: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape), "values": values}
    if flat.size > PREVIEW_VALUES:
        shown["truncated"] = int(flat.size - PREVIEW_VALUES)  # values not shown
    return shown


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")[:256]
    if isinstance(value, str):
        return value[:256]
    if isinstance(value, complex):
        return [value.real, value.imag]
    return value
