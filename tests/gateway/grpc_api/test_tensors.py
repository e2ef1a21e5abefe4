"""Answers of the gRPC front door are written in the contract's dtype only when it holds every
value the model answered exactly; otherwise in the model's own dtype, as HTTP's JSON answers
carry them (a model that breaks its contract never gets its values cast without a word)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from gateway.app import create_app
from gateway.grpc_api.tensors import answer_dtype
from gateway.manifests import Config, load_config
from gateway.settings import Settings
from protos.services import TF_PREDICT
from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.dtypes import ENUM_NAMES
from tensorcodecs.tensor_proto import decode_tensor, encode_tensor
from tests.conftest import serve_app, write_app
from tests.tfserving_server import DEFAULT, FakeTFServing, Servable

NDArray = np.ndarray[Any, Any]


def spec(dtype: str) -> TensorSpec:
    return TensorSpec("y", lookup_dtype(dtype), (-1,))


@pytest.mark.parametrize(("values", "contract", "written"), [
    (np.array([0.7, 2.0**40]), "int32", "float64"),  # truncated and wrapped: the model's dtype
    (np.array([0.2, 0.0]), "bool", "float64"),
    (np.array([2.0, -3.0]), "int32", "int32"),  # integral and in range: exact
    (np.array([1, 2], dtype=np.int64), "int32", "int32"),  # numpy's default int, values that fit
    (np.array([2**31], dtype=np.int64), "int32", "int64"),
    (np.array([2**63], dtype=np.uint64), "int64", "uint64"),  # would wrap to -2**63
    (np.array([2**53 + 1], dtype=np.int64), "float64", "int64"),  # numpy's "safe" would round it
    (np.array([2**53], dtype=np.int64), "float64", "float64"),
    (np.array([0.1]), "float32", "float64"),  # float32 would round it
    (np.array([0.5, np.nan, np.inf]), "float32", "float32"),
    (np.array([1e300]), "float32", "float64"),
    (np.array([1.5], dtype=np.float32), "float64", "float64"),
    (np.array([1, 0], dtype=np.int32), "bool", "bool"),  # 0 and 1 only, as the runtime's rule
    (np.array([2, 0], dtype=np.int32), "bool", "int32"),
    (np.array([True, False]), "int32", "int32"),
    (np.array([1 + 2j]), "float64", "complex128"),
    (np.array([3 + 0j]), "float64", "complex128"),
    (np.array([3 + 0j], dtype=np.complex128), "complex64", "complex64"),
    (np.array(["a"], dtype=object), "string", "string"),
    (np.array(["a"]), "string", "string"),
    (np.array([1, 2], dtype=np.int32), "string", "int32"),
    (np.array([1.0], dtype=np.float32), "float32", "float32"),
])
def test_answer_dtype_keeps_every_value(values: NDArray, contract: str, written: str) -> None:
    row = answer_dtype(values, spec(contract))
    proto = encode_tensor(values, row)
    assert lookup_dtype(written).enum == proto.dtype, (values, contract)
    if proto.dtype != lookup_dtype("string").enum:
        back = decode_tensor(proto)
        np.testing.assert_array_equal(back.astype(values.dtype), values)


def test_no_contract_writes_the_arrays_dtype() -> None:
    assert answer_dtype(np.array([1.5]), None) is None


def liar() -> Servable:
    """A TF Serving model whose answers break its signature: float64 values for an int32 and a
    bool output, int64 values that fit its int32 output, float32 values for a float64 output."""
    def specs(**dtypes: str) -> dict[str, TensorSpec]:
        return {name: TensorSpec(name, lookup_dtype(dtype), (-1,)) for name, dtype in dtypes.items()}

    signature = Signature(DEFAULT, specs(x="float32"), specs(y="int32", flag="bool", count="int32", wide="float64"))

    def run(inputs: Mapping[str, NDArray]) -> dict[str, NDArray]:
        return {"y": np.array([0.7, 2.0**40]), "flag": np.array([0.2, 0.0]),
                "count": np.array([1, 2], dtype=np.int64), "wide": np.array([0.5, 1.5], dtype=np.float32)}

    return Servable({DEFAULT: (signature, run)})


# What each output must come back as, whatever the door: (dtype enum name, values).
LIAR_ANSWER = {"y": ("DT_DOUBLE", [0.7, 2.0**40]), "flag": ("DT_DOUBLE", [0.2, 0.0]),
               "count": ("DT_INT32", [1, 2]), "wide": ("DT_DOUBLE", [0.5, 1.5])}


@pytest.fixture
async def liar_backend() -> AsyncIterator[FakeTFServing]:
    server = FakeTFServing(loose_outputs=True, repository={"Liar": {1: liar()}})
    await server.start()
    yield server
    await server.stop()


def liar_config(directory: Path, backend: FakeTFServing) -> Config:
    """Model `liar` on the lying backend (its contract discovered from it) and `liar_app` over it."""
    (directory / "models").mkdir()
    (directory / "models" / "liar.yaml").write_text(
        f"kind: Model\nname: liar\nbackend:\n  protocol: tensorflow-serving\n  target: {backend.target}\n"
        "  model_name: Liar\n")
    write_app(directory, "liar_app", "liar")
    return load_config(directory)


def dtype_names(outputs: Mapping[str, TensorProto]) -> dict[str, tuple[str, list[Any]]]:
    return {name: (ENUM_NAMES[proto.dtype], decode_tensor(proto).tolist()) for name, proto in outputs.items()}


async def test_tf_predict_answers_what_the_model_answered(liar_backend: FakeTFServing, tmp_path: Path) -> None:
    settings = Settings()
    app = create_app(dataclasses.replace(settings, grpc_port=0), liar_config(tmp_path, liar_backend))
    x = encode_tensor(np.array([1.0], dtype=np.float32))
    async with serve_app(app, settings) as url, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
        predict = channel.unary_unary(TF_PREDICT.path, request_serializer=PredictRequest.SerializeToString,
                                      response_deserializer=PredictResponse.FromString)
        for name in ("liar_app", "liar"):
            request = PredictRequest(inputs={"x": x})
            request.model_spec.name = name
            answer = await predict(request, timeout=10)
            answered = dtype_names(answer.outputs)
            # The values are the model's either way; the model alone (no contract of its own to
            # check: forwarded unread) keeps its backend's dtypes, the application writes the
            # contract's where they hold the values exactly.
            assert {k: v for k, (_, v) in answered.items()} == {k: v for k, (_, v) in LIAR_ANSWER.items()}, name
            if name == "liar_app":
                assert answered == LIAR_ANSWER
        # The same values as the HTTP route's JSON answer.
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{url}/gateway/applications/liar_app", json={"x": [1.0]})
        assert response.status_code == 200, response.text
        assert orjson.loads(response.content) == {name: values for name, (_, values) in LIAR_ANSWER.items()}
