"""The binary path's casts against the gateway's JSON decoder (pure): an array sent raw holds
exactly what the same values sent as JSON decode to, and what that decoder refuses goes as JSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gateway.binary import BINARY_TYPE
from gateway.client.tensors import Contract, request_body
from tensorcodecs import CodecError, TensorSpec, lookup_dtype
from tensorcodecs.json_codec import decode_value

RNG = np.random.default_rng(3)
N = 4096


def _as_json(array: Any) -> Any:
    """The array as the client writes it in a JSON body, read back as the gateway reads JSON."""
    value = np.stack([array.real, array.imag], axis=-1).tolist() if array.dtype.kind == "c" else array.tolist()
    return json.loads(json.dumps(value, allow_nan=True))


@pytest.mark.parametrize(("dtype", "array"), [
    ("float32", RNG.normal(size=N) * 1e30),
    ("float32", np.arange(N, dtype=np.int64) * 1_000_003 + 16_777_217),  # integers rounded through doubles
    ("float32", np.array([np.nan, np.inf, -np.inf, 3.4e38] * (N // 4))),
    ("float16", RNG.normal(size=N).astype(np.float32) * 1000),
    ("float64", np.arange(N, dtype=np.int32)),
    ("int32", np.arange(N, dtype=np.int64) - N // 2),
    ("uint8", np.arange(N, dtype=np.int64) % 256),
    ("bool", RNG.normal(size=N) > 0),
    ("complex64", (RNG.normal(size=N) + 1j * RNG.normal(size=N)) * 1e20),
])
def test_what_goes_raw_is_what_json_decodes_to(dtype: str, array: Any) -> None:
    spec = TensorSpec("x", lookup_dtype(dtype), (-1,))
    body = request_body({"x": array}, Contract({"x": spec}, None), 1024)
    assert body.headers["content-type"] == BINARY_TYPE
    assert body.headers["x-tensor-dtype"] == dtype
    sent = np.frombuffer(body.content, spec.dtype.numpy.newbyteorder("<"))
    assert np.array_equal(sent, decode_value(_as_json(array), spec, "x"), equal_nan=True)


@pytest.mark.parametrize(("dtype", "array"), [
    ("int32", np.ones(N, bool)),  # a bool is not an integer
    ("float32", np.ones(N, bool)),
    ("int32", np.ones(N, np.float64)),  # nor is a float
    ("int32", np.full(N, 2**40)),  # beyond int32
    ("uint8", np.full(N, -1)),
    ("float32", np.full(N, 1e39)),  # finite, beyond float32
    ("complex64", np.full(N, 1e39 + 0j)),
    ("complex64", np.ones(N)),  # real numbers are not [real, imaginary] pairs
])
def test_what_json_refuses_goes_as_json(dtype: str, array: Any) -> None:
    spec = TensorSpec("x", lookup_dtype(dtype), (-1,))
    body = request_body({"x": array}, Contract({"x": spec}, None), 1024)
    assert body.headers["content-type"] == "application/json"  # the gateway's refusal then names the element
    with pytest.raises(CodecError):
        decode_value(_as_json(array), spec, "x")
